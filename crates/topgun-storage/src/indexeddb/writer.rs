//! Group commit: writes that arrive while a transaction is running wait
//! and go together into the next one, as `RedbStore` groups commits.
//!
//! One task (spawned on the browser's event loop) drains the queue; each
//! group is one read-write transaction. A write that fails inside a group
//! is answered with its error and the rest of the group is retried in a
//! fresh transaction without it, so one bad write never takes another
//! with it and none is half applied.
//!
//! A small group of checked local writes (keys the client has not read,
//! most often new ones) is first tried without reading its keys
//! ([`WriteTxn::begin_unread`]): it then waits for nothing before writing.
//! If a key had a record after all, that transaction fails, stores
//! nothing, and the group is written again with reads; the next few
//! groups read first.

use super::completion::Completion;
use super::delta;
use super::js::JsFailure;
use super::ops::{WriteOp, WriteOutcome};
use super::txn::{CommitFailure, WriteScope, WriteTxn};
use crate::error::StorageError;
use idb::Database;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tokio::sync::oneshot;

/// Writes per transaction at most: a `putMany` of 10,000 is one
/// transaction, as a bulk put in raw IndexedDB is (each further group
/// would wait for the last one's commit).
const MAX_GROUP: usize = 16384;
/// Groups of at most this many checked local writes are tried unread.
const UNREAD_MAX: usize = 16;
/// After a group tried unread failed, this many eligible groups read first.
const READ_AFTER_MISS: u32 = 16;
/// Deltas a connection adds before it folds them all into the base.
const FOLD_EVERY: u32 = 256;

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StorageError>>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    draining: bool,
}

/// The write queue of one database connection.
pub(crate) struct Writer {
    database: Database,
    /// What its write transactions are opened on.
    scope: WriteScope,
    /// What tells when one has completed.
    completion: Completion,
    queue: RefCell<Queue>,
    /// This connection's number in the keys of its deltas (random, so
    /// that connections in other tabs use others).
    id: f64,
    /// The number of the next delta this connection adds.
    next_delta: Cell<u64>,
    /// Transactions committed since this connection last folded deltas.
    unfolded: Cell<u32>,
    /// Eligible groups still to write with reads after a miss.
    read_first: Cell<u32>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("database", &self.database.name())
            .field("queued", &self.queue.borrow().jobs.len())
            .finish()
    }
}

impl Writer {
    /// The writer of `database`; `handle` is the same connection as a JS
    /// value.
    pub(crate) fn new(database: Database, handle: wasm_bindgen::JsValue) -> Rc<Self> {
        Rc::new(Self {
            database,
            scope: WriteScope::new(handle),
            completion: Completion::default(),
            queue: RefCell::default(),
            id: (js_sys::Math::random() * 2f64.powi(53)).floor(),
            next_delta: Cell::new(0),
            unfolded: Cell::new(0),
            read_first: Cell::new(0),
        })
    }

    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// Queues `op` and waits until its transaction has committed.
    pub(crate) async fn submit(self: &Rc<Self>, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.borrow_mut();
            queue.jobs.push(Job { op, reply });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            wasm_bindgen_futures::spawn_local(Rc::clone(self).drain());
        }
        answer.await.map_err(|_| StorageError::Closed)?
    }

    async fn drain(self: Rc<Self>) {
        loop {
            let group: Vec<Job> = {
                let mut queue = self.queue.borrow_mut();
                if queue.jobs.is_empty() {
                    queue.draining = false;
                    return;
                }
                let take = queue.jobs.len().min(MAX_GROUP);
                queue.jobs.drain(..take).collect()
            };
            self.commit(group).await;
            if self.unfolded.get() >= FOLD_EVERY {
                self.unfolded.set(0);
                // A fold that fails leaves the deltas where they are, still
                // counted by every read; a later fold takes them.
                let _ = delta::fold(&self.database).await;
            }
        }
    }

    /// Whether `group` is tried without reading its keys first.
    fn try_unread(&self, group: &[Job]) -> bool {
        let mut writes = 0;
        for job in group {
            writes += match &job.op {
                WriteOp::LocalChecked(_) => 1,
                WriteOp::LocalCheckedMany(many) => many.len(),
                _ => return false,
            };
        }
        let eligible = writes <= UNREAD_MAX;
        if !eligible {
            return false;
        }
        match self.read_first.get() {
            0 => true,
            n => {
                self.read_first.set(n - 1);
                false
            }
        }
    }

    /// Commits `group` in one transaction, answering every job.
    async fn commit(&self, mut group: Vec<Job>) {
        let mut unread = self.try_unread(&group);
        while !group.is_empty() {
            match self.try_commit(&group, unread).await {
                // Nothing of it was stored: the group is written with reads.
                Err(Failure::Job(..) | Failure::All(_)) if unread => {
                    unread = false;
                    self.read_first.set(READ_AFTER_MISS);
                }
                Ok(outcomes) => {
                    self.unfolded.set(self.unfolded.get() + 1);
                    for (job, outcome) in group.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                    return;
                }
                Err(Failure::Job(index, error)) => {
                    let job = group.remove(index);
                    let _ = job.reply.send(Err(error));
                }
                Err(Failure::All(error) | Failure::Stored(error)) => {
                    for job in group {
                        let _ = job.reply.send(Err(replicate(&error)));
                    }
                    return;
                }
            }
        }
    }

    async fn try_commit(&self, group: &[Job], unread: bool) -> Result<Vec<WriteOutcome>, Failure> {
        // Every record the group writes by key is read in one go (or, with
        // `unread`, taken to be absent).
        let slots = group.iter().flat_map(|job| job.op.keys());
        let mut txn = if unread {
            WriteTxn::begin_unread(&self.scope, slots)
        } else {
            WriteTxn::begin(&self.scope, slots).await
        }
        .map_err(Failure::All)?;
        let mut applied = Vec::with_capacity(group.len());
        for (index, job) in group.iter().enumerate() {
            match job.op.apply(&mut txn).await {
                Ok(done) => applied.push(done),
                Err(error) => {
                    txn.abort();
                    return Err(Failure::Job(index, error));
                }
            }
        }
        let n = self.next_delta.get();
        self.next_delta.set(n + 1);
        let entries = txn
            .commit(&self.completion, &delta::delta_key(self.id, n))
            .map_err(Failure::All)?
            .done()
            .await
            .map_err(|failure| match failure {
                CommitFailure::NotStored(error) => Failure::All(error),
                CommitFailure::Stored(error) => Failure::Stored(error),
            })?;
        applied
            .into_iter()
            .map(|done| done.resolve(&entries))
            .collect::<Result<_, _>>()
            .map_err(Failure::Stored)
    }
}

/// Why a group was not answered.
enum Failure {
    /// Job `index` failed; the others can be retried without it.
    Job(usize, StorageError),
    /// The transaction failed: every job gets the error.
    All(StorageError),
    /// The transaction committed but its answers could not be made: every
    /// job gets the error (and it is not tried again).
    Stored(StorageError),
}

/// A copy of a transaction's error for each write of its group (the
/// JS exception's name, `QuotaExceededError` say, included).
pub(crate) fn replicate(error: &StorageError) -> StorageError {
    let failure = match error {
        StorageError::Backend { source, .. } | StorageError::Full { source, .. } => {
            source.downcast_ref::<JsFailure>().cloned()
        }
        _ => None,
    };
    let failure = failure.unwrap_or_else(|| JsFailure {
        name: "Error".to_owned(),
        message: error.to_string(),
    });
    let during = match error {
        StorageError::Backend { during, .. } => during,
        _ => "committing",
    };
    failure.into_error(during)
}
