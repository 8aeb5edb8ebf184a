//! Merges in flight: the commit task starts a group's merge and goes on
//! with the next group while the store works, up to [`MAX_IN_FLIGHT`] at
//! once. Merges in flight never share a key (a group that would waits for
//! the earlier ones to land), so each key's writes reach the store, the
//! Merkle trees and the subscribers in the order they were committed;
//! landed merges are finished (trees, fan-out, answers) in the order they
//! started.

use super::{CommitError, Job};
use crate::fanout::{Change, Hub, Refill};
use crate::merkle_index::MerkleIndex;
use crate::records;
use crate::store::ServerStore;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::task::JoinHandle;
use topgun_storage::{StorageError, StoreRecord};

/// Most merges in flight at once.
pub(super) const MAX_IN_FLIGHT: usize = 4;

/// One group of jobs whose merge is running.
#[derive(Debug)]
struct InFlight {
    group: Vec<Job>,
    keys: Keys,
    merge: JoinHandle<Result<Vec<bool>, StorageError>>,
}

/// The keys a group writes, as hashes of (map, key): two groups whose sets
/// meet may write the same key (a collision only makes one wait).
#[derive(Debug)]
pub(super) struct Keys(HashSet<u64>);

impl Keys {
    pub(super) fn of(group: &[Job]) -> Self {
        use std::hash::BuildHasher;
        let hasher = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default();
        Keys(
            group
                .iter()
                .flat_map(|job| job.ops.iter())
                .map(|op| hasher.hash_one((&op.map_name, &op.key)))
                .collect(),
        )
    }

    fn meets(&self, other: &Keys) -> bool {
        let (small, large) = if self.0.len() <= other.0.len() {
            (&self.0, &other.0)
        } else {
            (&other.0, &self.0)
        };
        small.iter().any(|k| large.contains(k))
    }
}

/// A merge that finished, to apply to the trees and subscribers.
#[derive(Debug)]
pub(super) struct Landed {
    group: Vec<Job>,
    result: Result<Vec<bool>, CommitError>,
}

/// The merges in flight, oldest first.
#[derive(Debug, Default)]
pub(super) struct Flight {
    merges: VecDeque<InFlight>,
}

impl Flight {
    pub(super) fn len(&self) -> usize {
        self.merges.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.merges.is_empty()
    }

    /// Whether a merge in flight may write one of `keys`.
    pub(super) fn overlaps(&self, keys: &Keys) -> bool {
        self.merges.iter().any(|m| m.keys.meets(keys))
    }

    /// Starts merging `group` (writing `keys`) into `store`.
    pub(super) fn start(&mut self, group: Vec<Job>, keys: Keys, store: Arc<dyn ServerStore>) {
        let input: Vec<StoreRecord> = group
            .iter()
            .flat_map(|job| job.ops.iter())
            .map(|op| records::to_store(&op.map_name, &op.key, &op.record))
            .collect();
        let merge = tokio::spawn(async move { store.merge(input).await });
        self.merges.push_back(InFlight { group, keys, merge });
    }

    /// Waits for the oldest merge; `None` when none is in flight.
    pub(super) async fn land(&mut self) -> Option<Landed> {
        let oldest = self.merges.front_mut()?;
        let result = match (&mut oldest.merge).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(error)) => Err(CommitError::Storage(Arc::new(error))),
            Err(error) => {
                tracing::error!(%error, "a merge task failed");
                Err(CommitError::Stopped)
            }
        };
        let oldest = self.merges.pop_front()?;
        Some(Landed {
            group: oldest.group,
            result,
        })
    }
}

impl Landed {
    /// Applies the merge's changes to the Merkle trees, fans them out and
    /// answers each job; returns the live queries to run again.
    pub(super) fn finish(self, merkle: &MerkleIndex, hub: &Hub) -> Vec<Refill> {
        let applied = match self.result {
            Ok(applied) => applied,
            Err(error) => {
                tracing::error!(%error, jobs = self.group.len(), "applying a batch failed");
                for job in self.group {
                    let _ = job.done.send(Err(error.clone()));
                }
                return Vec::new();
            }
        };
        // One flag per op, in input order.
        let mut applied = applied.into_iter();
        let mut refills = Vec::new();
        for job in self.group {
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
}
