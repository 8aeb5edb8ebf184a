//! The working set: an LRU cache of records in RAM in front of the store,
//! bounded by entry count and by bytes.
//!
//! Eviction only drops the RAM copy (the store already has every write); a
//! miss reads the store and re-caches. The cache holds encoded values, so
//! one cache serves maps of every value type.
//!
//! A map whose every record is cached is **complete**: queries then run
//! over the cached records (decoded once, on first use) instead of reading
//! the store; the decoded values count in the byte limit once a query
//! decoded them ([`WorkingSet::count_decoded`]). A map becomes complete by
//! [`WorkingSet::mark_complete`] after a full read of it, and stops being
//! complete as soon as any of its keys is evicted or invalidated, or a
//! change to one of its keys may have gone unseen.

use lru::LruCache;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use topgun_core::Timestamp;
use topgun_storage::StoreRecord;

/// Limits of the working set. Both apply; whichever is hit first evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingSetLimits {
    /// Most records held in RAM.
    pub max_entries: usize,
    /// Most bytes of keys and values held in RAM (approximate), the
    /// values decoded for queries included.
    pub max_bytes: usize,
}

impl Default for WorkingSetLimits {
    /// 20,000 entries and 64 MiB: a map of up to 10,000 records (half
    /// the entries) can be held complete.
    fn default() -> Self {
        Self {
            max_entries: 20_000,
            max_bytes: 64 << 20,
        }
    }
}

/// Counters of the working set since the client started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkingSetStats {
    /// Lookups answered from RAM.
    pub hits: u64,
    /// Lookups that had to read the store.
    pub misses: u64,
    /// Entries dropped to respect the limits.
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
    /// Approximate bytes held now.
    pub bytes: usize,
}

/// A cached record: what `get` needs without touching the store.
#[derive(Debug, Clone)]
pub(crate) struct CachedRecord {
    /// Encoded value; `None` for a tombstone.
    pub(crate) value: Option<Arc<[u8]>>,
    pub(crate) timestamp: Timestamp,
    pub(crate) ttl_ms: Option<u64>,
    /// The value decoded for queries, filled on first use; shared by
    /// copies.
    decoded: Arc<Decoded>,
}

/// A record's value as queries read it.
#[derive(Debug, Default)]
struct Decoded {
    /// `None` inside: not JSON-like.
    value: OnceLock<Option<serde_json::Value>>,
    /// Bytes of `value` counted in the working set's size (0 until
    /// [`WorkingSet::count_decoded`] counts them; set once, under the
    /// working set's lock).
    counted: AtomicUsize,
}

impl Decoded {
    /// Whether the value was decoded and its bytes not counted yet.
    fn uncounted(&self) -> bool {
        matches!(self.value.get(), Some(Some(_))) && self.counted.load(Ordering::Relaxed) == 0
    }

    /// Counts the decoded value's bytes if they are not counted yet;
    /// returns the bytes newly counted.
    fn count(&self) -> usize {
        match self.value.get() {
            Some(Some(value)) if self.counted.load(Ordering::Relaxed) == 0 => {
                let bytes = decoded_size(value);
                self.counted.store(bytes, Ordering::Relaxed);
                bytes
            }
            _ => 0,
        }
    }
}

