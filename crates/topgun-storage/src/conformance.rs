//! The conformance suite of the [`Store`] trait: one set of tests that
//! every backend must pass (feature `testing`).
//!
//! Test bodies are the methods of [`StoreConformance`], implemented for
//! every `Store`; each expects a fresh, empty store. The
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro
//! turns them into one test per method for a backend, given an async
//! factory returning `(store, guard)` — the guard (a temp dir, say) lives
//! as long as the test:
//!
//! ```ignore
//! async fn memory() -> (topgun_storage::MemoryStore, ()) {
//!     (topgun_storage::MemoryStore::new(), ())
//! }
//! topgun_storage::store_conformance_tests!(memory);
//! // or, with another test attribute:
//! // topgun_storage::store_conformance_tests!(#[wasm_bindgen_test] indexed_db);
//! ```
//!
//! A new `Store` method comes with its test here. The last test,
//! [`StoreConformance::random_ops_match_model`], drives the store with a
//! fixed-seed random sequence of calls and checks every answer and the
//! whole state against a naive in-test model.
//!
//! Test bodies panic (with a message) on failure, as tests do.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test code

use crate::error::StorageError;
use crate::model::{
    KeyStamp, LocalWrite, OpId, OpLogEntry, OpType, PruneSums, StoreRecord, StoreStats,
};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use topgun_core::Timestamp;

/// Instantiates the conformance suite for one backend: a test per
/// [`StoreConformance`] method, in a module `store_conformance`.
///
/// `$make` is a callable returning a future of `(store, guard)`, called
/// once per test; the guard is dropped after the test. The test attribute
/// defaults to `#[tokio::test]`.
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$attr:meta] $make:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__store_conformance_cases!(#[$attr] $make;
                write_local_stores_record_and_op,
                write_local_checked_refuses_stale_stamps,
                write_local_checked_many_answers_each_write,
                write_local_rejects_invalid_input,
                get_returns_none_for_unknown_keys,
                get_many_answers_like_get_in_key_order_given,
                scan_pages_in_key_order,
                scan_in_store_order_pages_through_every_record_once,
                scan_stamps_match_scan,
                dirty_records_lists_dirty_records_in_key_order,
                dirty_records_follow_clears_and_repeated_writes,
                pending_ops_pages_by_cursor,
                mark_synced_cleans_only_records_at_the_op_timestamp,
                mark_synced_clear_op_cleans_its_tombstones,
                acknowledge_cleans_and_deletes_the_ops,
                drop_synced_ops_keeps_pending_and_never_reuses_ids,
                apply_remote_is_last_writer_wins,
                apply_remote_relaxed_merges_like_apply_remote,
                a_large_merge_among_stored_keys_is_last_writer_wins,
                clear_map_tombstones_live_records,
                clear_map_keeps_records_newer_than_the_clear,
                prune_clean_removes_only_clean_unreferenced_records,
                map_names_lists_maps_in_order,
                count_records_counts_a_maps_records_and_tombstones,
                meta_round_trips,
                stats_track_counts_and_sizes,
                random_ops_match_model,
            );
        }
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(#[tokio::test] $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    (#[$attr:meta] $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $name() {
                let (store, _guard) = ($make)().await;
                $crate::conformance::StoreConformance::$name(&store).await;
            }
        )*
    };
}

/// A timestamp of node `node-a`.
pub fn ts(millis: u64) -> Timestamp {
    Timestamp::new(millis, 0, "node-a")
}

/// A local `Put`.
pub fn put(map: &str, key: &str, value: &[u8], timestamp: Timestamp) -> LocalWrite {
    LocalWrite {
        map_name: map.into(),
        key: key.into(),
        op_type: OpType::Put,
        value: Some(value.to_vec()),
        timestamp,
        ttl_ms: None,
    }
}

/// A local `Remove`.
pub fn remove(map: &str, key: &str, timestamp: Timestamp) -> LocalWrite {
    LocalWrite {
        map_name: map.into(),
        key: key.into(),
        op_type: OpType::Remove,
        value: None,
        timestamp,
        ttl_ms: None,
    }
}

/// A record as a server sends it.
pub fn remote(map: &str, key: &str, value: Option<&[u8]>, timestamp: Timestamp) -> StoreRecord {
    StoreRecord {
        map_name: map.into(),
        key: key.into(),
        value: value.map(<[u8]>::to_vec),
        timestamp,
        ttl_ms: None,
        dirty: false,
    }
}

async fn all_pending(store: &(impl Store + ?Sized)) -> Vec<OpLogEntry> {
    store.pending_ops(None, usize::MAX).await.unwrap()
}

async fn all_records(store: &(impl Store + ?Sized), map: &str) -> Vec<StoreRecord> {
    store.scan(map, None, usize::MAX).await.unwrap()
}

