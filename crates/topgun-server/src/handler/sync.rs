//! Merkle delta pull: `SYNC_INIT` and `MERKLE_REQ_BUCKET`.

use super::Session;
use crate::fanout::Outgoing;
use topgun_core::merkle::DEPTH;
use topgun_core::wire::{
    MerkleReqBucket, Message, RawLeafRecord, SyncRespBuckets, SyncRespLeaf, SyncRespRoot,
};

impl Session {
    /// `SYNC_INIT`: the map's root hash (0 for an unknown map) and the
    /// server's clock.
    pub(crate) fn on_sync_init(&self, map: &str) {
        if !self.check_read(map) {
            return;
        }
        self.outbox.send(Message::SyncRespRoot(SyncRespRoot {
            map_name: map.to_owned(),
            root_hash: self.shared.merkle.root_hash(map),
            timestamp: self.shared.hlc.now(),
        }));
    }

    /// `MERKLE_REQ_BUCKET`: the children of an inner node, or at depth 3
    /// the leaf's records (tombstones included) read from the store.
    /// Always answered — empty for an unknown map or path — because
    /// TopGun's client pipelines these and never times them out.
    pub(crate) async fn on_bucket_request(&self, req: MerkleReqBucket) {
        if !self.check_read(&req.map_name) {
            return;
        }
        if req.path.chars().count() < DEPTH {
            let buckets = self.shared.merkle.buckets(&req.map_name, &req.path);
            return self.outbox.send(Message::SyncRespBuckets(SyncRespBuckets {
                map_name: req.map_name,
                path: req.path,
                buckets,
            }));
        }
        let keys = self.shared.merkle.leaf_keys(&req.map_name, &req.path);
        let stored = match self.shared.store.get_many(&req.map_name, &keys).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%error, map = %req.map_name, "reading a Merkle leaf failed");
                return self.error(500, "reading the leaf's records failed".to_owned());
            }
        };
        // Stored values are MessagePack already: they go into the frame as
        // they are, once checked.
        let codec = &self.shared.codec;
        let records: Vec<RawLeafRecord<'_>> = stored
            .iter()
            .flatten()
            .filter_map(|r| {
                let value = r.value.as_deref();
                match codec.leaf_record(&r.key, value, &r.timestamp, r.ttl_ms) {
                    Ok(record) => Some(record),
                    Err(error) => {
                        tracing::error!(%error, map = %req.map_name, "skipping an unsendable stored record");
                        None
                    }
                }
            })
            .collect();
        self.send_leaf(&req.map_name, &req.path, &records);
    }

    /// Sends a leaf's records, split over several `SYNC_RESP_LEAF` frames
    /// for the same path when one frame would be too large (the client
    /// merges each).
    fn send_leaf(&self, map: &str, path: &str, records: &[RawLeafRecord<'_>]) {
        // Records may be large; try the whole leaf first.
        let error = match self.shared.codec.encode_leaf(map, path, records) {
            Ok(bytes) => return self.outbox.push(Outgoing::Bytes(bytes)),
            Err(error) => error,
        };
        if records.len() > 1 {
            let (first, second) = records.split_at(records.len() / 2);
            self.send_leaf(map, path, first);
            self.send_leaf(map, path, second);
        } else {
            // An oversized single record is skipped; the (possibly extra)
            // empty answer keeps every request answered.
            tracing::error!(%error, map, path, "a leaf record does not fit in a frame; skipped");
            self.outbox.send(Message::SyncRespLeaf(SyncRespLeaf {
                map_name: map.to_owned(),
                path: path.to_owned(),
                records: Vec::new(),
            }));
        }
    }
}
