//! Merging records that came from the server into the local store.

use crate::client::ClientInner;
use crate::error::ClientError;
use crate::events::Origin;
use crate::working_set::CachedRecord;
use topgun_core::wire::WireRecord;
use topgun_core::Timestamp;
use topgun_storage::StoreRecord;

/// The result of [`ClientInner::apply_remote`].
#[derive(Debug, Default)]
pub(crate) struct RemoteApplied {
    /// Keys whose record changed, with their new timestamp.
    pub(crate) changed: Vec<(String, Timestamp)>,
    /// Records refused because their timestamp is beyond the clock's drift
    /// bound, with the reason.
    pub(crate) refused: Vec<(String, String)>,
}

impl ClientInner {
    /// Merges server records into `map` by LWW in one storage transaction
    /// (relaxed: it need not be durable, see
    /// [`Store::apply_remote_relaxed`](topgun_storage::Store::apply_remote_relaxed)):
    /// a record replaces the local one only if its timestamp is strictly
    /// greater; merged records are clean (never dirty). The HLC absorbs
    /// every accepted timestamp; one beyond the drift bound is refused.
    /// Subscribers and live queries see each change with origin `Remote`.
    ///
    /// The keys are locked for the duration, so a concurrent local write to
    /// the same key is ordered before or after the merge, never across it.
    pub(crate) async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<RemoteApplied, ClientError> {
        self.check_open()?;
        let shared = self.map(map);
        let mut keys: Vec<&str> = records
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.lock_key(map, key).await);
        }
        let mut result = RemoteApplied::default();
        let mut batch = Vec::with_capacity(records.len());
        for (key, record) in &records {
            if key.is_empty() {
                result.refused.push((key.clone(), "empty key".into()));
                continue;
            }
            if let Err(e) = self.hlc.update(&record.timestamp) {
                result.refused.push((key.clone(), e.to_string()));
                continue;
            }
            let value = match &record.value {
                Some(v) => {
                    let mut buf = Vec::new();
                    // Writing to a Vec cannot fail.
                    let _ = rmpv::encode::write_value(&mut buf, v);
                    Some(buf)
                }
                None => None,
            };
            batch.push(StoreRecord {
                map_name: map.to_owned(),
                key: key.clone(),
                value,
                timestamp: record.timestamp.clone(),
                ttl_ms: record.ttl_ms,
                dirty: false,
            });
        }
        if batch.is_empty() {
            return Ok(result);
        }
        // In key order (a stable sort keeps a key's duplicates in order, so
        // LWW picks the same winner): a pull's keys arrive in hash order,
        // and sorted inserts touch each B-tree page once per merge.
        batch.sort_by(|a, b| a.key.cmp(&b.key));
        // Relaxed: a merged record can always be fetched again. If a crash
        // loses it, the Merkle tree rebuilt from the store at start lacks
        // it and the next pull brings it back; local writes stay durable.
        let changes = self.store.apply_remote_relaxed(batch).await?;
        let now = self.now_millis();
        for change in changes {
            let current = CachedRecord::from_store(&change.current);
            let new = current.live_value(now).cloned();
            let old = change.previous.as_ref().and_then(|p| {
                let prev = CachedRecord::from_store(p);
                prev.live_value(now).cloned()
            });
            let key = change.current.key.clone();
            self.ws().insert(&shared.name, &key, current);
            self.publish(
                &shared,
                &key,
                old,
                new,
                Origin::Remote,
                change.current.timestamp.clone(),
            );
            result.changed.push((key, change.current.timestamp));
        }
        drop(guards);
        Ok(result)
    }
}

/// Decodes stored value bytes into a wire value.
pub(crate) fn wire_value(bytes: &[u8]) -> Result<rmpv::Value, rmpv::decode::Error> {
    rmpv::decode::read_value(&mut &bytes[..])
}