async fn record(store: &(impl Store + ?Sized), map: &str, key: &str) -> StoreRecord {
    store
        .get(map, key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no record at ({map:?}, {key:?})"))
}

fn keys(records: &[StoreRecord]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(
        matches!(result, Err(StorageError::InvalidInput(_))),
        "{what}: expected InvalidInput, got {result:?}"
    );
}

/// The conformance tests; see the [module docs](self).
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait StoreConformance: Store {
    /// `write_local` stores the record (dirty) and its op (pending)
    /// together; op ids strictly increase.
    async fn write_local_stores_record_and_op(&self) {
        let id1 = self.write_local(put("m", "k", b"v1", ts(1))).await.unwrap();
        assert_eq!(id1, 1, "op ids start at 1");
        let r = record(self, "m", "k").await;
        assert_eq!(r.value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(r.timestamp, ts(1));
        assert!(r.dirty);
        let ops = all_pending(self).await;
        assert_eq!(
            ops,
            vec![OpLogEntry {
                id: id1,
                map_name: "m".into(),
                op_type: OpType::Put,
                key: "k".into(),
                value: Some(b"v1".to_vec()),
                timestamp: ts(1),
                ttl_ms: None,
                synced: false,
            }]
        );

        let id2 = self.write_local(remove("m", "k", ts(2))).await.unwrap();
        assert!(id2 > id1);
        let r = record(self, "m", "k").await;
        assert!(r.is_deleted() && r.dirty && r.timestamp == ts(2));
        let ops = all_pending(self).await;
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[1].id, ops[1].op_type), (id2, OpType::Remove));

        // A local write replaces the record whatever its timestamp.
        let mut with_ttl = put("m", "k", b"v3", ts(0));
        with_ttl.ttl_ms = Some(5_000);
        let id3 = self.write_local(with_ttl).await.unwrap();
        assert!(id3 > id2);
        let r = record(self, "m", "k").await;
        assert_eq!((r.ttl_ms, r.timestamp.clone()), (Some(5_000), ts(0)));
        assert_eq!(all_pending(self).await[2].ttl_ms, Some(5_000));

        // Many writes, in order.
        let mut last = id3;
        for i in 0..20 {
            let id = self
                .write_local(put("m", &format!("n{i}"), b"x", ts(10 + i)))
                .await
                .unwrap();
            assert!(id > last);
            last = id;
        }
        let stats = self.stats().await.unwrap();
        assert_eq!(
            (stats.records, stats.dirty_records, stats.pending_ops),
            (21, 21, 23)
        );
    }

    /// `write_local_checked` writes only over an older record (or none),
    /// answers the record it replaced, and refuses a stamp that is not
    /// newer with `Stale` and the stored stamp, writing nothing.
    async fn write_local_checked_refuses_stale_stamps(&self) {
        let (id1, previous) = self
            .write_local_checked(put("m", "k", b"v1", ts(5)))
            .await
            .unwrap();
        assert_eq!(previous, None);
        let (id2, previous) = self
            .write_local_checked(put("m", "k", b"v2", ts(6)))
            .await
            .unwrap();
        assert!(id2 > id1);
        let previous = previous.expect("the replaced record");
        assert_eq!(
            (previous.value.as_deref(), previous.timestamp),
            (Some(&b"v1"[..]), ts(5))
        );
        for stale in [ts(6), ts(4)] {
            match self.write_local_checked(put("m", "k", b"old", stale)).await {
                Err(StorageError::Stale { current }) => assert_eq!(current, ts(6)),
                other => panic!("expected Stale, got {other:?}"),
            }
        }
        assert_eq!(
            record(self, "m", "k").await.value.as_deref(),
            Some(&b"v2"[..])
        );
        assert_eq!(
            all_pending(self).await.len(),
            2,
            "a refused write adds no op"
        );
        // A remote record newer than the client's clock refuses it too.
        self.apply_remote(vec![StoreRecord {
            map_name: "m".into(),
            key: "r".into(),
            value: Some(b"remote".to_vec()),
            timestamp: ts(100),
            ttl_ms: None,
            dirty: false,
        }])
        .await
        .unwrap();
        assert!(matches!(
            self.write_local_checked(put("m", "r", b"local", ts(50)))
                .await,
            Err(StorageError::Stale { .. })
        ));
        assert_invalid(
            self.write_local_checked(put("m", "", b"v", ts(200)))
                .await
                .map(|(id, _)| id),
            "empty key",
        );
    }

    /// `write_local_checked_many` answers each write as
    /// `write_local_checked` would: new keys and keys over older records
    /// are written (with the record replaced), a stale stamp and an
    /// invalid write are refused alone; each stored write logs its op.
    async fn write_local_checked_many_answers_each_write(&self) {
        assert!(self.write_local_checked_many(Vec::new()).await.is_empty());
        self.write_local(put("m", "old", b"v1", ts(5)))
            .await
            .unwrap();
        self.write_local(put("m", "new", b"v1", ts(9)))
            .await
            .unwrap();
        let mut answers = self
            .write_local_checked_many(vec![
                put("m", "a", b"a", ts(10)),
                put("m", "old", b"v2", ts(11)),
                put("m", "new", b"stale", ts(8)),
                put("m", "", b"x", ts(12)),
                remove("n", "b", ts(13)),
            ])
            .await
            .into_iter();
        let (a, previous) = answers.next().unwrap().unwrap();
        assert_eq!(previous, None);
        let (old, previous) = answers.next().unwrap().unwrap();
        let previous = previous.expect("the replaced record");
        assert_eq!(
            (previous.value.as_deref(), previous.timestamp),
            (Some(&b"v1"[..]), ts(5))
        );
        match answers.next().unwrap() {
            Err(StorageError::Stale { current }) => assert_eq!(current, ts(9)),
            other => panic!("expected Stale, got {other:?}"),
        }
        assert_invalid(answers.next().unwrap(), "empty key");
        let (b, previous) = answers.next().unwrap().unwrap();
        assert_eq!(previous, None);
        assert!(answers.next().is_none(), "one answer per write");
        let values: Vec<_> = all_records(self, "m")
            .await
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        assert_eq!(
            values,
            vec![
                ("a".to_owned(), Some(b"a".to_vec())),
                ("new".to_owned(), Some(b"v1".to_vec())),
                ("old".to_owned(), Some(b"v2".to_vec())),
            ]
        );
        assert!(record(self, "n", "b").await.value.is_none(), "a tombstone");
        let logged: Vec<_> = all_pending(self)
            .await
            .into_iter()
            .map(|op| (op.id, op.key))
            .collect();
        let mut batch: Vec<(OpId, &str)> = logged[2..]
            .iter()
            .map(|(id, key)| (*id, key.as_str()))
            .collect();
        batch.sort_unstable();
        let mut expected = [(a, "a"), (old, "old"), (b, "b")];
        expected.sort_unstable();
        assert_eq!(batch, expected, "one op per stored write, with its id");
    }

    /// Invalid writes are rejected with `InvalidInput` and store nothing.
    async fn write_local_rejects_invalid_input(&self) {
        assert_invalid(
            self.write_local(put("", "k", b"v", ts(1))).await,
            "empty map",
        );
        assert_invalid(
            self.write_local(put("m", "", b"v", ts(1))).await,
            "empty key",
        );
        let mut clear = put("m", "k", b"v", ts(1));
        clear.op_type = OpType::Clear;
        assert_invalid(self.write_local(clear).await, "Clear op");
        let mut put_without_value = put("m", "k", b"v", ts(1));
        put_without_value.value = None;
        assert_invalid(
            self.write_local(put_without_value).await,
            "Put without value",
        );
        let mut remove_with_value = remove("m", "k", ts(1));
        remove_with_value.value = Some(b"v".to_vec());
        assert_invalid(
            self.write_local(remove_with_value).await,
            "Remove with value",
        );

        assert_eq!(self.stats().await.unwrap(), StoreStats::default());
        assert!(all_pending(self).await.is_empty());
        assert!(self.map_names().await.unwrap().is_empty());
        assert!(self.get("m", "k").await.unwrap().is_none());
        // Rejected writes consume no op id.
        let id = self.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
        assert_eq!(id, 1);
    }

    /// `get` of an unknown key, another map's key or empty names is `None`.
    async fn get_returns_none_for_unknown_keys(&self) {
        self.write_local(put("a", "k", b"v", ts(1))).await.unwrap();
        assert!(self.get("a", "other").await.unwrap().is_none());
        assert!(self.get("ab", "k").await.unwrap().is_none());
        assert!(self.get("", "k").await.unwrap().is_none());
        assert!(self.get("a", "").await.unwrap().is_none());
        assert!(self.get("a", "k").await.unwrap().is_some());
    }

    /// `get_many` answers each key as `get` does, in the order asked
    /// (duplicates, unknown and empty keys included).
    async fn get_many_answers_like_get_in_key_order_given(&self) {
        self.write_local(put("m", "a", b"1", ts(1))).await.unwrap();
        self.write_local(put("m", "b", b"2", ts(2))).await.unwrap();
        self.write_local(remove("m", "c", ts(3))).await.unwrap();
        self.write_local(put("other", "a", b"x", ts(4)))
            .await
            .unwrap();
        let keys: Vec<String> = ["b", "missing", "a", "", "c", "a"]
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        let many = self.get_many("m", &keys).await.unwrap();
        let mut one_by_one = Vec::new();
        for key in &keys {
            one_by_one.push(self.get("m", key).await.unwrap());
        }
        assert_eq!(many, one_by_one);
        assert_eq!(many[0].as_ref().unwrap().value.as_deref(), Some(&b"2"[..]));
        assert!(many[4].as_ref().unwrap().is_deleted());
        assert!(self.get_many("m", &[]).await.unwrap().is_empty());
        assert_eq!(self.get_many("", &keys[..1]).await.unwrap(), vec![None]);
    }

    /// `scan` pages through one map in key order (`str`'s: by code
    /// point, so a character past U+FFFF after U+FFFD), tombstones
    /// included, with no separator reserved in map names or keys.
    async fn scan_pages_in_key_order(&self) {
        let odd = [
            "b",
            "a:1",
            "a/2",
            "a\0z",
            "\0",
            "é",
            "日本",
            "z",
            "A",
            "a",
            "a b",
            "\u{e000}",
            "\u{fffd}",
            "😀",
            "日本😀",
            "\u{ffff}",
            "\u{d7ff}",
        ];
        for (i, key) in odd.iter().enumerate() {
            self.write_local(put("a", key, key.as_bytes(), ts(i as u64 + 1)))
                .await
                .unwrap();
        }
        self.write_local(remove("a", "z", ts(50))).await.unwrap();
        for (map, key) in [("ab", "k"), ("a\0", "k"), ("a:", "k"), ("b", "a")] {
            self.write_local(put(map, key, b"other", ts(60)))
                .await
                .unwrap();
        }
        let mut expected: Vec<&str> = odd.to_vec();
        expected.sort_unstable();

        for page in [1, 2, 3, 100] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let rows = self.scan("a", after.as_deref(), page).await.unwrap();
                assert!(rows.len() <= page);
                if rows.len() < page {
                    // A short page is the last.
                    let rest = expected.len() - seen.len();
                    assert_eq!(rows.len(), rest, "page size {page}");
                }
                let Some(last) = rows.last() else { break };
                after = Some(last.key.clone());
                assert!(rows.iter().all(|r| r.map_name == "a"));
                seen.extend(rows.into_iter().map(|r| r.key));
            }
            assert_eq!(seen, expected, "page size {page}");
        }
        let all = all_records(self, "a").await;
        assert!(all.iter().find(|r| r.key == "z").unwrap().is_deleted());
        assert_eq!(keys(&all_records(self, "ab").await), ["k"]);
        assert_eq!(keys(&all_records(self, "a\0").await), ["k"]);
        assert_eq!(keys(&all_records(self, "a:").await), ["k"]);
        assert!(self.scan("a", None, 0).await.unwrap().is_empty());
        let last = expected.last().copied();
        assert!(self.scan("a", last, 10).await.unwrap().is_empty());
        assert!(self.scan("none", None, 10).await.unwrap().is_empty());
        assert!(self.scan("", None, 10).await.unwrap().is_empty());
        // `after` need not exist: the page starts at the next greater key.
        assert_eq!(
            keys(&self.scan("a", Some("a;"), 2).await.unwrap()),
            ["b", "z"]
        );
        assert_eq!(keys(&self.scan("a", Some(""), 1).await.unwrap()), ["\0"]);
    }

    /// `scan_in_store_order` pages through the same records as `scan`
    /// (tombstones included, other maps left out), each once, in one fixed
    /// order, whatever the page size; `scan_stamps_in_store_order` gives
    /// their keys and timestamps in that order.
    async fn scan_in_store_order_pages_through_every_record_once(&self) {
        for i in 0..300u64 {
            let key = format!("key-{}", i * 7919 % 1000);
            self.write_local(put("a", &key, b"v", ts(i + 1)))
                .await
                .unwrap();
        }
        self.write_local(remove("a", "key-0", ts(400)))
            .await
            .unwrap();
        for (map, key) in [("ab", "k"), ("a\0", "k"), ("b", "a")] {
            self.write_local(put(map, key, b"other", ts(500)))
                .await
                .unwrap();
        }
        let mut expected = all_records(self, "a").await;
        assert_eq!(expected.len(), 300);
        let mut first_order: Option<Vec<String>> = None;
        for page in [1, 7, 64, 1000] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let rows = self
                    .scan_in_store_order("a", after.as_deref(), page)
                    .await
                    .unwrap();
                assert!(rows.len() <= page);
                let short = rows.len() < page;
                if let Some(last) = rows.last() {
                    after = Some(last.key.clone());
                }
                seen.extend(rows);
                if short {
                    break;
                }
            }
            let order: Vec<String> = seen.iter().map(|r| r.key.clone()).collect();
            let mut stamps = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let rows = self
                    .scan_stamps_in_store_order("a", after.as_deref(), page)
                    .await
                    .unwrap();
                let short = rows.len() < page;
                if let Some(last) = rows.last() {
                    after = Some(last.key.clone());
                }
                stamps.extend(rows);
                if short {
                    break;
                }
            }
            let stamp_keys: Vec<&str> = stamps.iter().map(|s| s.key.as_str()).collect();
            assert_eq!(stamp_keys, order, "stamps, page size {page}");
            assert!(stamps
                .iter()
                .zip(&seen)
                .all(|(stamp, record)| stamp.timestamp == record.timestamp));
            match &first_order {
                Some(first) => assert_eq!(&order, first, "page size {page}"),
                None => first_order = Some(order),
            }
            seen.sort_by(|a, b| a.key.cmp(&b.key));
            expected.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(seen, expected, "page size {page}");
        }
        assert!(self
            .scan_in_store_order("a", None, 0)
            .await
            .unwrap()
            .is_empty());
        assert!(self
            .scan_in_store_order("none", None, 9)
            .await
            .unwrap()
            .is_empty());
    }

    /// `scan_stamps` gives `scan`'s keys and timestamps, tombstones and
    /// paging rules included.
    async fn scan_stamps_match_scan(&self) {
        for i in 0..7u64 {
            let key = format!("k{i}");
            self.write_local(put("m", &key, b"v", ts(i + 1)))
                .await
                .unwrap();
        }
        self.write_local(remove("m", "k3", ts(20))).await.unwrap();
        self.apply_remote(vec![remote("m", "r", Some(b"x"), ts(30))])
            .await
            .unwrap();
        let mut with_ttl = put("m", "t", b"v", ts(35));
        with_ttl.ttl_ms = Some(60_000);
        self.write_local(with_ttl).await.unwrap();
        self.write_local(put("m2", "k0", b"v", ts(40)))
            .await
            .unwrap();
        for page in [1, 3, 8, 100] {
            let mut after: Option<String> = None;
            loop {
                let records = self.scan("m", after.as_deref(), page).await.unwrap();
                let stamps = self.scan_stamps("m", after.as_deref(), page).await.unwrap();
                let expected: Vec<KeyStamp> = records
                    .iter()
                    .map(|r| KeyStamp {
                        key: r.key.clone(),
                        timestamp: r.timestamp.clone(),
                    })
                    .collect();
                assert_eq!(stamps, expected, "page size {page}");
                let Some(last) = records.last() else { break };
                after = Some(last.key.clone());
            }
        }
        assert!(self.scan_stamps("m", None, 0).await.unwrap().is_empty());
        assert!(self.scan_stamps("none", None, 5).await.unwrap().is_empty());
        assert!(self.scan_stamps("", None, 5).await.unwrap().is_empty());
    }

    /// `dirty_records` lists only dirty records of one map, in key order.
    async fn dirty_records_lists_dirty_records_in_key_order(&self) {
        let mut ids = Vec::new();
        for (i, key) in ["e", "a", "d", "b", "c"].iter().enumerate() {
            ids.push(
                self.write_local(put("m", key, b"v", ts(i as u64 + 1)))
                    .await
                    .unwrap(),
            );
        }
        self.write_local(put("mm", "a", b"v", ts(9))).await.unwrap();
        self.apply_remote(vec![remote("m", "f", Some(b"r"), ts(9))])
            .await
            .unwrap();
        // "e" (ids[0]) and "d" (ids[2]) become clean.
        self.mark_synced(&[ids[0], ids[2]]).await.unwrap();
        let all = self.dirty_records("m", None, 100).await.unwrap();
        assert_eq!(keys(&all), ["a", "b", "c"]);
        assert!(all.iter().all(|r| r.dirty && r.map_name == "m"));
        let first = self.dirty_records("m", None, 2).await.unwrap();
        assert_eq!(keys(&first), ["a", "b"]);
        let rest = self.dirty_records("m", Some("b"), 2).await.unwrap();
        assert_eq!(keys(&rest), ["c"]);
        assert!(self
            .dirty_records("m", Some("c"), 2)
            .await
            .unwrap()
            .is_empty());
        assert!(self.dirty_records("m", None, 0).await.unwrap().is_empty());
        assert_eq!(
            keys(&self.dirty_records("mm", None, 9).await.unwrap()),
            ["a"]
        );
        assert!(self.dirty_records("", None, 9).await.unwrap().is_empty());
    }

    /// `dirty_records` lists each dirty record once however many ops wrote
    /// it, skips records a remote write cleaned, and lists the tombstones
    /// of a pending `Clear` until it is synced.
    async fn dirty_records_follow_clears_and_repeated_writes(&self) {
        self.write_local(put("m", "b", b"1", ts(1))).await.unwrap();
        self.write_local(put("m", "b", b"2", ts(2))).await.unwrap();
        let a = self.write_local(put("m", "a", b"1", ts(3))).await.unwrap();
        self.write_local(put("m", "r", b"1", ts(4))).await.unwrap();
        self.apply_remote(vec![remote("m", "r", Some(b"s"), ts(5))])
            .await
            .unwrap();
        assert_eq!(
            keys(&self.dirty_records("m", None, 9).await.unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            keys(&self.dirty_records("m", Some("a"), 9).await.unwrap()),
            ["b"]
        );

        self.apply_remote(vec![remote("m", "c", Some(b"1"), ts(6))])
            .await
            .unwrap();
        self.mark_synced(&[a]).await.unwrap();
        let clear = self.clear_map("m", ts(7)).await.unwrap();
        assert_eq!(clear.removed_keys, ["a", "b", "c", "r"]);
        self.write_local(put("m", "d", b"1", ts(8))).await.unwrap();
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.dirty_records("m", after.as_deref(), 2).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            paged.extend(page);
        }
        assert_eq!(keys(&paged), ["a", "b", "c", "d", "r"]);
        assert!(paged.iter().all(|r| r.dirty));

        self.mark_synced(&[clear.op_id]).await.unwrap();
        assert_eq!(
            keys(&self.dirty_records("m", None, 9).await.unwrap()),
            ["d"]
        );
        assert_eq!(self.stats().await.unwrap().dirty_records, 1);
    }

    /// `pending_ops` pages by id cursor and skips synced ops.
    async fn pending_ops_pages_by_cursor(&self) {
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(
                self.write_local(put("m", &format!("k{i}"), b"v", ts(i + 1)))
                    .await
                    .unwrap(),
            );
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = self.pending_ops(after, 3).await.unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            seen.extend(page.iter().map(|op| op.id));
        }
        assert_eq!(seen, ids);
        assert!(self.pending_ops(None, 0).await.unwrap().is_empty());
        assert!(self.pending_ops(Some(ids[6]), 9).await.unwrap().is_empty());
        assert_eq!(self.pending_ops(Some(0), 9).await.unwrap().len(), 7);

        self.mark_synced(&[ids[1], ids[4]]).await.unwrap();
        let left: Vec<OpId> = all_pending(self).await.iter().map(|op| op.id).collect();
        assert_eq!(left, [ids[0], ids[2], ids[3], ids[5], ids[6]]);
        let page = self.pending_ops(Some(ids[0]), 2).await.unwrap();
        assert_eq!(
            page.iter().map(|op| op.id).collect::<Vec<_>>(),
            [ids[2], ids[3]]
        );
        assert!(all_pending(self).await.iter().all(|op| !op.synced));
    }

    /// `mark_synced` cleans a record only while it carries the op's
    /// timestamp, and ignores unknown, synced and repeated ids.
    async fn mark_synced_cleans_only_records_at_the_op_timestamp(&self) {
        let op1 = self.write_local(put("m", "k", b"1", ts(1))).await.unwrap();
        let op2 = self.write_local(put("m", "k", b"2", ts(2))).await.unwrap();
        assert_eq!(self.mark_synced(&[op1]).await.unwrap(), 1);
        assert!(
            record(self, "m", "k").await.dirty,
            "a newer write keeps it dirty"
        );
        assert_eq!(self.mark_synced(&[op2, op2, 9_999]).await.unwrap(), 1);
        assert!(!record(self, "m", "k").await.dirty);
        assert_eq!(self.mark_synced(&[op1, op2]).await.unwrap(), 0);
        assert_eq!(self.mark_synced(&[]).await.unwrap(), 0);
        assert!(all_pending(self).await.is_empty());

        // A newer remote record already made the record clean.
        let op3 = self.write_local(put("m", "j", b"3", ts(3))).await.unwrap();
        self.apply_remote(vec![remote("m", "j", Some(b"r"), ts(4))])
            .await
            .unwrap();
        assert_eq!(self.mark_synced(&[op3]).await.unwrap(), 1);
        let r = record(self, "m", "j").await;
        assert_eq!((r.value.as_deref(), r.dirty), (Some(&b"r"[..]), false));

        // A remove's tombstone is cleaned like a put.
        let op4 = self.write_local(remove("m", "k", ts(5))).await.unwrap();
        assert!(record(self, "m", "k").await.dirty);
        self.mark_synced(&[op4]).await.unwrap();
        let r = record(self, "m", "k").await;
        assert!(r.is_deleted() && !r.dirty);
        assert_eq!(self.stats().await.unwrap().dirty_records, 0);
    }

    /// Syncing a `Clear` op cleans the tombstones it wrote, not records
    /// written after it.
    async fn mark_synced_clear_op_cleans_its_tombstones(&self) {
        let a = self.write_local(put("m", "a", b"1", ts(1))).await.unwrap();
        let b = self.write_local(put("m", "b", b"1", ts(2))).await.unwrap();
        let other = self.write_local(put("mm", "a", b"1", ts(2))).await.unwrap();
        self.mark_synced(&[a, b]).await.unwrap();
        let clear = self.clear_map("m", ts(3)).await.unwrap();
        self.write_local(put("m", "b", b"2", ts(4))).await.unwrap();
        assert_eq!(self.mark_synced(&[clear.op_id]).await.unwrap(), 1);
        let ra = record(self, "m", "a").await;
        assert!(ra.is_deleted() && !ra.dirty);
        assert!(record(self, "m", "b").await.dirty);
        assert!(record(self, "mm", "a").await.dirty, "other maps untouched");
        assert!(all_pending(self).await.iter().any(|op| op.id == other));
    }

    /// `acknowledge` = `mark_synced` + deleting those ops, in one step.
    async fn acknowledge_cleans_and_deletes_the_ops(&self) {
        let op1 = self.write_local(put("m", "k", b"1", ts(1))).await.unwrap();
        let op2 = self.write_local(put("m", "k", b"2", ts(2))).await.unwrap();
        let op3 = self.write_local(put("m", "j", b"3", ts(3))).await.unwrap();
        let before = self.stats().await.unwrap();
        assert_eq!(self.acknowledge(&[op1, 9_999]).await.unwrap(), 1);
        assert!(
            record(self, "m", "k").await.dirty,
            "a newer write keeps it dirty"
        );
        let after = self.stats().await.unwrap();
        assert_eq!(after.pending_ops, 2);
        assert!(
            after.bytes < before.bytes,
            "the op is gone, not kept as synced"
        );
        assert_eq!(
            self.drop_synced_ops().await.unwrap(),
            0,
            "nothing left to drop"
        );
        assert_eq!(self.acknowledge(&[op2, op3, op2]).await.unwrap(), 2);
        assert!(!record(self, "m", "k").await.dirty);
        assert!(!record(self, "m", "j").await.dirty);
        assert!(all_pending(self).await.is_empty());
        assert_eq!(self.stats().await.unwrap().dirty_records, 0);
        assert_eq!(self.acknowledge(&[op1]).await.unwrap(), 0);
    }

    /// `drop_synced_ops` deletes synced ops only; ids are never reused.
    async fn drop_synced_ops_keeps_pending_and_never_reuses_ids(&self) {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                self.write_local(put("m", &format!("k{i}"), b"v", ts(i + 1)))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(self.drop_synced_ops().await.unwrap(), 0);
        let before = self.stats().await.unwrap();
        self.mark_synced(&[ids[1], ids[2]]).await.unwrap();
        assert_eq!(self.stats().await.unwrap().bytes, before.bytes);
        assert_eq!(self.drop_synced_ops().await.unwrap(), 2);
        assert_eq!(self.drop_synced_ops().await.unwrap(), 0);
        let after = self.stats().await.unwrap();
        assert!(after.bytes < before.bytes);
        assert_eq!(after.pending_ops, 1);
        assert_eq!(all_pending(self).await[0].id, ids[0]);
        // Marking a dropped op again changes nothing.
        assert_eq!(self.mark_synced(&[ids[1]]).await.unwrap(), 0);
        let next = self.write_local(put("m", "k9", b"v", ts(9))).await.unwrap();
        assert!(next > ids[2], "id {next} reused");
    }

    /// `apply_remote` replaces only on a strictly greater timestamp,
    /// stores clean records and reports previous states.
    async fn apply_remote_is_last_writer_wins(&self) {
        assert!(self.apply_remote(Vec::new()).await.unwrap().is_empty());
        let mut dirty_input = remote("m", "k", Some(b"r1"), ts(5));
        dirty_input.dirty = true;
        let changes = self.apply_remote(vec![dirty_input]).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].previous.is_none());
        assert!(!changes[0].current.dirty);
        assert!(!record(self, "m", "k").await.dirty);

        let equal = remote("m", "k", Some(b"same-ts"), ts(5));
        let older = remote("m", "k", Some(b"older"), ts(4));
        let other_node = remote("m", "k", Some(b"b"), Timestamp::new(5, 0, "node-b"));
        let changes = self.apply_remote(vec![equal, older]).await.unwrap();
        assert!(changes.is_empty());
        assert_eq!(
            record(self, "m", "k").await.value.as_deref(),
            Some(&b"r1"[..])
        );
        // The node id breaks ties: "node-b" > "node-a".
        let changes = self.apply_remote(vec![other_node.clone()]).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].previous.as_ref().unwrap().timestamp, ts(5));
        assert_eq!(changes[0].current, other_node);

        // A newer remote record replaces a dirty local one and cleans it;
        // the local op stays pending.
        let op = self
            .write_local(put("m", "l", b"local", ts(10)))
            .await
            .unwrap();
        let newer = remote("m", "l", None, ts(11));
        let changes = self.apply_remote(vec![newer.clone()]).await.unwrap();
        let previous = changes[0].previous.as_ref().unwrap();
        assert!(previous.dirty && previous.value.as_deref() == Some(&b"local"[..]));
        assert_eq!(record(self, "m", "l").await, newer);
        assert_eq!(self.stats().await.unwrap().dirty_records, 0);
        assert_eq!(all_pending(self).await[0].id, op);

        // Duplicates compete in input order.
        let changes = self
            .apply_remote(vec![
                remote("m", "d", Some(b"1"), ts(20)),
                remote("m", "d", Some(b"2"), ts(21)),
                remote("m", "d", Some(b"3"), ts(20)),
            ])
            .await
            .unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            record(self, "m", "d").await.value.as_deref(),
            Some(&b"2"[..])
        );

        // Invalid input applies nothing.
        let stats = self.stats().await.unwrap();
        let bad = vec![
            remote("m", "new", Some(b"x"), ts(30)),
            remote("m", "", None, ts(30)),
        ];
        assert_invalid(self.apply_remote(bad).await, "empty key");
        assert_invalid(
            self.apply_remote(vec![remote("", "k", None, ts(30))]).await,
            "empty map",
        );
        assert!(self.get("m", "new").await.unwrap().is_none());
        assert_eq!(self.stats().await.unwrap(), stats);
    }

    /// A merge of thousands of new keys with stored ones among them keeps
    /// the LWW rule for each stored one (newer and equal stored records
    /// stay, older ones are replaced and reported) and for a key given
    /// twice, reports each change with its own record, replaces a pruned
    /// key's kept Merkle contribution, and the stats and Merkle sums match
    /// the records afterwards: a store may write a merge differently once
    /// it finds most keys absent.
    async fn a_large_merge_among_stored_keys_is_last_writer_wins(&self) {
        let stored: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
        for (i, key) in stored.iter().enumerate() {
            match i % 3 {
                0 => {
                    self.write_local(put("m", key, b"local", ts(100)))
                        .await
                        .unwrap();
                }
                1 => {
                    self.apply_remote(vec![remote("m", key, Some(b"old"), ts(50))])
                        .await
                        .unwrap();
                }
                _ => {
                    self.apply_remote(vec![remote("m", key, Some(b"same"), ts(100))])
                        .await
                        .unwrap();
                }
            }
        }
        // A pruned key whose Merkle contribution is kept until it is
        // written again.
        self.apply_remote(vec![remote("m", "q", Some(b"q-old"), ts(40))])
            .await
            .unwrap();
        assert_eq!(
            self.prune_clean("m", &["q".to_owned()], PruneSums::Keep)
                .await
                .unwrap(),
            ["q"]
        );
        let mut merge: Vec<StoreRecord> = (0..4_000)
            .map(|j| remote("m", &format!("n{j:04}"), Some(b"new"), ts(100)))
            .collect();
        merge.extend(
            stored
                .iter()
                .map(|key| remote("m", key, Some(b"remote"), ts(100))),
        );
        // A new key twice (the later copy older: the first stays), and
        // the pruned key.
        merge.push(remote("m", "dup", Some(b"first"), ts(300)));
        merge.push(remote("m", "dup", Some(b"second"), ts(200)));
        merge.push(remote("m", "q", Some(b"q-new"), ts(100)));
        let changes = self.apply_remote(merge).await.unwrap();
        assert_eq!(changes.len(), 4_000 + 20 + 2);
        for change in &changes {
            let key = change.current.key.as_str();
            let expected: &[u8] = match key {
                "dup" => b"first",
                "q" => b"q-new",
                _ if key.starts_with('n') => b"new",
                _ => b"remote",
            };
            assert_eq!(change.current.value.as_deref(), Some(expected), "{key}");
            assert!(!change.current.dirty);
        }
        let replaced: Vec<&StoreRecord> =
            changes.iter().filter_map(|c| c.previous.as_ref()).collect();
        assert_eq!(replaced.len(), 20, "only the older stored records");
        assert!(replaced
            .iter()
            .all(|p| p.value.as_deref() == Some(&b"old"[..]) && p.timestamp == ts(50)));
        for (i, key) in stored.iter().enumerate() {
            let now = record(self, "m", key).await;
            let (value, dirty): (&[u8], bool) = match i % 3 {
                0 => (b"local", true),
                1 => (b"remote", false),
                _ => (b"same", false),
            };
            assert_eq!(
                (now.value.as_deref(), now.dirty),
                (Some(value), dirty),
                "{key}"
            );
        }
        assert_eq!(
            record(self, "m", "dup").await.value.as_deref(),
            Some(&b"first"[..])
        );
        let records = all_records(self, "m").await;
        assert_eq!(records.len(), 4_062);
        let pending = all_pending(self).await;
        let stats = self.stats().await.unwrap();
        assert_eq!(stats.records, 4_062);
        assert_eq!(stats.dirty_records, 20);
        assert_eq!(
            stats.bytes,
            records.iter().map(StoreRecord::approx_size).sum::<u64>()
                + pending.iter().map(OpLogEntry::approx_size).sum::<u64>()
        );
        let mut leaves = vec![0u32; topgun_core::merkle::LEAVES];
        for r in &records {
            let t = &r.timestamp;
            let (leaf, c) =
                topgun_core::MerkleSums::contribution(&r.key, t.millis, t.counter, &t.node_id);
            leaves[leaf] = leaves[leaf].wrapping_add(c);
        }
        assert_eq!(self.merkle_leaves("m").await.unwrap(), leaves);
    }

    /// `apply_remote_relaxed` merges exactly as `apply_remote` does (only
    /// its durability differs, which a running store cannot show), and a
    /// durable write after it leaves both in place.
    async fn apply_remote_relaxed_merges_like_apply_remote(&self) {
        assert!(self
            .apply_remote_relaxed(Vec::new())
            .await
            .unwrap()
            .is_empty());
        let op = self
            .write_local(put("m", "l", b"local", ts(10)))
            .await
            .unwrap();
        let changes = self
            .apply_remote_relaxed(vec![
                remote("m", "k", Some(b"1"), ts(5)),
                remote("m", "k", Some(b"older"), ts(4)),
                remote("m", "l", None, ts(11)),
            ])
            .await
            .unwrap();
        assert_eq!(changes.len(), 2, "the older duplicate loses");
        assert!(changes[0].previous.is_none());
        assert!(changes[1].previous.as_ref().unwrap().dirty);
        assert_eq!(record(self, "m", "l").await, remote("m", "l", None, ts(11)));
        assert_eq!(self.stats().await.unwrap().dirty_records, 0);
        assert_eq!(
            all_pending(self).await[0].id,
            op,
            "the local op stays pending"
        );
        // An equal timestamp keeps the stored record.
        let same = remote("m", "k", Some(b"same-ts"), ts(5));
        assert!(self
            .apply_remote_relaxed(vec![same])
            .await
            .unwrap()
            .is_empty());
        // A durable write afterwards commits on top of the relaxed ones.
        self.write_local(put("m", "n", b"v", ts(12))).await.unwrap();
        assert_eq!(keys(&all_records(self, "m").await), ["k", "l", "n"]);
        assert_eq!(
            record(self, "m", "k").await.value.as_deref(),
            Some(&b"1"[..])
        );
        // Invalid input applies nothing.
        let stats = self.stats().await.unwrap();
        let bad = vec![
            remote("m", "new", Some(b"x"), ts(30)),
            remote("m", "", None, ts(30)),
        ];
        assert_invalid(self.apply_remote_relaxed(bad).await, "empty key");
        assert!(self.get("m", "new").await.unwrap().is_none());
        assert_eq!(self.stats().await.unwrap(), stats);
    }

    /// A record newer than the clear (a write that raced it) survives it.
    async fn clear_map_keeps_records_newer_than_the_clear(&self) {
        self.write_local(put("m", "old", b"1", ts(1)))
            .await
            .unwrap();
        self.write_local(put("m", "new", b"2", ts(5)))
            .await
            .unwrap();
        let outcome = self.clear_map("m", ts(3)).await.unwrap();
        assert_eq!(outcome.removed_keys, ["old"]);
        assert!(record(self, "m", "old").await.is_deleted());
        let kept = record(self, "m", "new").await;
        assert_eq!(
            (kept.value.as_deref(), kept.timestamp),
            (Some(&b"2"[..]), ts(5))
        );
    }

    /// `clear_map` turns live records into dirty tombstones and appends
    /// one `Clear` op; other maps and existing tombstones are untouched.
    async fn clear_map_tombstones_live_records(&self) {
        self.apply_remote(vec![remote("a", "k1", Some(b"1"), ts(1))])
            .await
            .unwrap();
        self.write_local(remove("a", "k2", ts(2))).await.unwrap();
        let mut live = put("a", "k3", b"3", ts(3));
        live.ttl_ms = Some(10);
        self.write_local(live).await.unwrap();
        self.write_local(put("ab", "k1", b"x", ts(3)))
            .await
            .unwrap();
        self.write_local(put("a\0", "k1", b"x", ts(3)))
            .await
            .unwrap();
        let last = all_pending(self).await.last().unwrap().id;

        let outcome = self.clear_map("a", ts(9)).await.unwrap();
        assert_eq!(outcome.removed_keys, ["k1", "k3"]);
        assert!(outcome.op_id > last);
        for key in ["k1", "k3"] {
            let r = record(self, "a", key).await;
            assert!(r.is_deleted() && r.dirty, "{key}");
            assert_eq!((r.timestamp, r.ttl_ms), (ts(9), None));
        }
        assert_eq!(record(self, "a", "k2").await.timestamp, ts(2));
        assert!(!record(self, "ab", "k1").await.is_deleted());
        assert!(!record(self, "a\0", "k1").await.is_deleted());
        let op = all_pending(self).await.pop().unwrap();
        assert_eq!(
            op,
            OpLogEntry {
                id: outcome.op_id,
                map_name: "a".into(),
                op_type: OpType::Clear,
                key: String::new(),
                value: None,
                timestamp: ts(9),
                ttl_ms: None,
                synced: false,
            }
        );

        // Clearing a map with nothing live still logs the clear.
        let again = self.clear_map("a", ts(10)).await.unwrap();
        assert!(again.removed_keys.is_empty() && again.op_id > outcome.op_id);
        let unknown = self.clear_map("unknown", ts(11)).await.unwrap();
        assert!(unknown.removed_keys.is_empty());
        assert!(self.get("unknown", "k1").await.unwrap().is_none());
        assert_invalid(self.clear_map("", ts(12)).await, "empty map");
        assert_eq!(all_pending(self).await.len(), 7);
    }

    /// `prune_clean` removes clean records no pending op refers to.
    async fn prune_clean_removes_only_clean_unreferenced_records(&self) {
        self.apply_remote(vec![
            remote("m", "a", Some(b"a"), ts(1)),
            remote("m", "d", Some(b"d"), ts(1)),
            remote("mm", "a", Some(b"a"), ts(1)),
        ])
        .await
        .unwrap();
        self.write_local(put("m", "b", b"b", ts(2))).await.unwrap();
        let c1 = self.write_local(put("m", "c", b"1", ts(3))).await.unwrap();
        let c2 = self.write_local(put("m", "c", b"2", ts(4))).await.unwrap();
        self.mark_synced(&[c2]).await.unwrap();
        assert!(!record(self, "m", "c").await.dirty);

        let asked: Vec<String> = ["a", "b", "c", "x", "a"].map(String::from).to_vec();
        assert_eq!(
            self.prune_clean("m", &asked, PruneSums::Keep)
                .await
                .unwrap(),
            ["a"]
        );
        assert!(self.get("m", "a").await.unwrap().is_none());
        assert!(self.get("mm", "a").await.unwrap().is_some());
        assert!(self.get("m", "b").await.unwrap().is_some());
        assert!(
            self.get("m", "c").await.unwrap().is_some(),
            "op {c1} pending"
        );
        self.mark_synced(&[c1]).await.unwrap();
        let c = vec!["c".to_owned(), "d".to_owned()];
        assert_eq!(
            self.prune_clean("m", &c, PruneSums::Keep).await.unwrap(),
            ["c", "d"]
        );
        assert!(self
            .prune_clean("m", &[], PruneSums::Keep)
            .await
            .unwrap()
            .is_empty());
        assert_invalid(self.prune_clean("", &c, PruneSums::Keep).await, "empty map");

        // A pending clear of the map blocks pruning its records.
        self.apply_remote(vec![remote("z", "f", Some(b"f"), ts(5))])
            .await
            .unwrap();
        let clear = self.clear_map("z", ts(6)).await.unwrap();
        self.apply_remote(vec![remote("z", "f", Some(b"g"), ts(7))])
            .await
            .unwrap();
        let f = vec!["f".to_owned()];
        assert!(self
            .prune_clean("z", &f, PruneSums::Keep)
            .await
            .unwrap()
            .is_empty());
        self.mark_synced(&[clear.op_id]).await.unwrap();
        assert_eq!(
            self.prune_clean("z", &f, PruneSums::Keep).await.unwrap(),
            ["f"]
        );
        let stats = self.stats().await.unwrap();
        assert_eq!(stats.records, 2); // m/b and mm/a
    }

    /// `map_names` lists maps with at least one record, in order.
    async fn map_names_lists_maps_in_order(&self) {
        assert!(self.map_names().await.unwrap().is_empty());
        for map in [
            "b", "a", "ab", "a\0", "a:x", "日本", "a\0\0", "😀", "\u{fffd}",
        ] {
            self.write_local(put(map, "k", b"v", ts(1))).await.unwrap();
        }
        self.write_local(remove("t", "k", ts(1))).await.unwrap();
        self.apply_remote(vec![remote("r", "k", Some(b"v"), ts(1))])
            .await
            .unwrap();
        assert_eq!(
            self.map_names().await.unwrap(),
            ["a", "a\0", "a\0\0", "a:x", "ab", "b", "r", "t", "日本", "\u{fffd}", "😀"]
        );
        self.prune_clean("r", &["k".to_owned()], PruneSums::Keep)
            .await
            .unwrap();
        assert!(!self.map_names().await.unwrap().contains(&"r".to_owned()));
    }

    /// `count_records` counts a map's records, tombstones included, and
    /// not pruned ones.
    async fn count_records_counts_a_maps_records_and_tombstones(&self) {
        assert_eq!(self.count_records("m").await.unwrap(), 0);
        for (map, key) in [
            ("m", "a"),
            ("m", "b"),
            ("m", "c"),
            ("m\0", "a"),
            ("mm", "a"),
        ] {
            self.write_local(put(map, key, b"v", ts(1))).await.unwrap();
        }
        self.write_local(remove("m", "b", ts(2))).await.unwrap();
        self.apply_remote(vec![remote("m", "d", Some(b"v"), ts(1))])
            .await
            .unwrap();
        assert_eq!(self.count_records("m").await.unwrap(), 4);
        assert_eq!(self.count_records("m\0").await.unwrap(), 1);
        assert_eq!(self.count_records("").await.unwrap(), 0);
        self.prune_clean("m", &["d".to_owned()], PruneSums::Keep)
            .await
            .unwrap();
        assert_eq!(self.count_records("m").await.unwrap(), 3);
        self.clear_map("m", ts(5)).await.unwrap();
        assert_eq!(self.count_records("m").await.unwrap(), 3);
    }

    /// Meta values round-trip and are a namespace of their own.
    async fn meta_round_trips(&self) {
        assert!(self.meta_get("k").await.unwrap().is_none());
        self.meta_put("k", b"1".to_vec()).await.unwrap();
        assert_eq!(
            self.meta_get("k").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        self.meta_put("k", b"2".to_vec()).await.unwrap();
        assert_eq!(
            self.meta_get("k").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        self.meta_put("", Vec::new()).await.unwrap();
        assert_eq!(self.meta_get("").await.unwrap().as_deref(), Some(&[][..]));
        self.meta_put("__schema_version", b"x".to_vec())
            .await
            .unwrap();
        self.meta_put("ключ/\0", vec![0, 255]).await.unwrap();
        assert_eq!(
            self.meta_get("ключ/\0").await.unwrap().as_deref(),
            Some(&[0, 255][..])
        );
        assert_eq!(self.stats().await.unwrap(), StoreStats::default());
        assert!(self.map_names().await.unwrap().is_empty());
    }

    /// `stats` counts records, dirty records and pending ops, and sums
    /// approximate sizes.
    async fn stats_track_counts_and_sizes(&self) {
        assert_eq!(self.stats().await.unwrap(), StoreStats::default());
        let a = self
            .write_local(put("m", "a", b"12345", ts(1)))
            .await
            .unwrap();
        self.write_local(put("m", "b", b"1", ts(2))).await.unwrap();
        self.write_local(put("m", "a", b"123", ts(3)))
            .await
            .unwrap();
        self.apply_remote(vec![remote("n", "c", Some(b"xyz"), ts(1))])
            .await
            .unwrap();
        let expected = |records: &[StoreRecord], ops: &[OpLogEntry], extra: u64| StoreStats {
            records: records.len() as u64,
            dirty_records: records.iter().filter(|r| r.dirty).count() as u64,
            pending_ops: ops.len() as u64,
            bytes: records.iter().map(StoreRecord::approx_size).sum::<u64>()
                + ops.iter().map(OpLogEntry::approx_size).sum::<u64>()
                + extra,
        };
        let mut records = all_records(self, "m").await;
        records.extend(all_records(self, "n").await);
        let ops = all_pending(self).await;
        assert_eq!(self.stats().await.unwrap(), expected(&records, &ops, 0));
        assert_eq!(self.stats().await.unwrap().dirty_records, 2);

        let synced_size = ops[0].approx_size();
        self.mark_synced(&[a]).await.unwrap();
        let ops = all_pending(self).await;
        // The synced op counts in `bytes` until dropped.
        assert_eq!(
            self.stats().await.unwrap(),
            expected(&records, &ops, synced_size)
        );
        self.drop_synced_ops().await.unwrap();
        assert_eq!(self.stats().await.unwrap(), expected(&records, &ops, 0));
        self.prune_clean("n", &["c".to_owned()], PruneSums::Keep)
            .await
            .unwrap();
        let records = all_records(self, "m").await;
        assert_eq!(self.stats().await.unwrap(), expected(&records, &ops, 0));
    }

    /// A fixed-seed random sequence of calls, each answer and the whole
    /// state checked against a naive model.
    async fn random_ops_match_model(&self) {
        let mut rng = Rng(0x5EED_70C0_u64);
        let mut model = Model::default();
        for step in 0..300 {
            model.step(self, &mut rng, step).await;
            model.follow_merkle();
            if step % 20 == 19 {
                model.check(self, &mut rng).await;
            }
        }
        model.check(self, &mut rng).await;
    }
}

impl<T: Store + ?Sized> StoreConformance for T {}

/// SplitMix64: a small deterministic generator for the model test.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const MAPS: [&str; 4] = ["a", "ab", "a\0", "m/1"];
const KEYS: [&str; 6] = ["k", "k:1", "é", "\0", "z", "kk"];

/// The naive model of a store.
#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<(String, String), StoreRecord>,
    /// Every op not dropped, with its synced flag.
    ops: BTreeMap<OpId, OpLogEntry>,
    meta: BTreeMap<String, Vec<u8>>,
    /// The timestamp each key last had, records pruned with
    /// `PruneSums::Keep` included: what the Merkle leaf sums sum.
    merkle: BTreeMap<(String, String), Timestamp>,
    /// Keys pruned with `PruneSums::Keep` and not written since.
    pruned: BTreeSet<(String, String)>,
    last_id: OpId,
    clock: u64,
}