/// Approximate bytes a decoded value takes in RAM (its nodes, strings and
/// map entries).
fn decoded_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    /// A map entry's share of its tree node beside its key and value.
    const MAP_ENTRY: usize = 16;
    size_of::<Value>()
        + match value {
            Value::String(text) => text.capacity(),
            Value::Array(items) => {
                items.iter().map(decoded_size).sum::<usize>()
                    + (items.capacity() - items.len()) * size_of::<Value>()
            }
            Value::Object(fields) => fields
                .iter()
                .map(|(name, value)| {
                    size_of::<String>() + name.capacity() + decoded_size(value) + MAP_ENTRY
                })
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

impl CachedRecord {
    pub(crate) fn new(value: Option<Arc<[u8]>>, timestamp: Timestamp, ttl_ms: Option<u64>) -> Self {
        Self {
            value,
            timestamp,
            ttl_ms,
            decoded: Arc::default(),
        }
    }

    pub(crate) fn from_store(r: &StoreRecord) -> Self {
        Self::new(
            r.value.as_deref().map(Arc::from),
            r.timestamp.clone(),
            r.ttl_ms,
        )
    }

    /// The value as queries read it (decoded from MessagePack once);
    /// `None` for a tombstone or a value that is not JSON-like.
    pub(crate) fn query_value(&self) -> Option<&serde_json::Value> {
        let bytes = self.value.as_deref()?;
        self.decoded
            .value
            .get_or_init(|| rmp_serde::from_slice(bytes).ok())
            .as_ref()
    }

    /// Whether a query decoded the value and the working set has not
    /// counted it yet.
    pub(crate) fn decoded_uncounted(&self) -> bool {
        self.decoded.uncounted()
    }

    /// The value a reader sees at `now_millis` (absent if a tombstone or
    /// expired).
    pub(crate) fn live_value(&self, now_millis: u64) -> Option<&Arc<[u8]>> {
        if topgun_core::lww::expired(&self.timestamp, self.ttl_ms, now_millis) {
            None
        } else {
            self.value.as_ref()
        }
    }

    /// Approximate bytes held for this record under a key of `key_len`
    /// bytes (map name and key together), its decoded value included once
    /// counted.
    fn size(&self, key_len: usize) -> usize {
        key_len
            + self.value.as_ref().map_or(0, |v| v.len())
            + 64
            + self.decoded.counted.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    map: Arc<str>,
    key: String,
}

/// Borrowed form of a cache key, so lookups need no allocation.
trait KeyLike {
    fn parts(&self) -> (&str, &str);
}

impl KeyLike for CacheKey {
    fn parts(&self) -> (&str, &str) {
        (&self.map, &self.key)
    }
}

impl KeyLike for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl Hash for dyn KeyLike + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (m, k) = self.parts();
        m.hash(state);
        k.hash(state);
    }
}

impl PartialEq for dyn KeyLike + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyLike + '_ {}

impl<'a> Borrow<dyn KeyLike + 'a> for CacheKey {
    fn borrow(&self) -> &(dyn KeyLike + 'a) {
        self
    }
}

/// The LRU itself. Not synchronised; the client wraps it in a mutex.
#[derive(Debug)]
pub(crate) struct WorkingSet {
    cache: LruCache<CacheKey, CachedRecord>,
    limits: WorkingSetLimits,
    stats: WorkingSetStats,
    /// Merges of keys that were not cached, counted so that a store read
    /// that raced one is not cached (see [`WorkingSet::insert_loaded`]).
    uncached_merges: u64,
    /// Maps whose every record is cached, each with its records in key
    /// order as last listed (dropped by any change to the map).
    complete: HashMap<Arc<str>, Option<Records>>,
    /// Per map, bumped whenever the map may lose completeness (a key
    /// evicted or invalidated, a change to an uncached key): a full read
    /// makes the map complete only if this did not move meanwhile.
    generations: HashMap<Arc<str>, u64>,
    /// Bumped when everything is forgotten.
    generation: u64,
}

/// A complete map's records in key order, shared by the queries that
/// read them until the map changes.
pub(crate) type Records = Arc<Vec<(String, CachedRecord)>>;

/// Where a full read of a map started (see [`WorkingSet::mark_complete`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapMark {
    all: u64,
    map: u64,
}

impl WorkingSet {
    pub(crate) fn new(limits: WorkingSetLimits) -> Self {
        Self {
            cache: LruCache::unbounded(),
            limits,
            stats: WorkingSetStats::default(),
            uncached_merges: 0,
            complete: HashMap::new(),
            generations: HashMap::new(),
            generation: 0,
        }
    }

    /// The most records a map may have to be held complete: half the
    /// working set, so that one map never crowds out all others.
    pub(crate) fn complete_limit(&self) -> usize {
        self.limits.max_entries / 2
    }

    /// Records of `map` the working set can hold without evicting any
    /// record of another map.
    pub(crate) fn room_for(&self, map: &str) -> usize {
        let others = self.cache.iter().filter(|(k, _)| &*k.map != map).count();
        self.limits.max_entries.saturating_sub(others)
    }

