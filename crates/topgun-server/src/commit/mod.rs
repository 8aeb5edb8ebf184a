//! The commit task: every client write goes through it.
//!
//! Connections hand their accepted ops to one task that merges them into
//! the store ([`ServerStore::merge_lanes`]) — all jobs waiting at that
//! moment together, in one durable transaction per lane of the store
//! (group commit) — then updates the Merkle trees, fans the changes out,
//! and only then answers each job.
//! Up to [`flight::MERGES_PER_LANE`] merges per lane of the store run at
//! once, on disjoint keys,
//! and land in the order they started ([`flight`]), so the trees and
//! subscribers see each key's writes in commit order even when two
//! connections write the same key at once.
//!
//! The same task owns the live queries: it runs each new `QUERY_SUB`
//! (so no write slips between a query's first result and its updates),
//! applies every commit to them, re-runs those whose window ran short, and
//! sleeps until the next TTL expiry of a row they hold to send its LEAVE.
//! It also applies a shared store's change feed ([`feed`]). Each of these
//! waits until the merges in flight have landed.

mod feed;
mod flight;
mod queries;

use crate::fanout::{ConnId, Hub, Outbox};
use crate::merkle_index::MerkleIndex;
use crate::query::Prepared;
use crate::store::ServerStore;
use flight::{Flight, MERGES_PER_LANE};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use topgun_core::hlc::Clock;
use topgun_core::wire::{Codec, WireRecord};
use topgun_storage::StorageError;

/// Most records applied in one transaction; more waiting jobs go into the
/// next one.
const MAX_GROUP_RECORDS: usize = 2048;
/// Jobs that may wait for the commit task.
const QUEUE: usize = 1024;
/// Most commits read from a shared store's feed at once (each has at most
/// `MAX_GROUP_RECORDS` records when this server wrote it).
const FEED_PAGE: usize = 64;

/// One op that passed every check, ready to apply.
#[derive(Debug)]
pub(crate) struct AcceptedOp {
    /// The map written.
    pub(crate) map_name: String,
    /// The key written.
    pub(crate) key: String,
    /// The client's record, timestamp untouched.
    pub(crate) record: WireRecord,
}

/// Why a job was not applied: the store failed, or the server is stopping.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CommitError {
    #[error("storage failed: {0}")]
    Storage(Arc<StorageError>),
    #[error("the server is shutting down")]
    Stopped,
}

struct Job {
    origin: ConnId,
    ops: Vec<AcceptedOp>,
    done: oneshot::Sender<Result<usize, CommitError>>,
}

/// A live query to start: run it, send its `QUERY_RESP`, subscribe it.
#[derive(Debug)]
struct Subscribe {
    outbox: Outbox,
    query: Prepared,
    done: oneshot::Sender<()>,
}

/// Read the shared store's change feed after `after`, apply what other
/// nodes wrote, answer the next position.
#[derive(Debug)]
struct ReadFeed {
    after: u64,
    done: oneshot::Sender<Result<u64, CommitError>>,
}

/// What the commit task is asked to do.
#[derive(Debug)]
enum Task {
    Commit(Job),
    Subscribe(Box<Subscribe>),
    ReadFeed(ReadFeed),
}

/// What the commit task needs besides the store and the hub.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The server's wall clock (for TTLs).
    pub(crate) clock: Arc<dyn Clock>,
    /// The frame codec (to fit a `QUERY_RESP` into a frame).
    pub(crate) codec: Codec,
}

/// The handle connections commit through.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    jobs: mpsc::Sender<Task>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("origin", &self.origin)
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl Committer {
    /// Starts the commit task. It ends once every `Committer` is dropped
    /// and the jobs already queued are done.
    pub(crate) fn spawn(
        store: Arc<dyn ServerStore>,
        merkle: Arc<MerkleIndex>,
        hub: Arc<Hub>,
        context: Context,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(rx, store, merkle, hub, context));
        (Self { jobs }, task)
    }

    /// Starts the live query `query` for `outbox`'s connection: runs it,
    /// queues its `QUERY_RESP` (or an `ERROR 500` if the store fails) and
    /// subscribes it, after every write committed before. Returns once
    /// that is done.
    ///
    /// # Errors
    /// [`CommitError::Stopped`] if the server is stopping.
    pub(crate) async fn subscribe(
        &self,
        outbox: Outbox,
        query: Prepared,
    ) -> Result<(), CommitError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Task::Subscribe(Box::new(Subscribe {
                outbox,
                query,
                done,
            })))
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)
    }

    /// Reads the shared store's change feed after position `after` and
    /// applies what this node does not hold yet (other nodes' writes, and
    /// its own whose commit it could not confirm) to the Merkle trees, the
    /// subscribers
    /// and the live queries — in the commit task, so that they interleave
    /// with this node's commits in store order. Returns the position to
    /// read from next (`after` when nothing was new). A node that fell
    /// behind the feed's retention rebuilds its trees from the store and
    /// closes its subscribed connections (1012), which sync again.
    ///
    /// # Errors
    /// [`CommitError::Storage`] if the store fails (try again later),
    /// [`CommitError::Stopped`] if the server is stopping.
    pub(crate) async fn read_feed(&self, after: u64) -> Result<u64, CommitError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Task::ReadFeed(ReadFeed { after, done }))
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }

    /// Applies `ops` durably (each replaces the stored record only if its
    /// timestamp is strictly greater) and fans the changes out to every
    /// subscriber but `origin`. Resolves to how many ops changed something
    /// (re-applied ops change nothing and are not errors).
    ///
    /// Returns once the commit task has the job; await the returned
    /// [`Commit`] for its outcome. Jobs submitted one after the other are
    /// applied in that order where they share keys.
    ///
    /// # Errors
    /// [`CommitError::Stopped`] if the server is stopping.
    pub(crate) async fn submit(
        &self,
        origin: ConnId,
        ops: Vec<AcceptedOp>,
    ) -> Result<Commit, CommitError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Task::Commit(Job { origin, ops, done }))
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(Commit(answer))
    }
}

