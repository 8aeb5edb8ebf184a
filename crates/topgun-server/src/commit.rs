//! The commit task: every client write goes through it.
//!
//! Connections hand their accepted ops to one task that applies them with
//! [`Store::apply_remote`] — all jobs waiting at that moment together, in
//! one durable transaction (group commit) — then, in commit order, updates
//! the Merkle trees, fans the changes out, and only then answers each job.
//! One task means the trees follow the store's commit order exactly, even
//! when two connections write the same key at once.
//!
//! The same task owns the live queries: it runs each new `QUERY_SUB`
//! (so no write slips between a query's first result and its updates),
//! applies every commit to them, re-runs those whose window ran short, and
//! sleeps until the next TTL expiry of a row they hold to send its LEAVE.

use crate::fanout::{Change, CloseReason, ConnId, Hub, Outbox, Outgoing, Refill, NO_CONN};
use crate::merkle_index::MerkleIndex;
use crate::query::{self, Prepared};
use crate::records;
use crate::store::{FeedRead, ServerStore};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use topgun_core::hlc::Clock;
use topgun_core::wire::{Codec, Message, QueryResp, ServerError as WireError, WireRecord};
use topgun_storage::{StorageError, StoreRecord};

/// Most records applied in one transaction; more waiting jobs go into the
/// next one.
const MAX_GROUP_RECORDS: usize = 8192;
/// Jobs that may wait for the commit task.
const QUEUE: usize = 1024;
/// Most changes read from a shared store's feed at once.
const FEED_PAGE: usize = 4096;

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
    /// subscriber but `origin`. Returns how many ops changed something;
    /// re-applied ops change nothing and are not errors.
    pub(crate) async fn commit(
        &self,
        origin: ConnId,
        ops: Vec<AcceptedOp>,
    ) -> Result<usize, CommitError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Task::Commit(Job { origin, ops, done }))
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Task>,
    store: Arc<dyn ServerStore>,
    merkle: Arc<MerkleIndex>,
    hub: Arc<Hub>,
    context: Context,
) {
    let mut pending: VecDeque<Task> = VecDeque::new();
    loop {
        let task = match pending.pop_front() {
            Some(task) => task,
            None => match hub.next_expiry() {
                None => match rx.recv().await {
                    Some(task) => task,
                    None => break,
                },
                Some(at) => {
                    let wait = at.saturating_sub(context.clock.now_millis());
                    tokio::select! {
                        task = rx.recv() => match task {
                            Some(task) => task,
                            None => break,
                        },
                        () = tokio::time::sleep(Duration::from_millis(wait)) => {
                            let refills = hub.expire(context.clock.now_millis());
                            refill(refills, &*store, &hub, &context).await;
                            continue;
                        }
                    }
                }
            },
        };
        match task {
            Task::Subscribe(job) => subscribe(*job, &*store, &hub, &context).await,
            Task::ReadFeed(job) => {
                let (next, refills) = read_feed(job.after, &*store, &merkle, &hub).await;
                let _ = job.done.send(next);
                refill(refills, &*store, &hub, &context).await;
            }
            Task::Commit(first) => {
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
                let refills = commit_group(group, &*store, &merkle, &hub).await;
                refill(refills, &*store, &hub, &context).await;
            }
        }
    }
    tracing::debug!("commit task stopped");
}

/// Runs a new live query, queues its `QUERY_RESP` and subscribes it.
async fn subscribe(job: Subscribe, store: &dyn ServerStore, hub: &Hub, context: &Context) {
    let map = job.query.map_name.clone();
    let query_id = job.query.query_id.clone();
    match job.query.run(store, context.clock.now_millis()).await {
        Ok((resp, sub)) => {
            send_query_resp(&context.codec, &job.outbox, resp);
            hub.subscribe(&job.outbox, &map, &query_id, sub);
        }
        Err(error) => {
            tracing::error!(%error, %map, "reading query results failed");
            job.outbox.send(Message::Error(WireError {
                code: 500,
                message: "reading the query results failed".to_owned(),
                details: None,
            }));
        }
    }
    let _ = job.done.send(());
}

/// Runs the live queries of `refills` again and sends what changed.
async fn refill(refills: Vec<Refill>, store: &dyn ServerStore, hub: &Hub, context: &Context) {
    let mut done = std::collections::HashSet::new();
    for r in refills {
        if !done.insert((r.conn, r.map.clone(), r.query_id.clone())) {
            continue;
        }
        let now = context.clock.now_millis();
        match query::scan(store, &r.map, &r.query, now).await {
            Ok(fresh) => hub.refill(&r, fresh),
            Err(error) => {
                tracing::error!(%error, map = %r.map, "refilling a live query failed");
            }
        }
    }
}