    /// Whether every record of `map` is cached.
    pub(crate) fn is_complete(&self, map: &str) -> bool {
        self.complete.contains_key(map)
    }

    /// Take this before a full read of `map` whose records are cached with
    /// [`insert_for_complete`](Self::insert_for_complete).
    pub(crate) fn map_mark(&self, map: &str) -> MapMark {
        MapMark {
            all: self.generation,
            map: self.generations.get(map).copied().unwrap_or(0),
        }
    }

    /// Caches a record of a full read of `map` begun at `mark`, unless a
    /// copy at least as new is cached, or the read can no longer make the
    /// map complete.
    pub(crate) fn insert_for_complete(
        &mut self,
        map: &Arc<str>,
        key: &str,
        record: CachedRecord,
        mark: MapMark,
    ) {
        if self.map_mark(map) == mark {
            self.insert_if_newer(map, key, record);
        }
    }

    /// Caches a record read from the store unless the cache holds a copy
    /// at least as new.
    fn insert_if_newer(&mut self, map: &Arc<str>, key: &str, record: CachedRecord) {
        let probe: &dyn KeyLike = &(&**map, key);
        if self
            .cache
            .peek(probe)
            .is_none_or(|cur| cur.timestamp < record.timestamp)
        {
            self.insert(map, key, record);
        }
    }

    /// After a full read of `map` begun at `mark` cached every record with
    /// [`insert_for_complete`](Self::insert_for_complete): the map is
    /// complete unless one of its keys may have been dropped or missed
    /// since. Returns whether it is.
    pub(crate) fn mark_complete(&mut self, map: &Arc<str>, mark: MapMark) -> bool {
        if self.map_mark(map) != mark {
            return false;
        }
        self.complete.insert(map.clone(), None);
        true
    }

    /// A record of `map` changed: a complete map's listing is stale.
    fn changed(&mut self, map: &str) {
        if let Some(listed) = self.complete.get_mut(map) {
            *listed = None;
        }
    }

    /// `map` may no longer have every record cached.
    fn incomplete(&mut self, map: &str) {
        self.complete.remove(map);
        match self.generations.get_mut(map) {
            Some(generation) => *generation += 1,
            None => {
                self.generations.insert(Arc::from(map), 1);
            }
        }
    }

    /// The cached records of `map` in key order if it is complete (listed
    /// once, then shared until the map changes). Does not touch recency.
    pub(crate) fn complete_records(&mut self, map: &str) -> Option<Records> {
        let listed = self.complete.get(map)?;
        if let Some(records) = listed {
            return Some(records.clone());
        }
        let mut records: Vec<(String, CachedRecord)> = self
            .cache
            .iter()
            .filter(|(k, _)| &*k.map == map)
            .map(|(k, r)| (k.key.clone(), r.clone()))
            .collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let records = Arc::new(records);
        self.complete.insert(Arc::from(map), Some(records.clone()));
        Some(records)
    }

    /// After a query over `records` (a listing of `map` from
    /// [`complete_records`](Self::complete_records)): counts the values it
    /// decoded that are still cached in the byte size. If that takes the
    /// working set over its byte limit, `map` is dropped from it (its
    /// records and their trees), rather than other records evicted for it
    /// or the map held over the limit. Answers whether the map is still
    /// held.
    pub(crate) fn count_decoded(&mut self, map: &str, records: &[(String, CachedRecord)]) -> bool {
        for (key, record) in records {
            let probe: &dyn KeyLike = &(map, key.as_str());
            // Only the cached copy's bytes count (the listing may be older).
            let cached = self.cache.peek(probe);
            if cached.is_some_and(|cached| Arc::ptr_eq(&cached.decoded, &record.decoded)) {
                self.stats.bytes += record.decoded.count();
            }
        }
        if self.stats.bytes <= self.limits.max_bytes {
            return true;
        }
        self.invalidate_map(map);
        self.enforce();
        false
    }

    /// Take this before a store read whose record will be cached with
    /// [`WorkingSet::insert_loaded`].
    pub(crate) fn read_mark(&self) -> u64 {
        self.uncached_merges
    }