impl Model {
    fn follow_merkle(&mut self) {
        for (slot, r) in &self.records {
            self.merkle.insert(slot.clone(), r.timestamp.clone());
            self.pruned.remove(slot);
        }
    }

    fn tick(&mut self, rng: &mut Rng) -> Timestamp {
        self.clock += 1 + rng.below(3);
        Timestamp::new(self.clock, 0, "local")
    }

    /// A remote timestamp near the clock: older, equal or newer than
    /// stored records.
    fn remote_ts(&mut self, rng: &mut Rng, key: &(String, String)) -> Timestamp {
        if let Some(existing) = self.records.get(key) {
            if rng.below(4) == 0 {
                return existing.timestamp.clone();
            }
        }
        let millis = (self.clock + rng.below(7)).saturating_sub(3);
        let node = *rng.pick(&["local", "remote"]);
        Timestamp::new(millis, rng.below(2) as u32, node)
    }

    fn record_id(&mut self, id: OpId) {
        assert!(id > self.last_id, "op id {id} after {}", self.last_id);
        self.last_id = id;
    }

    fn append(&mut self, id: OpId, map: &str, op_type: OpType, key: &str, w: Option<&LocalWrite>) {
        self.record_id(id);
        self.ops.insert(
            id,
            OpLogEntry {
                id,
                map_name: map.into(),
                op_type,
                key: key.into(),
                value: w.and_then(|w| w.value.clone()),
                timestamp: w.map_or_else(
                    || Timestamp::new(self.clock, 0, "local"),
                    |w| w.timestamp.clone(),
                ),
                ttl_ms: w.and_then(|w| w.ttl_ms),
                synced: false,
            },
        );
    }

