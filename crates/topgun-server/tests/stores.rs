//! The server store conformance suite: every `ServerStore` — the embedded
//! store on memory and on a real redb file, and PostgreSQL when
//! `TOPGUN_TEST_POSTGRES` is set — keeps the same rules.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use topgun_core::Timestamp;
use topgun_server::store::{EmbeddedStore, LanedStore, ServerStore};
use topgun_storage::{MemoryStore, ScanCursor, StorageError, StoreRecord};

fn rec(map: &str, key: &str, value: Option<&[u8]>, millis: u64, node: &str) -> StoreRecord {
    StoreRecord {
        map_name: map.into(),
        key: key.into(),
        value: value.map(<[u8]>::to_vec),
        timestamp: Timestamp::new(millis, 0, node),
        ttl_ms: None,
        dirty: false,
    }
}

async fn stored(store: &dyn ServerStore, map: &str, key: &str) -> Option<StoreRecord> {
    store
        .get_many(map, &[key.to_owned()])
        .await
        .unwrap()
        .pop()
        .unwrap()
}

/// Newer wins, equal or older is a no-op, the result says which.
async fn merge_is_last_writer_wins(store: &dyn ServerStore) {
    let first = rec("m", "k", Some(b"1"), 10, "a");
    assert_eq!(store.merge(vec![first.clone()]).await.unwrap(), [true]);
    let older = rec("m", "k", Some(b"0"), 9, "z");
    let same = first.clone();
    let newer = rec("m", "k", Some(b"2"), 11, "a");
    assert_eq!(
        store.merge(vec![older, same]).await.unwrap(),
        [false, false]
    );
    assert_eq!(stored(store, "m", "k").await, Some(first));
    assert_eq!(store.merge(vec![newer.clone()]).await.unwrap(), [true]);
    assert_eq!(stored(store, "m", "k").await, Some(newer));
    // The counter breaks a tie of millis.
    let mut counted = rec("m", "k", Some(b"3"), 11, "a");
    counted.timestamp.counter = 1;
    assert_eq!(store.merge(vec![counted.clone()]).await.unwrap(), [true]);
    assert_eq!(stored(store, "m", "k").await, Some(counted));
}

/// Node ids break a tie byte-wise, as `topgun-core` orders them (not by
/// a locale's collation: "B" < "a" < "é").
async fn node_ids_compare_byte_wise(store: &dyn ServerStore) {
    let a = rec("m", "t", Some(b"a"), 5, "a");
    let upper = rec("m", "t", Some(b"B"), 5, "B");
    let accent = rec("m", "t", Some(b"e"), 5, "é");
    assert_eq!(store.merge(vec![a.clone()]).await.unwrap(), [true]);
    assert_eq!(store.merge(vec![upper]).await.unwrap(), [false]);
    assert_eq!(store.merge(vec![accent.clone()]).await.unwrap(), [true]);
    assert_eq!(stored(store, "m", "t").await, Some(accent));
}

/// Of several records for one key in a batch the newest is stored and
/// reported; tombstones, TTLs and empty values are kept as they are.
async fn batches_keep_the_newest_and_every_field(store: &dyn ServerStore) {
    let mut ttl = rec("m", "ttl", Some(b""), 7, "n");
    ttl.ttl_ms = Some(60_000);
    let batch = vec![
        rec("m", "d", Some(b"new"), 20, "n"),
        rec("m", "d", Some(b"old"), 10, "n"),
        rec("m", "gone", None, 3, "n"),
        ttl.clone(),
    ];
    assert_eq!(
        store.merge(batch.clone()).await.unwrap(),
        [true, false, true, true]
    );
    let got = store
        .get_many(
            "m",
            &["gone".into(), "missing".into(), "d".into(), "ttl".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            Some(batch[2].clone()),
            None,
            Some(batch[0].clone()),
            Some(ttl)
        ]
    );
}

/// Pages list a map in byte-wise key order, tombstones included, maps
/// apart; a short page is the last.
async fn pages_follow_byte_order(store: &dyn ServerStore) {
    let keys = ["b", "B", "a", "é", "z", "a\u{1}", "A b"];
    let batch: Vec<StoreRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| rec("p", k, (i % 2 == 0).then_some(b"v".as_slice()), 1, "n"))
        .collect();
    store.merge(batch).await.unwrap();
    store
        .merge(vec![rec("pp", "a", Some(b"x"), 1, "n")])
        .await
        .unwrap();
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let mut read = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.page("p", after.as_deref(), 3).await.unwrap();
        read.extend(page.iter().map(|r| r.key.clone()));
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|r| r.key.clone());
    }
    assert_eq!(read, sorted);
    let stamps = store.stamp_page("p", Some("a"), 100).await.unwrap();
    let stamp_keys: Vec<&str> = stamps.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        stamp_keys,
        sorted[sorted.iter().position(|k| *k == "a").unwrap() + 1..]
    );
    assert!(store.page("p", None, 0).await.unwrap().is_empty());
    assert!(store.page("none", None, 10).await.unwrap().is_empty());
    let mut maps = store.map_names().await.unwrap();
    maps.sort();
    assert_eq!(maps, ["p", "pp"]);
}