    /// Looks up a record, counting a hit or a miss.
    pub(crate) fn get(&mut self, map: &str, key: &str) -> Option<&CachedRecord> {
        let probe: &dyn KeyLike = &(map, key);
        match self.cache.get(probe) {
            Some(r) => {
                self.stats.hits += 1;
                Some(r)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Looks up again a record [`get`](Self::get) counted as a miss (after
    /// waiting for a full read of its map): found now, it counts as a hit
    /// instead; still missing, it is not counted twice.
    pub(crate) fn get_again(&mut self, map: &str, key: &str) -> Option<&CachedRecord> {
        let probe: &dyn KeyLike = &(map, key);
        let found = self.cache.get(probe);
        if found.is_some() {
            self.stats.misses -= 1;
            self.stats.hits += 1;
        }
        found
    }

    /// Caches a record (replacing any older copy), then evicts least
    /// recently used entries until both limits hold.
    pub(crate) fn insert(&mut self, map: &Arc<str>, key: &str, record: CachedRecord) {
        self.changed(map);
        let key_len = map.len() + key.len();
        self.stats.bytes += record.size(key_len);
        let k = CacheKey {
            map: map.clone(),
            key: key.to_owned(),
        };
        if let Some(old) = self.cache.put(k, record) {
            self.stats.bytes -= old.size(key_len);
        }
        self.enforce();
    }

    /// Caches a record read from the store (after taking `mark` with
    /// [`WorkingSet::read_mark`]), unless the cache already holds a copy at
    /// least as new (a write or merge that landed while the read was in
    /// flight), or a merge of an uncached key happened meanwhile (it may
    /// have superseded this record, and left nothing cached to say so).
    pub(crate) fn insert_loaded(
        &mut self,
        map: &Arc<str>,
        key: &str,
        record: CachedRecord,
        mark: u64,
    ) {
        if self.uncached_merges == mark {
            self.insert_if_newer(map, key, record);
        }
    }

    /// Replaces the cached copy of a key, if there is one; caches nothing
    /// new (a merge from the server must not flush the working set).
    pub(crate) fn update_if_cached(&mut self, map: &str, key: &str, record: CachedRecord) {
        let probe: &dyn KeyLike = &(map, key);
        if let Some(cur) = self.cache.peek_mut(probe) {
            let key_len = map.len() + key.len();
            if let Some(listed) = self.complete.get_mut(map) {
                *listed = None;
            }
            self.stats.bytes -= cur.size(key_len);
            self.stats.bytes += record.size(key_len);
            *cur = record;
            self.enforce();
        } else if let Some((map, _)) = self.complete.get_key_value(map) {
            let map = map.clone();
            // A new key of a complete map is cached: the map stays complete.
            self.insert(&map, key, record);
        } else {
            self.uncached_merges += 1;
            self.incomplete(map);
        }
    }

    /// Drops a key's RAM copy (e.g. after the store pruned it).
    pub(crate) fn invalidate(&mut self, map: &str, key: &str) {
        self.incomplete(map);
        let probe: &dyn KeyLike = &(map, key);
        if let Some(old) = self.cache.pop(probe) {
            self.stats.bytes -= old.size(map.len() + key.len());
        }
    }

    /// Drops every cached key of a map.
    pub(crate) fn invalidate_map(&mut self, map: &str) {
        self.incomplete(map);
        let keys: Vec<CacheKey> = self
            .cache
            .iter()
            .filter(|(k, _)| &*k.map == map)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.invalidate(&k.map, &k.key);
        }
    }

    fn enforce(&mut self) {
        while self.cache.len() > self.limits.max_entries
            || (self.stats.bytes > self.limits.max_bytes && !self.cache.is_empty())
        {
            if let Some((k, v)) = self.cache.pop_lru() {
                self.stats.bytes -= v.size(k.map.len() + k.key.len());
                self.stats.evictions += 1;
                self.incomplete(&k.map);
            }
        }
    }

    /// Drops every cached entry.
    pub(crate) fn invalidate_all(&mut self) {
        self.cache.clear();
        self.stats.bytes = 0;
        // A read in flight may carry a copy the invalidation was meant to
        // drop: it must not be cached.
        self.uncached_merges += 1;
        self.complete.clear();
        self.generation += 1;
    }

    /// Least recently used `(map, key)`s, oldest first, at most `limit`.
    /// Does not touch recency (the quota uses it to choose what to prune).
    pub(crate) fn lru_keys(&self, limit: usize) -> Vec<(String, String)> {
        self.cache
            .iter()
            .rev()
            .take(limit)
            .map(|(k, _)| (k.map.to_string(), k.key.clone()))
            .collect()
    }

    /// Whether `(map, key)` is cached, without touching recency or stats.
    pub(crate) fn contains(&self, map: &str, key: &str) -> bool {
        let probe: &dyn KeyLike = &(map, key);
        self.cache.contains(probe)
    }

    pub(crate) fn stats(&self) -> WorkingSetStats {
        WorkingSetStats {
            entries: self.cache.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &[u8]) -> CachedRecord {
        CachedRecord::new(Some(Arc::from(v)), Timestamp::new(1, 0, "n"), None)
    }

    #[test]
    fn a_merge_updates_cached_keys_and_caches_nothing_new() {
        let map: Arc<str> = Arc::from("m");
        let mut ws = WorkingSet::new(WorkingSetLimits {
            max_entries: 2,
            max_bytes: 10_000,
        });
        ws.insert(&map, "hot", rec(b"old"));
        let before = ws.stats().bytes;
        ws.update_if_cached("m", "hot", rec(b"newer"));
        ws.update_if_cached("m", "cold", rec(b"x"));
        assert_eq!(
            ws.get("m", "hot").unwrap().value.as_deref(),
            Some(&b"newer"[..])
        );
        assert!(!ws.contains("m", "cold"));
        assert_eq!(ws.stats().entries, 1);
        assert_eq!(ws.stats().bytes, before + 2);
    }

    #[test]
    fn evicts_by_entries_and_bytes_lru_first() {
        let map: Arc<str> = Arc::from("m");
        let mut ws = WorkingSet::new(WorkingSetLimits {
            max_entries: 3,
            max_bytes: 10_000,
        });
        for k in ["a", "b", "c"] {
            ws.insert(&map, k, rec(b"x"));
        }
        assert!(ws.get("m", "a").is_some()); // a is now most recent
        ws.insert(&map, "d", rec(b"x"));
        assert!(ws.get("m", "b").is_none(), "b was least recently used");
        assert_eq!(ws.stats().entries, 3);
        assert_eq!(ws.stats().evictions, 1);

        let mut ws = WorkingSet::new(WorkingSetLimits {
            max_entries: 100,
            max_bytes: 300,
        });
        for i in 0..10 {
            ws.insert(&map, &format!("k{i}"), rec(&[0u8; 100]));
            assert!(ws.stats().bytes <= 300);
        }
        assert!(ws.stats().entries < 10);
        assert!(ws.get("m", "k9").is_some());
    }

    #[test]
    fn replacing_and_invalidating_keep_byte_count_exact() {
        let map: Arc<str> = Arc::from("m");
        let mut ws = WorkingSet::new(WorkingSetLimits::default());
        ws.insert(&map, "a", rec(&[0; 10]));
        let one = ws.stats().bytes;
        ws.insert(&map, "a", rec(&[0; 20]));
        assert_eq!(ws.stats().bytes, one + 10);
        ws.invalidate("m", "a");
        assert_eq!(ws.stats().bytes, 0);
        ws.insert(&map, "a", rec(b"1"));
        ws.insert(&Arc::from("other"), "a", rec(b"1"));
        ws.invalidate_map("m");
        assert_eq!(ws.stats().entries, 1);
        assert!(ws.get("other", "a").is_some());
    }

    #[test]
    fn a_late_store_read_does_not_replace_a_newer_copy() {
        let map: Arc<str> = Arc::from("m");
        let mut ws = WorkingSet::new(WorkingSetLimits::default());
        let at = |millis| {
            CachedRecord::new(
                Some(Arc::from(&b"v"[..])),
                Timestamp::new(millis, 0, "n"),
                None,
            )
        };
        ws.insert(&map, "k", at(5));
        let mark = ws.read_mark();
        ws.insert_loaded(&map, "k", at(3), mark);
        assert_eq!(ws.get("m", "k").unwrap().timestamp.millis, 5);
        ws.insert_loaded(&map, "k", at(7), mark);
        assert_eq!(ws.get("m", "k").unwrap().timestamp.millis, 7);
        ws.insert_loaded(&map, "absent", at(1), mark);
        assert!(ws.get("m", "absent").is_some());
    }

    #[test]
    fn a_store_read_that_raced_a_merge_of_an_uncached_key_is_not_cached() {
        let map: Arc<str> = Arc::from("m");
        let mut ws = WorkingSet::new(WorkingSetLimits::default());
        let old = rec(b"old");
        // A read starts, a merge of the (uncached) key lands, the read ends.
        let mark = ws.read_mark();
        ws.update_if_cached("m", "k", rec(b"new"));
        ws.insert_loaded(&map, "k", old, mark);
        assert!(
            !ws.contains("m", "k"),
            "the old record would hide the merge"
        );
    }

    /// Loads `keys` of map `m` as a full read would, returning whether the
    /// map became complete.
    fn load(ws: &mut WorkingSet, keys: &[&str], between: impl FnOnce(&mut WorkingSet)) -> bool {
        let map: Arc<str> = Arc::from("m");
        let mark = ws.map_mark("m");
        between(ws);
        for key in keys {
            ws.insert_for_complete(&map, key, rec(b"v"), mark);
        }
        ws.mark_complete(&map, mark)
    }

    #[test]
    fn a_full_read_makes_a_map_complete_until_one_of_its_keys_goes() {
        let limits = WorkingSetLimits {
            max_entries: 4,
            max_bytes: 10_000,
        };
        let mut ws = WorkingSet::new(limits);
        let other: Arc<str> = Arc::from("other");
        ws.insert(&other, "x", rec(b"v"));
        assert!(load(&mut ws, &["a", "b"], |_| {}));
        let keys = |ws: &mut WorkingSet| -> Vec<String> {
            let records = ws.complete_records("m").unwrap();
            records.iter().map(|(k, _)| k.clone()).collect()
        };
        assert_eq!(keys(&mut ws), ["a", "b"]);
        // A merge of a key the map did not have keeps it complete.
        ws.update_if_cached("m", "c", rec(b"new"));
        assert_eq!(keys(&mut ws), ["a", "b", "c"]);
        // The listing follows changes to its keys.
        ws.update_if_cached("m", "a", rec(b"newer"));
        let records = ws.complete_records("m").unwrap();
        assert_eq!(records[0].1.value.as_deref(), Some(&b"newer"[..]));
        // Another map's key evicted: still complete; one of its own: not.
        ws.insert(&other, "y", rec(b"v"));
        assert!(!ws.contains("other", "x"));
        assert!(ws.is_complete("m"), "x was evicted, not a key of m");
        ws.insert(&other, "z", rec(b"v"));
        assert!(!ws.contains("m", "a"));
        assert!(!ws.is_complete("m"), "a key of m was evicted");

        let mut ws = WorkingSet::new(limits);
        assert!(load(&mut ws, &["a"], |_| {}));
        ws.invalidate("m", "a");
        assert!(ws.complete_records("m").is_none());
        assert!(load(&mut ws, &["a"], |_| {}));
        ws.invalidate_all();
        assert!(!ws.is_complete("m"));
    }

    #[test]
    fn a_full_read_raced_by_an_unseen_change_does_not_complete_the_map() {
        let limits = WorkingSetLimits {
            max_entries: 100,
            max_bytes: 10_000,
        };
        let mut ws = WorkingSet::new(limits);
        // A merge of a key the read may already have passed.
        assert!(!load(&mut ws, &["a", "b"], |ws| ws.update_if_cached(
            "m",
            "a0",
            rec(b"x")
        )));
        assert!(!ws.is_complete("m"));
        assert!(!load(&mut ws, &["a"], |ws| ws.invalidate_map("m")));
        assert!(!load(&mut ws, &["a"], WorkingSet::invalidate_all));
        // A local write meanwhile is cached by its writer: no harm.
        assert!(load(&mut ws, &["a"], |ws| ws.insert(
            &Arc::from("m"),
            "b",
            rec(b"w")
        )));
        // A map over the limit evicts its own keys while read.
        let mut small = WorkingSet::new(WorkingSetLimits {
            max_entries: 2,
            max_bytes: 10_000,
        });
        assert!(!load(&mut small, &["a", "b", "c"], |_| {}));
    }

    #[test]
    fn query_values_are_decoded_once_and_shared_by_copies() {
        let value = serde_json::json!({"n": 1});
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        let record = CachedRecord::new(Some(Arc::from(bytes)), Timestamp::new(1, 0, "n"), None);
        let copy = record.clone();
        assert_eq!(record.query_value(), Some(&value));
        assert!(std::ptr::eq(
            record.query_value().unwrap(),
            copy.query_value().unwrap()
        ));
        assert_eq!(rec(&[0xc1]).query_value(), None, "not MessagePack");
        assert_eq!(
            CachedRecord::new(None, Timestamp::new(1, 0, "n"), None).query_value(),
            None
        );
    }

    #[test]
    fn decoded_values_count_in_the_byte_limit() {
        let map: Arc<str> = Arc::from("m");
        let doc = serde_json::json!({"name": "a".repeat(40), "tags": ["x", "y"], "n": 1});
        let bytes = rmp_serde::to_vec_named(&doc).unwrap();
        let record =
            || CachedRecord::new(Some(Arc::from(&bytes[..])), Timestamp::new(1, 0, "n"), None);
        let mut ws = WorkingSet::new(WorkingSetLimits::default());
        for key in ["a", "b", "c"] {
            ws.insert(&map, key, record());
        }
        ws.mark_complete(&map, ws.map_mark("m"));
        let encoded = ws.stats().bytes;
        let records = ws.complete_records("m").unwrap();
        // A query decoded two of them.
        records[0].1.query_value().unwrap();
        records[1].1.query_value().unwrap();
        assert!(records[0].1.decoded_uncounted());
        assert!(ws.count_decoded("m", &records));
        let one = decoded_size(records[0].1.query_value().unwrap());
        assert!(one > bytes.len(), "a tree takes more than its bytes");
        assert_eq!(ws.stats().bytes, encoded + 2 * one);
        assert!(!records[0].1.decoded_uncounted());
        assert!(ws.count_decoded("m", &records));
        assert_eq!(ws.stats().bytes, encoded + 2 * one, "counted once");
        // A listing older than the cached copy counts nothing.
        ws.insert(&map, "c", record());
        records[2].1.query_value().unwrap();
        let before = ws.stats().bytes;
        assert!(ws.count_decoded("m", &records));
        assert_eq!(ws.stats().bytes, before);
        // Dropping the records takes their decoded bytes with them.
        ws.invalidate_map("m");
        assert_eq!(ws.stats().bytes, 0);

        // Over the limit once counted: the map is dropped, not another
        // map's records.
        let other: Arc<str> = Arc::from("other");
        let mut small = WorkingSet::new(WorkingSetLimits {
            max_entries: 100,
            max_bytes: encoded * 2 + one,
        });
        for key in ["a", "b", "c"] {
            small.insert(&other, key, record());
        }
        let others = small.stats().bytes;
        for key in ["a", "b", "c"] {
            small.insert(&map, key, record());
        }
        small.mark_complete(&map, small.map_mark("m"));
        let records = small.complete_records("m").unwrap();
        for (_, record) in records.iter() {
            record.query_value().unwrap();
        }
        assert!(!small.count_decoded("m", &records));
        assert_eq!(small.stats().bytes, others);
        assert!(!small.is_complete("m"));
        assert!(!small.contains("m", "a"));
        assert!(small.contains("other", "a"));
    }

    #[test]
    fn ttl_expired_reads_as_absent() {
        let r = CachedRecord::new(
            Some(Arc::from(&b"v"[..])),
            Timestamp::new(100, 0, "n"),
            Some(10),
        );
        assert!(r.live_value(110).is_some());
        assert!(r.live_value(111).is_none());
    }
}