    async fn step(&mut self, store: &(impl Store + ?Sized), rng: &mut Rng, step: u32) {
        let map = (*rng.pick(&MAPS)).to_owned();
        let key = (*rng.pick(&KEYS)).to_owned();
        let slot = (map.clone(), key.clone());
        match rng.below(100) {
            0..=39 => {
                let timestamp = self.tick(rng);
                let mut write = if rng.below(4) == 0 {
                    remove(&map, &key, timestamp)
                } else {
                    let value = step.to_le_bytes();
                    put(&map, &key, &value, timestamp)
                };
                if write.value.is_some() && rng.below(5) == 0 {
                    write.ttl_ms = Some(rng.below(1000));
                }
                if rng.below(25) == 0 {
                    write.key = String::new();
                    assert_invalid(store.write_local(write).await, "empty key");
                    return;
                }
                let id = store.write_local(write.clone()).await.unwrap();
                self.records.insert(
                    slot,
                    StoreRecord {
                        map_name: map.clone(),
                        key: key.clone(),
                        value: write.value.clone(),
                        timestamp: write.timestamp.clone(),
                        ttl_ms: write.ttl_ms,
                        dirty: true,
                    },
                );
                self.append(id, &map, write.op_type, &key, Some(&write));
            }
            40..=54 => {
                let pending: Vec<OpId> = self
                    .ops
                    .values()
                    .filter(|o| !o.synced)
                    .map(|o| o.id)
                    .collect();
                let mut ids: Vec<OpId> = pending
                    .iter()
                    .copied()
                    .filter(|_| rng.below(2) == 0)
                    .collect();
                if rng.below(3) == 0 {
                    ids.push(self.last_id + 100);
                }
                if let Some(&first) = ids.first() {
                    ids.push(first);
                }
                let expected = self.mark_synced(&ids);
                assert_eq!(
                    store.mark_synced(&ids).await.unwrap(),
                    expected,
                    "mark_synced"
                );
            }
            55..=59 => {
                let expected = self.ops.values().filter(|o| o.synced).count() as u64;
                self.ops.retain(|_, o| !o.synced);
                assert_eq!(store.drop_synced_ops().await.unwrap(), expected, "drop");
            }
            60..=79 => {
                let mut batch = Vec::new();
                for _ in 0..=rng.below(3) {
                    let map = (*rng.pick(&MAPS)).to_owned();
                    let key = (*rng.pick(&KEYS)).to_owned();
                    let timestamp = self.remote_ts(rng, &(map.clone(), key.clone()));
                    let value = (rng.below(4) != 0).then(|| step.to_be_bytes().to_vec());
                    batch.push(StoreRecord {
                        map_name: map,
                        key,
                        value,
                        timestamp,
                        ttl_ms: None,
                        dirty: rng.below(2) == 0,
                    });
                }
                let mut expected = Vec::new();
                for mut incoming in batch.clone() {
                    let slot = (incoming.map_name.clone(), incoming.key.clone());
                    let previous = self.records.get(&slot).cloned();
                    if previous
                        .as_ref()
                        .is_some_and(|p| incoming.timestamp <= p.timestamp)
                    {
                        continue;
                    }
                    incoming.dirty = false;
                    self.records.insert(slot, incoming.clone());
                    expected.push(crate::model::AppliedChange {
                        previous,
                        current: incoming,
                    });
                }
                assert_eq!(store.apply_remote(batch).await.unwrap(), expected);
            }
            80..=84 => {
                let timestamp = self.tick(rng);
                let outcome = store.clear_map(&map, timestamp.clone()).await.unwrap();
                let mut removed = Vec::new();
                for ((m, k), r) in self.records.iter_mut() {
                    if *m == map && r.value.is_some() {
                        r.value = None;
                        r.ttl_ms = None;
                        r.timestamp = timestamp.clone();
                        r.dirty = true;
                        removed.push(k.clone());
                    }
                }
                assert_eq!(outcome.removed_keys, removed, "clear_map");
                self.append(outcome.op_id, &map, OpType::Clear, "", None);
                if let Some(op) = self.ops.get_mut(&outcome.op_id) {
                    op.timestamp = timestamp;
                }
            }
            85..=92 => {
                let asked: Vec<String> = KEYS
                    .iter()
                    .filter(|_| rng.below(2) == 0)
                    .map(|k| (*k).to_owned())
                    .collect();
                let pending: Vec<&OpLogEntry> = self
                    .ops
                    .values()
                    .filter(|o| !o.synced && o.map_name == map)
                    .collect();
                // Not from `rng`: the sequence of other calls stays as it was.
                let sums = if step % 2 == 0 {
                    PruneSums::Keep
                } else {
                    PruneSums::Drop
                };
                let mut removed = Vec::new();
                if !pending.iter().any(|o| o.op_type == OpType::Clear) {
                    let blocked: BTreeSet<&str> = pending.iter().map(|o| o.key.as_str()).collect();
                    for k in &asked {
                        let slot = (map.clone(), k.clone());
                        if blocked.contains(k.as_str()) {
                            continue;
                        }
                        if self.records.get(&slot).is_some_and(|r| !r.dirty) {
                            self.records.remove(&slot);
                            removed.push(k.clone());
                        }
                    }
                }
                for k in &removed {
                    let slot = (map.clone(), k.clone());
                    match sums {
                        PruneSums::Keep => {
                            self.pruned.insert(slot);
                        }
                        PruneSums::Drop => {
                            self.merkle.remove(&slot);
                        }
                    }
                }
                assert_eq!(
                    store.prune_clean(&map, &asked, sums).await.unwrap(),
                    removed
                );
            }
            _ => {
                let value = step.to_le_bytes().to_vec();
                store.meta_put(&key, value.clone()).await.unwrap();
                self.meta.insert(key, value);
            }
        }
    }