/// Store-order pages list every record of a map once (records and
/// stamps alike), key-order pages list them in order, whatever the page
/// size; a short page is the last.
async fn store_order_pages_list_every_record_once(store: &dyn ServerStore) {
    let keys: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let batch = keys
        .iter()
        .map(|k| rec("s", k, Some(b"v"), 1, "n"))
        .collect();
    store.merge(batch).await.unwrap();
    store
        .merge(vec![rec("t", "s1", Some(b"x"), 1, "n")])
        .await
        .unwrap();
    for size in [1, 3, 7, 40, 100, 299, 300, 1_000] {
        let store_order = ScanCursor::new("s", size).any_order();
        let mut read = record_keys(store, store_order.clone()).await;
        let stamps = stamp_keys(store, store_order).await;
        assert_eq!(stamps, read, "page size {size}");
        read.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(read, expected, "page size {size}");
        // Key order, at the same page sizes.
        let read = record_keys(store, ScanCursor::new("s", size)).await;
        assert_eq!(read, expected, "key order, page size {size}");
    }
    // A limit far beyond the map reads it all, in either order.
    let all = store.page("s", None, usize::MAX).await.unwrap();
    assert_eq!(all.len(), keys.len());
    let all = store
        .stamp_page_in_store_order("s", None, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all.len(), keys.len());
}

/// The keys of every page `cursor` reads from `store`.
async fn record_keys(store: &dyn ServerStore, mut cursor: ScanCursor) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(page) = cursor.next_page(store).await.unwrap() {
        keys.extend(page.into_iter().map(|r| r.key));
    }
    keys
}

/// The keys of every page of stamps `cursor` reads from `store`.
async fn stamp_keys(store: &dyn ServerStore, mut cursor: ScanCursor) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(page) = cursor.next_stamps(store).await.unwrap() {
        keys.extend(page.into_iter().map(|s| s.key));
    }
    keys
}

/// A batch with a bad record stores nothing; what the store says it
/// refuses, it refuses.
async fn a_bad_batch_stores_nothing(store: &dyn ServerStore) {
    let good = rec("x", "good", Some(b"1"), 1, "n");
    let bad = rec("x", "", Some(b"1"), 1, "n");
    let error = store.merge(vec![good.clone(), bad]).await.unwrap_err();
    assert!(matches!(error, StorageError::InvalidInput(_)), "{error}");
    assert_eq!(stored(store, "x", "good").await, None);
    for odd in [
        rec("x", "nul\0key", Some(b"1"), 1, "n"),
        rec("x", &"k".repeat(3_000), Some(b"1"), 1, "n"),
        rec("x", "far", Some(b"1"), u64::MAX, "n"),
    ] {
        let refused = store.refuses(&odd.map_name, &odd.key, &odd.timestamp, odd.ttl_ms);
        let merged = store.merge(vec![good.clone(), odd.clone()]).await;
        match refused {
            Some(_) => {
                assert!(merged.is_err(), "refused yet merged: {}", odd.key.len());
                assert_eq!(stored(store, "x", "good").await, None);
            }
            None => assert!(merged.unwrap()[1], "{}", odd.key.len()),
        }
    }
}

async fn conformance(make: impl AsyncFn() -> Arc<dyn ServerStore>) {
    merge_is_last_writer_wins(&*make().await).await;
    node_ids_compare_byte_wise(&*make().await).await;
    batches_keep_the_newest_and_every_field(&*make().await).await;
    pages_follow_byte_order(&*make().await).await;
    store_order_pages_list_every_record_once(&*make().await).await;
    a_bad_batch_stores_nothing(&*make().await).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(async || {
        Arc::new(EmbeddedStore::new(Arc::new(MemoryStore::new()))) as Arc<dyn ServerStore>
    })
    .await;
}

#[tokio::test]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(async || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("{i}.redb"));
        Arc::new(EmbeddedStore::open_redb(&path).unwrap()) as Arc<dyn ServerStore>
    })
    .await;
}

#[tokio::test]
async fn laned_memory_store_conforms() {
    conformance(async || {
        let lanes = (0..3)
            .map(|_| {
                Arc::new(EmbeddedStore::new(Arc::new(MemoryStore::new()))) as Arc<dyn ServerStore>
            })
            .collect();
        Arc::new(LanedStore::new(lanes)) as Arc<dyn ServerStore>
    })
    .await;
}

#[tokio::test]
async fn laned_redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(async || {
        let lanes = (0..2)
            .map(|_| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = dir.path().join(format!("{i}.redb"));
                Arc::new(EmbeddedStore::open_redb(&path).unwrap()) as Arc<dyn ServerStore>
            })
            .collect();
        Arc::new(LanedStore::new(lanes)) as Arc<dyn ServerStore>
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_conforms() {
    use topgun_server::store::{PostgresOptions, PostgresStore};
    if std::env::var(common::pg::URL_ENV).is_err() {
        common::pg::fresh_database("postgres_store_conforms").await;
        return;
    }
    conformance(async || {
        let url = common::pg::fresh_database("postgres_store_conforms")
            .await
            .unwrap();
        Arc::new(
            PostgresStore::connect(PostgresOptions::new(url))
                .await
                .unwrap(),
        ) as Arc<dyn ServerStore>
    })
    .await;
}