/// A submitted job's outcome, to await.
#[derive(Debug)]
pub(crate) struct Commit(oneshot::Receiver<Result<usize, CommitError>>);

impl Commit {
    /// How many ops changed something, once the job is durable.
    ///
    /// # Errors
    /// [`CommitError::Storage`] if the store failed (in a store of several
    /// lanes, what of the job a lane committed anyway has reached the
    /// trees and subscribers), [`CommitError::Stopped`] if the server
    /// stopped first.
    pub(crate) async fn outcome(self) -> Result<usize, CommitError> {
        self.0.await.map_err(|_| CommitError::Stopped)?
    }
}

/// What the commit task does next.
enum Next {
    Task(Task),
    Landed(flight::Landed),
    Expire,
    /// Every `Committer` is gone.
    Done,
}

async fn run(
    mut rx: mpsc::Receiver<Task>,
    store: Arc<dyn ServerStore>,
    merkle: Arc<MerkleIndex>,
    hub: Arc<Hub>,
    context: Context,
) {
    let mut pending: VecDeque<Task> = VecDeque::new();
    let mut flight = Flight::default();
    let max_in_flight = MERGES_PER_LANE * store.lanes().max(1);
    loop {
        let next = match pending.pop_front() {
            Some(task) => Next::Task(task),
            None => {
                let room = flight.len() < max_in_flight;
                let busy = !flight.is_empty();
                // Expiries wait for the merges in flight to land.
                let expiry = hub.next_expiry().filter(|_| !busy);
                let wait = expiry.map_or(0, |at| at.saturating_sub(context.clock.now_millis()));
                tokio::select! {
                    biased;
                    landed = flight.land(), if busy => match landed {
                        Some(landed) => Next::Landed(landed),
                        None => continue,
                    },
                    task = rx.recv(), if room => task.map_or(Next::Done, Next::Task),
                    () = tokio::time::sleep(Duration::from_millis(wait)), if expiry.is_some() => Next::Expire,
                }
            }
        };
        match next {
            Next::Done => break,
            Next::Landed(landed) => finish(landed, &*store, &merkle, &hub, &context).await,
            Next::Expire => {
                let refills = hub.expire(context.clock.now_millis());
                queries::refill(refills, &*store, &hub, &context).await;
            }
            Next::Task(Task::Commit(first)) => {
                let mut group = vec![first];
                let mut records = group[0].ops.len();
                while records < MAX_GROUP_RECORDS {
                    match rx.try_recv() {
                        Ok(Task::Commit(job)) => {
                            records += job.ops.len();
                            group.push(job);
                        }
                        Ok(other) => {
                            pending.push_back(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let keys = flight::Keys::of(&group);
                while flight.overlaps(&keys) {
                    land_one(&mut flight, &*store, &merkle, &hub, &context).await;
                }
                flight.start(group, keys, store.clone());
            }
            Next::Task(Task::Subscribe(job)) => {
                land_all(&mut flight, &*store, &merkle, &hub, &context).await;
                queries::subscribe(*job, &*store, &hub, &context).await;
            }
            Next::Task(Task::ReadFeed(job)) => {
                land_all(&mut flight, &*store, &merkle, &hub, &context).await;
                let (next, refills) = feed::read_feed(job.after, &store, &merkle, &hub).await;
                let _ = job.done.send(next);
                queries::refill(refills, &*store, &hub, &context).await;
            }
        }
    }
    land_all(&mut flight, &*store, &merkle, &hub, &context).await;
    tracing::debug!("commit task stopped");
}

/// Waits for every merge in flight and finishes each, oldest first.
async fn land_all(
    flight: &mut Flight,
    store: &dyn ServerStore,
    merkle: &MerkleIndex,
    hub: &Hub,
    context: &Context,
) {
    while !flight.is_empty() {
        land_one(flight, store, merkle, hub, context).await;
    }
}

/// Waits for the oldest merge in flight and finishes it.
async fn land_one(
    flight: &mut Flight,
    store: &dyn ServerStore,
    merkle: &MerkleIndex,
    hub: &Hub,
    context: &Context,
) {
    if let Some(landed) = flight.land().await {
        finish(landed, store, merkle, hub, context).await;
    }
}

/// Finishes a landed merge: trees, fan-out, answers, live queries.
async fn finish(
    landed: flight::Landed,
    store: &dyn ServerStore,
    merkle: &MerkleIndex,
    hub: &Hub,
    context: &Context,
) {
    let refills = landed.finish(merkle, hub);
    queries::refill(refills, store, hub, context).await;
}