    fn mark_synced(&mut self, ids: &[OpId]) -> u64 {
        let mut changed = 0;
        for id in ids {
            let Some(op) = self.ops.get_mut(id) else {
                continue;
            };
            if op.synced {
                continue;
            }
            op.synced = true;
            changed += 1;
            let op = op.clone();
            for ((m, k), r) in self.records.iter_mut() {
                let targeted = *m == op.map_name && (op.op_type == OpType::Clear || *k == op.key);
                if targeted && r.timestamp == op.timestamp {
                    r.dirty = false;
                }
            }
        }
        changed
    }

    async fn check(&self, store: &(impl Store + ?Sized), rng: &mut Rng) {
        let page = 1 + rng.below(4) as usize;
        let names: BTreeSet<&str> = self.records.keys().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            store.map_names().await.unwrap(),
            names.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>()
        );
        for map in MAPS {
            let expected: Vec<&StoreRecord> = self
                .records
                .values()
                .filter(|r| r.map_name == map)
                .collect();
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let rows = store.scan(map, after.as_deref(), page).await.unwrap();
                let Some(last) = rows.last() else { break };
                after = Some(last.key.clone());
                seen.extend(rows);
            }
            assert_eq!(seen.iter().collect::<Vec<_>>(), expected, "scan {map:?}");
            let count = store.count_records(map).await.unwrap();
            assert_eq!(count, expected.len() as u64, "count {map:?}");
            let dirty: Vec<&StoreRecord> = expected.iter().copied().filter(|r| r.dirty).collect();
            let got = store.dirty_records(map, None, usize::MAX).await.unwrap();
            assert_eq!(got.iter().collect::<Vec<_>>(), dirty, "dirty {map:?}");
            let mut paged = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let rows = store
                    .dirty_records(map, after.as_deref(), page)
                    .await
                    .unwrap();
                let Some(last) = rows.last() else { break };
                after = Some(last.key.clone());
                paged.extend(rows);
            }
            assert_eq!(paged, got, "dirty pages {map:?}");
            for key in KEYS {
                let want = self.records.get(&(map.to_owned(), key.to_owned()));
                assert_eq!(store.get(map, key).await.unwrap().as_ref(), want);
            }
        }
        let pending: Vec<&OpLogEntry> = self.ops.values().filter(|o| !o.synced).collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let ops = store.pending_ops(after, page).await.unwrap();
            let Some(last) = ops.last() else { break };
            after = Some(last.id);
            seen.extend(ops);
        }
        assert_eq!(seen.iter().collect::<Vec<_>>(), pending, "pending ops");
        for (key, value) in &self.meta {
            assert_eq!(store.meta_get(key).await.unwrap().as_ref(), Some(value));
        }
        let expected = StoreStats {
            records: self.records.len() as u64,
            dirty_records: self.records.values().filter(|r| r.dirty).count() as u64,
            pending_ops: pending.len() as u64,
            bytes: self
                .records
                .values()
                .map(StoreRecord::approx_size)
                .sum::<u64>()
                + self.ops.values().map(OpLogEntry::approx_size).sum::<u64>(),
        };
        assert_eq!(store.stats().await.unwrap(), expected, "stats");
        for map in MAPS {
            let mut leaves = vec![0u32; topgun_core::merkle::LEAVES];
            for ((m, key), t) in &self.merkle {
                if m == map {
                    let (leaf, c) =
                        topgun_core::MerkleSums::contribution(key, t.millis, t.counter, &t.node_id);
                    leaves[leaf] = leaves[leaf].wrapping_add(c);
                }
            }
            assert_eq!(
                store.merkle_leaves(map).await.unwrap(),
                leaves,
                "merkle {map:?}"
            );
        }
    }
}
