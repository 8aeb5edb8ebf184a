//! Applying a shared store's change feed in the commit task.

use super::{CommitError, FEED_PAGE};
use crate::fanout::{Change, CloseReason, Hub, Refill, NO_CONN};
use crate::merkle_index::MerkleIndex;
use crate::records;
use crate::store::{FeedRead, ServerStore};
use std::sync::Arc;
use topgun_storage::{StorageError, StoreRecord};

/// Applies what other nodes wrote after `after` (see
/// [`Committer::read_feed`]); returns the next position and the live
/// queries to run again.
pub(super) async fn read_feed(
    after: u64,
    store: &Arc<dyn ServerStore>,
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
            match MerkleIndex::load(store.clone()).await {
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
            match read_records(&**store, unconfirmed).await {
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
