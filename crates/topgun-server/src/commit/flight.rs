//! Merges in flight: the commit task starts a group's merge and goes on
//! with the next group while the store works, up to [`MERGES_PER_LANE`]
//! per lane of the store ([`ServerStore::lanes`]) at once. Merges in flight never share a key (a group that would waits for
//! the earlier ones to land), so each key's writes reach the store, the
//! Merkle trees and the subscribers in the order they were committed;
//! landed merges are finished (trees, fan-out, answers) in the order they
//! started.

use super::{CommitError, Job};
use crate::fanout::{Change, Hub, Refill};
use crate::merkle_index::MerkleIndex;
use crate::records;
use crate::store::{LaneMerge, ServerStore};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::task::JoinHandle;
use topgun_storage::{StorageError, StoreRecord};

/// Most merges in flight at once, per lane of the store.
pub(super) const MERGES_PER_LANE: usize = 4;

/// One group of jobs whose merge is running.
#[derive(Debug)]
struct InFlight {
    group: Vec<Job>,
    keys: Keys,
    merge: JoinHandle<LaneMerge>,
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
    result: Result<LaneMerge, CommitError>,
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
        let merge = tokio::spawn(async move { store.merge_lanes(input).await });
        self.merges.push_back(InFlight { group, keys, merge });
    }

    /// Waits for the oldest merge; `None` when none is in flight.
    pub(super) async fn land(&mut self) -> Option<Landed> {
        let oldest = self.merges.front_mut()?;
        let result = match (&mut oldest.merge).await {
            Ok(merged) => Ok(merged),
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
    /// answers each job; returns the live queries to run again. After a
    /// merge that failed in some lanes of the store, what the others
    /// committed still reaches the trees and subscribers, and a job is
    /// answered with success only if every one of its ops was committed.
    pub(super) fn finish(self, merkle: &MerkleIndex, hub: &Hub) -> Vec<Refill> {
        let LaneMerge { applied, error } = match self.result {
            Ok(merged) => merged,
            Err(error) => {
                tracing::error!(%error, jobs = self.group.len(), "applying a batch failed");
                for job in self.group {
                    let _ = job.done.send(Err(error.clone()));
                }
                return Vec::new();
            }
        };
        // A record without an answer and no error would be a store's bug;
        // its job is failed all the same, never acknowledged.
        let ops: usize = self.group.iter().map(|job| job.ops.len()).sum();
        let unanswered = applied.len() < ops || applied.iter().any(Option::is_none);
        let error = error
            .or_else(|| {
                unanswered.then(|| StorageError::Backend {
                    backend: "server store",
                    during: "merging a batch",
                    source: "no answer for some records".into(),
                })
            })
            .map(|error| CommitError::Storage(Arc::new(error)));
        if let Some(error) = &error {
            let committed = applied.iter().filter(|a| a.is_some()).count();
            tracing::error!(%error, jobs = self.group.len(), committed, "applying a batch failed");
        }
        // One entry per op, in input order.
        let mut applied = applied.into_iter();
        let mut refills = Vec::new();
        for job in self.group {
            let mut changes = Vec::new();
            let mut committed = true;
            for op in job.ops {
                match applied.next().flatten() {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        committed = false;
                        continue;
                    }
                }
                merkle.update(&op.map_name, &op.key, &op.record.timestamp);
                changes.push(Change {
                    map_name: op.map_name,
                    key: op.key,
                    record: op.record,
                });
            }
            refills.extend(hub.publish(job.origin, &changes));
            let answer = match &error {
                Some(error) if !committed => Err(error.clone()),
                _ => Ok(changes.len()),
            };
            let _ = job.done.send(answer);
        }
        refills
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::AcceptedOp;
    use crate::store::{ChangeFeed, EmbeddedStore, LanedStore};
    use tokio::sync::oneshot;
    use topgun_core::wire::WireRecord;
    use topgun_core::Timestamp;
    use topgun_storage::{KeyStamp, MemoryStore, Paged};

    /// A lane whose merges fail, as on a full disk; it reads as usual.
    #[derive(Debug)]
    struct Broken(EmbeddedStore);

    #[async_trait::async_trait]
    impl Paged for Broken {
        async fn page(
            &self,
            map_name: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<StoreRecord>, StorageError> {
            self.0.page(map_name, after, limit).await
        }

        async fn stamp_page(
            &self,
            map_name: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<KeyStamp>, StorageError> {
            self.0.stamp_page(map_name, after, limit).await
        }
    }

    #[async_trait::async_trait]
    impl ServerStore for Broken {
        async fn merge(&self, _: Vec<StoreRecord>) -> Result<Vec<bool>, StorageError> {
            Err(StorageError::Closed)
        }

        async fn get_many(
            &self,
            map_name: &str,
            keys: &[String],
        ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
            self.0.get_many(map_name, keys).await
        }

        async fn map_names(&self) -> Result<Vec<String>, StorageError> {
            self.0.map_names().await
        }

        fn feed(&self) -> Option<&dyn ChangeFeed> {
            None
        }

        async fn close(&self) -> Result<(), StorageError> {
            Ok(())
        }
    }

    fn job(keys: &[&str]) -> (Job, oneshot::Receiver<Result<usize, CommitError>>) {
        let (done, answer) = oneshot::channel();
        let ops = keys
            .iter()
            .map(|key| AcceptedOp {
                map_name: "m".into(),
                key: (*key).into(),
                record: WireRecord::new(1.into(), Timestamp::new(5, 0, "n")),
            })
            .collect();
        (
            Job {
                origin: 1,
                ops,
                done,
            },
            answer,
        )
    }

    /// A merge that fails in one lane of a laned store still brings what
    /// the other lane committed to the Merkle trees, and a job whose ops
    /// all landed there is answered with success (a resent op counting as
    /// no change).
    #[tokio::test]
    async fn a_merge_failed_in_one_lane_keeps_what_the_other_committed() {
        let lane = || EmbeddedStore::new(Arc::new(MemoryStore::new()));
        let store = LanedStore::new(vec![Arc::new(lane()), Arc::new(Broken(lane()))]);
        let in_lane = |n: usize| {
            (0..)
                .map(|i| format!("k{i}"))
                .filter(|k| store.lane_of(k) == n)
                .take(3)
                .collect::<Vec<_>>()
        };
        let (good, bad) = (in_lane(0), in_lane(1));
        // good[2] is stored already: the healthy job resends it.
        let (stored, _) = job(&[&good[2]]);
        let resent = &stored.ops[0];
        store
            .merge(vec![records::to_store(
                &resent.map_name,
                &resent.key,
                &resent.record,
            )])
            .await
            .unwrap();
        let (healthy_job, healthy) = job(&[&good[0], &good[2]]);
        let (mixed_job, mixed) = job(&[&good[1], &bad[0]]);
        let group = vec![healthy_job, mixed_job];
        let mut flight = Flight::default();
        let keys = Keys::of(&group);
        let store: Arc<dyn ServerStore> = Arc::new(store);
        flight.start(group, keys, store.clone());
        let merkle = MerkleIndex::default();
        flight
            .land()
            .await
            .unwrap()
            .finish(&merkle, &Hub::default());
        // The resent op is acknowledged but is no change.
        assert_eq!(healthy.await.unwrap().unwrap(), 1);
        assert!(matches!(mixed.await.unwrap(), Err(CommitError::Storage(_))));
        let at = Timestamp::new(5, 0, "n");
        assert!(merkle.holds("m", &good[0], &at));
        assert!(merkle.holds("m", &good[1], &at));
        assert!(!merkle.holds("m", &bad[0], &at));
    }
}