/// Queues a `QUERY_RESP`, dropping results from the end (and setting
/// `hasMore`) until it fits in a frame.
fn send_query_resp(codec: &Codec, outbox: &Outbox, mut resp: QueryResp) {
    loop {
        match codec.encode(&Message::QueryResp(resp.clone())) {
            Ok(bytes) => return outbox.push(Outgoing::Bytes(bytes)),
            Err(error) if resp.results.is_empty() => {
                tracing::error!(%error, "QUERY_RESP cannot be encoded");
                return outbox.send(Message::Error(WireError {
                    code: 500,
                    message: "query results cannot be encoded".to_owned(),
                    details: None,
                }));
            }
            Err(_) => {
                resp.results.truncate(resp.results.len() / 2);
                resp.has_more = Some(true);
            }
        }
    }
}

/// Applies a group of jobs, fans their changes out and answers them;
/// returns the live queries to run again.
async fn commit_group(
    group: Vec<Job>,
    store: &dyn ServerStore,
    merkle: &MerkleIndex,
    hub: &Hub,
) -> Vec<Refill> {
    let input: Vec<StoreRecord> = group
        .iter()
        .flat_map(|job| job.ops.iter())
        .map(|op| records::to_store(&op.map_name, &op.key, &op.record))
        .collect();
    let applied = match store.merge(input).await {
        Ok(applied) => applied,
        Err(error) => {
            tracing::error!(%error, jobs = group.len(), "applying a batch failed");
            let error = CommitError::Storage(Arc::new(error));
            for job in group {
                let _ = job.done.send(Err(error.clone()));
            }
            return Vec::new();
        }
    };
    // One flag per op, in input order.
    let mut applied = applied.into_iter();
    let mut refills = Vec::new();
    for job in group {
        let mut changes = Vec::new();
        for op in job.ops {
            if applied.next() != Some(true) {
                continue;
            }
            merkle.update(&op.map_name, &op.key, &op.record.timestamp);
            changes.push(Change {
                map_name: op.map_name,
                key: op.key,
                record: op.record,
            });
        }
        refills.extend(hub.publish(job.origin, &changes));
        let _ = job.done.send(Ok(changes.len()));
    }
    refills
}

/// Applies what other nodes wrote after `after` (see
/// [`Committer::read_feed`]); returns the next position and the live
/// queries to run again.
async fn read_feed(
    after: u64,
    store: &dyn ServerStore,
    merkle: &MerkleIndex,
    hub: &Hub,
) -> (Result<u64, CommitError>, Vec<Refill>) {
    let storage = |error| CommitError::Storage(Arc::new(error));
    let Some(feed) = store.feed() else {
        return (Ok(after), Vec::new());
    };
    match feed.read(after, FEED_PAGE).await {
        Err(error) => (Err(storage(error)), Vec::new()),
        Ok(FeedRead::Behind { position }) => {
            tracing::warn!(
                after,
                position,
                "behind the change feed's retention; rebuilding"
            );
            match MerkleIndex::load(store).await {
                Ok(fresh) => merkle.replace(fresh),
                Err(error) => return (Err(storage(error)), Vec::new()),
            }
            hub.close_subscribers(CloseReason::Resync);
            (Ok(position), Vec::new())
        }
        Ok(FeedRead::Changes { records, own, next }) => {
            // This node's own commits are in the tree already, unless
            // their confirmation was lost (the connection dropped during
            // COMMIT): then their records are read and are new here too.
            let unconfirmed: Vec<(String, String)> = own
                .into_iter()
                .filter(|(map, stamp)| !merkle.holds(map, &stamp.key, &stamp.timestamp))
                .map(|(map, stamp)| (map, stamp.key))
                .collect();
            let mut records = records;
            match read_records(store, unconfirmed).await {
                Ok(mine) => records.extend(mine),
                Err(error) => return (Err(storage(error)), Vec::new()),
            }
            let mut changes = Vec::with_capacity(records.len());
            for record in records {
                if merkle.holds(&record.map_name, &record.key, &record.timestamp) {
                    continue;
                }
                merkle.update(&record.map_name, &record.key, &record.timestamp);
                match records::to_wire(&record) {
                    Ok(wire) => changes.push(Change {
                        map_name: record.map_name,
                        key: record.key,
                        record: wire,
                    }),
                    Err(error) => tracing::error!(%error, "not fanning out an undecodable record"),
                }
            }
            (Ok(next), hub.publish(NO_CONN, &changes))
        }
    }
}

/// The stored records of `keys` (map, key), those that exist.
async fn read_records(
    store: &dyn ServerStore,
    mut keys: Vec<(String, String)>,
) -> Result<Vec<StoreRecord>, StorageError> {
    keys.sort();
    let mut out = Vec::new();
    for group in keys.chunk_by(|a, b| a.0 == b.0) {
        let map = &group[0].0;
        let names: Vec<String> = group.iter().map(|(_, key)| key.clone()).collect();
        out.extend(store.get_many(map, &names).await?.into_iter().flatten());
    }
    Ok(out)
}
