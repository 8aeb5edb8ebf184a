//! The commit task: every client write goes through it.
//!
//! Connections hand their accepted ops to one task that applies them with
//! [`Store::apply_remote`] — all jobs waiting at that moment together, in
//! one durable transaction (group commit) — then, in commit order, updates
//! the Merkle trees, fans the changes out, and only then answers each job.
//! One task means the trees follow the store's commit order exactly, even
//! when two connections write the same key at once.

use crate::fanout::{Change, ConnId, Hub};
use crate::merkle_index::MerkleIndex;
use crate::records;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use topgun_core::wire::WireRecord;
use topgun_storage::{StorageError, Store, StoreRecord};

/// Most records applied in one transaction; more waiting jobs go into the
/// next one.
const MAX_GROUP_RECORDS: usize = 8192;
/// Jobs that may wait for the commit task.
const QUEUE: usize = 1024;

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

/// The handle connections commit through.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
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
        store: Arc<dyn Store>,
        merkle: Arc<MerkleIndex>,
        hub: Arc<Hub>,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(rx, store, merkle, hub));
        (Self { jobs }, task)
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
            .send(Job { origin, ops, done })
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    merkle: Arc<MerkleIndex>,
    hub: Arc<Hub>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut records = group[0].ops.len();
        while records < MAX_GROUP_RECORDS {
            match rx.try_recv() {
                Ok(job) => {
                    records += job.ops.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(group, &*store, &merkle, &hub).await;
    }
    tracing::debug!("commit task stopped");
}

async fn commit_group(group: Vec<Job>, store: &dyn Store, merkle: &MerkleIndex, hub: &Hub) {
    let input: Vec<StoreRecord> = group
        .iter()
        .flat_map(|job| job.ops.iter())
        .map(|op| records::to_store(&op.map_name, &op.key, &op.record))
        .collect();
    let applied = match store.apply_remote(input).await {
        Ok(applied) => applied,
        Err(error) => {
            tracing::error!(%error, jobs = group.len(), "applying a batch failed");
            let error = CommitError::Storage(Arc::new(error));
            for job in group {
                let _ = job.done.send(Err(error.clone()));
            }
            return;
        }
    };
    // `applied` lists, in input order, the records that replaced something;
    // each equals its input record, so one forward pass pairs them up.
    let mut applied = applied.into_iter().peekable();
    for job in group {
        let mut changes = Vec::new();
        for op in job.ops {
            let hit = applied.peek().is_some_and(|a| {
                a.current.map_name == op.map_name
                    && a.current.key == op.key
                    && a.current.timestamp == op.record.timestamp
            });
            if !hit {
                continue;
            }
            let Some(a) = applied.next() else { break };
            merkle.update(&op.map_name, &op.key, &op.record.timestamp);
            changes.push(Change {
                map_name: op.map_name,
                key: op.key,
                record: op.record,
                previous: a.previous,
            });
        }
        hub.publish(job.origin, &changes);
        let _ = job.done.send(Ok(changes.len()));
    }
}
