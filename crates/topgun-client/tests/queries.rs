//! Queries and live queries through the client facade.
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use topgun_client::query::{ChangeType, Predicate, Query, SortDirection};
use topgun_client::{ClientError, TopGunClient, WorkingSetLimits};
use topgun_storage::hooked::{HookedStore, Phase, StoreCall};
use topgun_storage::{MemoryStore, Store};

async fn client() -> TopGunClient {
    TopGunClient::builder()
        .working_set(WorkingSetLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn query_filters_sorts_and_pages_over_evicted_records() {
    let c = client().await;
    let m = c.get_json_map("people").unwrap();
    for i in 0..200 {
        m.put(
            &format!("p{i:03}"),
            json!({"age": i % 50, "city": if i % 2 == 0 { "Oslo" } else { "Rome" }}),
        )
        .await
        .unwrap();
    }
    assert!(
        c.working_set_stats().entries <= 10,
        "most records are evicted from RAM"
    );
    let q = Query::new()
        .where_eq("city", "Oslo")
        .filter(Predicate::gte("age", 40))
        .sort_by("age", SortDirection::Desc)
        .limit(5);
    let page = m.query(&q).await.unwrap();
    assert_eq!(page.results.len(), 5);
    assert!(page.has_more);
    let ages: Vec<i64> = page
        .results
        .iter()
        .map(|(_, v)| v["age"].as_i64().unwrap())
        .collect();
    assert_eq!(ages, vec![48, 48, 48, 48, 46]);
    // The next page continues after the cursor.
    let next = m
        .query(&q.clone().after(page.next_cursor.unwrap()))
        .await
        .unwrap();
    assert!(next
        .results
        .iter()
        .all(|(k, _)| !page.results.iter().any(|(k2, _)| k2 == k)));
    assert!(next
        .results
        .iter()
        .all(|(_, v)| v["age"].as_i64().unwrap() <= 46));
}

#[tokio::test]
async fn invalid_queries_are_clear_errors() {
    let c = client().await;
    let m = c.get_json_map("m").unwrap();
    let bad_regex = Query::new().filter(Predicate::regex("name", "(unclosed"));
    let err = m.query(&bad_regex).await.unwrap_err();
    assert!(matches!(err, ClientError::Query(_)), "{err}");
    let unknown: Query =
        serde_json::from_value(json!({"predicate": {"op": "near", "attribute": "x", "value": 1}}))
            .unwrap();
    let err = m.query(&unknown).await.unwrap_err();
    assert!(err.to_string().contains("near"), "{err}");
}

#[tokio::test]
async fn live_query_tracks_a_sorted_limited_window() {
    let c = client().await;
    let m = c.get_map::<serde_json::Value>("scores").unwrap();
    for i in 0..5 {
        m.put(&format!("s{i}"), json!({"score": i * 10}))
            .await
            .unwrap();
    }
    let q = Query::new().sort_by("score", SortDirection::Desc).limit(3);
    let mut live = m.live_query(q.clone()).await.unwrap();
    let keys = |rows: Vec<(String, serde_json::Value)>| {
        rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    assert_eq!(keys(live.results().unwrap()), vec!["s4", "s3", "s2"]);

    // A new top score enters; the last of the window leaves.
    m.put("new", json!({"score": 100})).await.unwrap();
    let mut changes = [live.next().await.unwrap(), live.next().await.unwrap()];
    changes.sort_by_key(|c| c.key.clone());
    assert_eq!(
        (changes[0].key.as_str(), changes[0].change_type.clone()),
        ("new", ChangeType::Enter)
    );
    assert_eq!(
        (changes[1].key.as_str(), changes[1].change_type.clone()),
        ("s2", ChangeType::Leave)
    );

    // Removing window members refills from the store, even past the buffer.
    for k in ["new", "s4", "s3"] {
        m.remove(k).await.unwrap();
    }
    for i in 0..3 {
        m.remove(&format!("s{i}")).await.unwrap();
    }
    m.put("late", json!({"score": 5})).await.unwrap();
    // The window ran short: reading its changes refills it from the store,
    // until it equals a fresh query.
    let fresh = m.query(&q).await.unwrap();
    assert_eq!(keys(fresh.results.clone()), vec!["late"]);
    while live.results().unwrap() != fresh.results {
        next(&mut live).await;
    }
}

#[tokio::test]
async fn live_change_is_ready_when_put_returns() {
    let c = client().await;
    let m = c.get_json_map("m").unwrap();
    let mut live = m
        .live_query(Query::new().filter(Predicate::eq("kind", "a")))
        .await
        .unwrap();
    m.put("x", json!({"kind": "a"})).await.unwrap();
    // No waiting: the change was computed inside `put`.
    let change = tokio::time::timeout(std::time::Duration::from_millis(1), live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.change_type, ChangeType::Enter);
    m.put("x", json!({"kind": "b"})).await.unwrap();
    assert_eq!(live.next().await.unwrap().change_type, ChangeType::Leave);
    m.put("y", json!({"kind": "b"})).await.unwrap();
    m.put("y", json!({"kind": "a", "n": 1})).await.unwrap();
    let c2 = live.next().await.unwrap();
    assert_eq!((c2.key.as_str(), c2.change_type), ("y", ChangeType::Enter));
}

/// Writes that land while a live query reads its initial result (after
/// its first page, before it runs) are in its result, not lost between
/// the read and the stream.
#[tokio::test]
async fn writes_racing_the_initial_read_reach_the_live_query() {
    type Gate = Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>;
    let gate: Arc<Mutex<Gate>> = Arc::default();
    let hook_gate = gate.clone();
    let store = Arc::new(HookedStore::new(
        MemoryStore::new(),
        Arc::new(move |call, phase| {
            let held = if call == StoreCall::Scan && phase == Phase::After {
                hook_gate.lock().unwrap().take()
            } else {
                None
            };
            Box::pin(async move {
                if let Some((read, release)) = held {
                    read.send(()).unwrap();
                    release.await.unwrap();
                }
            })
        }),
    ));
    let c = TopGunClient::builder().store(store).build().await.unwrap();
    let m = c.get_json_map("m").unwrap();
    m.put("a", json!({"n": 1})).await.unwrap();

    let (read_tx, read_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    *gate.lock().unwrap() = Some((read_tx, release_rx));
    let starting = tokio::spawn({
        let m = m.clone();
        async move { m.live_query(Query::new()).await }
    });
    // The first page is read (with the old "a").
    read_rx.await.unwrap();
    m.put("b", json!({"n": 2})).await.unwrap();
    m.put("a", json!({"n": 10})).await.unwrap();
    release_tx.send(()).unwrap();
    let mut live = starting.await.unwrap().unwrap();

    assert_eq!(
        live.results().unwrap(),
        vec![
            ("a".to_owned(), json!({"n": 10})),
            ("b".to_owned(), json!({"n": 2}))
        ]
    );
    // Later changes follow on; what the racing writes changed is already
    // in the result, so nothing before "c" may contradict it.
    m.put("c", json!({"n": 3})).await.unwrap();
    loop {
        let change = next(&mut live).await;
        if change.key == "c" {
            assert_eq!(change.change_type, ChangeType::Enter);
            break;
        }
        assert_ne!(change.change_type, ChangeType::Leave, "{change:?}");
        let now = if change.key == "a" { 10 } else { 2 };
        assert_eq!(change.value, Some(json!({"n": now})), "{change:?}");
    }
}

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Debug)]
struct PausedClock {
    origin: tokio::time::Instant,
}

impl topgun_core::Clock for PausedClock {
    fn now_millis(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap();
        1_700_000_000_000 + elapsed
    }
}

/// A client whose wall clock follows tokio's paused clock, and that
/// clock's origin.
async fn paused_client() -> (TopGunClient, tokio::time::Instant) {
    let origin = tokio::time::Instant::now();
    let c = TopGunClient::builder()
        .clock(Arc::new(PausedClock { origin }))
        .build()
        .await
        .unwrap();
    (c, origin)
}

/// A row leaves a live query when its TTL passes, with no write to wake
/// the query: the client's timer does.
#[tokio::test(start_paused = true)]
async fn a_row_leaves_a_live_query_when_its_ttl_passes() {
    let (c, origin) = paused_client().await;
    let m = c.get_json_map("m").unwrap();
    m.put_with_ttl("short", json!({"n": 1}), 1_000)
        .await
        .unwrap();
    m.put("kept", json!({"n": 2})).await.unwrap();
    let mut live = m.live_query(Query::new()).await.unwrap();
    assert_eq!(live.results().unwrap().len(), 2);
    // A row that enters by a write brings its TTL along.
    m.put_with_ttl("later", json!({"n": 3}), 5_000)
        .await
        .unwrap();
    let enter = next(&mut live).await;
    assert_eq!(
        (enter.key.as_str(), enter.change_type),
        ("later", ChangeType::Enter)
    );

    let leave = next(&mut live).await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("short", ChangeType::Leave)
    );
    // Absent once `millis + ttl < now`: one millisecond after the TTL.
    assert_eq!(origin.elapsed().as_millis(), 1_001);
    let leave = next(&mut live).await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("later", ChangeType::Leave)
    );
    assert_eq!(origin.elapsed().as_millis(), 5_001);
    assert_eq!(
        live.results().unwrap(),
        vec![("kept".to_owned(), json!({"n": 2}))]
    );
    assert_eq!(m.get("short").await.unwrap(), None);
}

/// Writing the same value again with a TTL changes nothing visible, but
/// the row must still leave when that TTL passes (the waiting reader is
/// woken to take the new expiry into account).
#[tokio::test(start_paused = true)]
async fn a_ttl_added_by_an_unchanged_write_still_expires_the_row() {
    let (c, origin) = paused_client().await;
    let m = c.get_json_map("m").unwrap();
    m.put("k", json!({"n": 1})).await.unwrap();
    let mut live = m.live_query(Query::new()).await.unwrap();
    let reader = tokio::spawn(async move { next(&mut live).await });
    // Let the reader wait with no expiry to wake for.
    tokio::task::yield_now().await;
    m.put_with_ttl("k", json!({"n": 1}), 1_000).await.unwrap();
    let leave = reader.await.unwrap();
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("k", ChangeType::Leave)
    );
    assert_eq!(origin.elapsed().as_millis(), 1_001);
}

/// The next change, failing (in paused time: at once) if none comes
/// within a minute.
async fn next(
    live: &mut topgun_client::LiveQueryHandle<serde_json::Value>,
) -> topgun_client::LiveChange<serde_json::Value> {
    tokio::time::timeout(std::time::Duration::from_secs(60), live.next())
        .await
        .expect("no change within a minute")
        .unwrap()
}

/// A store that counts the scans it answers.
fn counting_store() -> (
    Arc<HookedStore<MemoryStore>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = scans.clone();
    let store = Arc::new(HookedStore::new(
        MemoryStore::new(),
        Arc::new(move |call, phase| {
            if call == StoreCall::Scan && phase == Phase::Before {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Box::pin(async {})
        }),
    ));
    (store, scans)
}

/// A client whose map `m` (100 records, `k000`…`k099`, `{"n": i}`) is
/// being preloaded: the preload's scan has begun and waits until `open`
/// is `true`; `calls` counts the store calls of one kind.
struct Preloading {
    client: TopGunClient,
    map: topgun_client::IMap<serde_json::Value>,
    preload: tokio::task::JoinHandle<Result<bool, topgun_client::ClientError>>,
    open: tokio::sync::watch::Sender<bool>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

/// A store holding map `m`: 100 records, `k000`…`k099`, `{"n": i}`.
async fn hundred_records() -> MemoryStore {
    use topgun_storage::conformance::{remote, ts};
    let store = MemoryStore::new();
    let records: Vec<_> = (0..100)
        .map(|i| {
            let value = rmp_serde::to_vec_named(&json!({ "n": i })).unwrap();
            remote("m", &format!("k{i:03}"), Some(&value), ts(1 + i))
        })
        .collect();
    store.apply_remote(records).await.unwrap();
    store
}

async fn preloading(counted: StoreCall) -> Preloading {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let inner = hundred_records().await;
    let (open, opened) = tokio::sync::watch::channel(false);
    let (entered, mut scanning) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let store = Arc::new(HookedStore::new(
        inner,
        Arc::new(move |call, phase| {
            if phase == Phase::Before && call == counted {
                count.fetch_add(1, SeqCst);
            }
            if phase == Phase::Before && call == StoreCall::Scan {
                let (mut opened, entered) = (opened.clone(), entered.clone());
                return Box::pin(async move {
                    let _ = entered.send(());
                    let _ = opened.wait_for(|open| *open).await;
                });
            }
            Box::pin(async {})
        }),
    ));
    let client = client_on(store, 1_000).await;
    let map = client.get_json_map("m").unwrap();
    let preload = tokio::spawn({
        let map = map.clone();
        async move { map.preload().await }
    });
    scanning.recv().await.unwrap();
    Preloading {
        client,
        map,
        preload,
        open,
        calls,
    }
}

/// A `get_many` of many keys not in the working set, while their map is
/// being read in full (a preload), waits for that read and answers from
/// the working set instead of reading the keys beside it.
#[tokio::test]
async fn get_many_during_a_full_read_waits_for_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let p = preloading(StoreCall::GetMany).await;
    let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    let before = p.client.working_set_stats();
    let reading = tokio::spawn({
        let (m, keys) = (p.map.clone(), keys.clone());
        async move { m.get_many(&keys).await }
    });
    // One turn: the read runs until it waits.
    tokio::task::yield_now().await;
    assert_eq!(p.calls.load(SeqCst), 0, "read beside the full read");
    p.open.send(true).unwrap();
    assert!(p.preload.await.unwrap().unwrap());
    let values = reading.await.unwrap().unwrap();
    assert_eq!(values.len(), 100);
    assert_eq!(values[7], Some(json!({ "n": 7 })));
    assert_eq!(p.calls.load(SeqCst), 0, "answered from the working set");
    // Each key counted once, as a hit: it was answered from RAM.
    let after = p.client.working_set_stats();
    assert_eq!(after.misses, before.misses);
    assert_eq!(after.hits, before.hits + 100);
}

/// `entries().collect()` while a preload reads the map waits for it and
/// lists the working set's records, without a scan of its own.
#[tokio::test]
async fn entries_during_a_preload_wait_for_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let p = preloading(StoreCall::Scan).await;
    let listing = tokio::spawn({
        let m = p.map.clone();
        async move { m.entries().collect().await }
    });
    // One turn: the listing runs until it waits.
    tokio::task::yield_now().await;
    assert_eq!(p.calls.load(SeqCst), 1, "scanned beside the preload");
    p.open.send(true).unwrap();
    assert!(p.preload.await.unwrap().unwrap());
    let entries = listing.await.unwrap().unwrap();
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[7], ("k007".to_owned(), json!({ "n": 7 })));
    assert_eq!(p.calls.load(SeqCst), 1, "listed from the working set");
}

/// A `get_many` of many keys while a preload is due but not started
/// (`preload_later`, as the JS API's `getMap` leaves it) runs the preload
/// and answers from it: the map is read once, not key by key and then
/// whole.
#[tokio::test]
async fn get_many_starts_a_due_preload_and_reads_the_map_once() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let inner = hundred_records().await;
    let (scans, key_reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (scanned, read) = (scans.clone(), key_reads.clone());
    let store = Arc::new(HookedStore::new(
        inner,
        Arc::new(move |call, phase| {
            if phase == Phase::Before {
                match call {
                    StoreCall::Scan => scanned.fetch_add(1, SeqCst),
                    StoreCall::GetMany | StoreCall::Get => read.fetch_add(1, SeqCst),
                    _ => 0,
                };
            }
            Box::pin(async {})
        }),
    ));
    let client = client_on(store, 1_000).await;
    let map = client.get_json_map("m").unwrap();
    let later = map.preload_later();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    let values = map.get_many(&keys).await.unwrap();
    assert_eq!(values[42], Some(json!({ "n": 42 })));
    assert_eq!(key_reads.load(SeqCst), 0, "keys read beside the preload");
    assert_eq!(scans.load(SeqCst), 1);
    // The preload, run later, finds its work done.
    assert!(later.await.unwrap());
    assert_eq!(scans.load(SeqCst), 1, "the map read twice");
}

/// A client on `store` with a working set of `entries`.
async fn client_on(store: Arc<dyn Store>, entries: usize) -> TopGunClient {
    TopGunClient::builder()
        .store(store)
        .working_set(WorkingSetLimits {
            max_entries: entries,
            max_bytes: usize::MAX,
        })
        .build()
        .await
        .unwrap()
}

/// A client on a [`counting_store`] with a working set of `entries`.
async fn counting_client(entries: usize) -> (TopGunClient, Arc<std::sync::atomic::AtomicUsize>) {
    let (store, scans) = counting_store();
    (client_on(store, entries).await, scans)
}

fn ages(page: &topgun_client::QueryPage<serde_json::Value>) -> Vec<(String, i64)> {
    page.results
        .iter()
        .map(|(k, v)| (k.clone(), v["age"].as_i64().unwrap()))
        .collect()
}

/// A map that fits in the working set is read from the store by its first
/// query only; later queries answer from RAM and see every write since.
#[tokio::test]
async fn a_map_that_fits_is_queried_in_memory_after_its_first_query() {
    use std::sync::atomic::Ordering::SeqCst;
    let (c, scans) = counting_client(1_000).await;
    let m = c.get_json_map("people").unwrap();
    for i in 0..100 {
        m.put(&format!("p{i:03}"), json!({"age": i % 10}))
            .await
            .unwrap();
    }
    let older = Query::new()
        .filter(Predicate::gte("age", 8))
        .sort_by("age", SortDirection::Desc);
    let first = m.query(&older).await.unwrap();
    assert_eq!(first.results.len(), 20);
    let read = scans.load(SeqCst);
    assert!(read > 0, "the first query reads the store");

    assert_eq!(m.count(&Query::new().where_eq("age", 3)).await.unwrap(), 10);
    assert_eq!(m.count(&Query::new().limit(7)).await.unwrap(), 7);
    let limited = Query::new().where_eq("age", 3).limit(4);
    let page = m.query(&limited).await.unwrap();
    assert_eq!(
        ages(&page),
        [("p003", 3), ("p013", 3), ("p023", 3), ("p033", 3)].map(|(k, a)| (k.to_owned(), a))
    );
    assert!(page.has_more);
    let next = m
        .query(&limited.clone().after(page.next_cursor.unwrap()))
        .await
        .unwrap();
    assert_eq!(next.results.len(), 4);
    assert_eq!(next.results[0].0, "p043");

    // Writes, removals and TTLs since are seen without reading the store.
    m.put("p003", json!({"age": 9})).await.unwrap();
    m.remove("p009").await.unwrap();
    m.put("new", json!({"age": 8})).await.unwrap();
    let now = m.query(&older).await.unwrap();
    assert_eq!(now.results.len(), 21);
    assert_eq!(now.results[0].0, "p003");
    assert!(now.results.iter().all(|(k, _)| k != "p009"));
    assert_eq!(scans.load(SeqCst), read, "answered from RAM");

    // A clear empties it; the next query reads the (empty) map again.
    m.clear().await.unwrap();
    assert!(m.query(&older).await.unwrap().results.is_empty());
    m.put("after", json!({"age": 9})).await.unwrap();
    assert_eq!(m.query(&older).await.unwrap().results.len(), 1);
}

/// Queries that arrive while a map is read share that one read.
#[tokio::test]
async fn concurrent_first_queries_read_the_map_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let (c, scans) = counting_client(10_000).await;
    for name in ["alone", "shared"] {
        let m = c.get_json_map(name).unwrap();
        for i in 0..1_500 {
            m.put(&format!("k{i:04}"), json!({"age": i % 4}))
                .await
                .unwrap();
        }
    }
    let one = c
        .get_json_map("alone")
        .unwrap()
        .query(&Query::new())
        .await
        .unwrap();
    assert_eq!(one.results.len(), 1_500);
    let one_read = scans.swap(0, SeqCst);
    let m = c.get_json_map("shared").unwrap();
    let queries = (0..4).map(|age| {
        let m = m.clone();
        async move { m.query(&Query::new().where_eq("age", age)).await.unwrap() }
    });
    let pages = futures_util::future::join_all(queries).await;
    assert!(pages.iter().all(|p| p.results.len() == 375));
    assert_eq!(scans.load(SeqCst), one_read, "one read for four queries");
}

/// A map over half the working set is queried in the store every time.
#[tokio::test]
async fn a_map_too_big_for_the_working_set_is_queried_in_the_store() {
    use std::sync::atomic::Ordering::SeqCst;
    let (c, scans) = counting_client(100).await;
    let m = c.get_json_map("big").unwrap();
    for i in 0..60 {
        m.put(&format!("k{i:02}"), json!({"age": i})).await.unwrap();
    }
    assert_eq!(m.query(&Query::new()).await.unwrap().results.len(), 60);
    let before = scans.load(SeqCst);
    assert_eq!(m.query(&Query::new()).await.unwrap().results.len(), 60);
    assert!(scans.load(SeqCst) > before, "read from the store again");
}

/// A map whose records fit the working set but whose values, decoded for
/// its queries, do not is dropped from RAM after its first query (the
/// byte limit holds) and queried in the store from then on; another map's
/// records stay.
#[tokio::test]
async fn a_map_whose_decoded_values_do_not_fit_is_queried_in_the_store() {
    use std::sync::atomic::Ordering::SeqCst;
    let (store, scans) = counting_store();
    let c = TopGunClient::builder()
        .store(store)
        .working_set(WorkingSetLimits {
            max_entries: 1_000,
            max_bytes: 40_000,
        })
        .build()
        .await
        .unwrap();
    let small = c.get_json_map("small").unwrap();
    small.put("k", json!({"n": 1})).await.unwrap();
    let m = c.get_json_map("docs").unwrap();
    for i in 0..100 {
        let text = "x".repeat(40);
        m.put(
            &format!("k{i:03}"),
            json!({"n": i, "a": text, "b": [text, text]}),
        )
        .await
        .unwrap();
    }
    let encoded = c.working_set_stats().bytes;
    assert!(encoded < 40_000, "the records fit: {encoded}");
    assert_eq!(m.count(&Query::new()).await.unwrap(), 100);
    assert_eq!(m.query(&Query::new()).await.unwrap().results.len(), 100);
    let stats = c.working_set_stats();
    assert!(stats.bytes <= 40_000, "{}", stats.bytes);
    assert_eq!(stats.entries, 1, "only `small` is held");
    let before = scans.load(SeqCst);
    let page = m
        .query(&Query::new().filter(Predicate::gte("n", 98)))
        .await
        .unwrap();
    assert_eq!(page.results.len(), 2);
    assert!(scans.load(SeqCst) > before, "read from the store");
    assert_eq!(c.working_set_stats().entries, 1, "and not held");
}

/// `preload` reads a map that fits into RAM ahead of its queries and
/// listings, which then read nothing from the store; a map over the complete limit, or
/// one that would crowd out another map's records, is left to be read on
/// demand.
#[tokio::test]
async fn preload_holds_a_map_that_fits_and_leaves_the_others() {
    use std::sync::atomic::Ordering::SeqCst;
    // A complete limit of 50 records.
    let (c, scans) = counting_client(100).await;
    let fill = |name: &'static str, n: usize| {
        let map = c.get_json_map(name).unwrap();
        async move {
            for i in 0..n {
                map.put(&format!("k{i:03}"), json!({"n": i})).await.unwrap();
            }
            map
        }
    };
    // Cached: the last 10 records of `crowded`, then `big` and `small`.
    let crowded = fill("crowded", 45).await;
    let big = fill("big", 55).await;
    let small = fill("small", 35).await;
    assert_eq!(scans.load(SeqCst), 0);

    assert!(!big.preload().await.unwrap(), "over the complete limit");
    assert!(!crowded.preload().await.unwrap(), "it would evict `small`");
    assert_eq!(scans.load(SeqCst), 0, "neither is read");

    assert!(small.preload().await.unwrap());
    let read = scans.load(SeqCst);
    assert!(read > 0);
    small.put("k999", json!({"n": 999})).await.unwrap();
    let over_30 = Query::new().filter(Predicate::gte("n", 30));
    let page = small.query(&over_30).await.unwrap();
    let keys: Vec<&str> = page.results.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["k030", "k031", "k032", "k033", "k034", "k999"]);
    assert!(small.preload().await.unwrap());
    small.remove("k000").await.unwrap();
    let entries = small.entries().collect().await.unwrap();
    assert_eq!(entries.len(), 35);
    assert_eq!(entries[0], ("k001".to_owned(), json!({"n": 1})));
    assert_eq!(entries[34], ("k999".to_owned(), json!({"n": 999})));
    assert_eq!(scans.load(SeqCst), read, "answered from RAM");

    // Read on demand, with every record.
    assert_eq!(big.count(&Query::new()).await.unwrap(), 55);
    assert_eq!(crowded.count(&Query::new()).await.unwrap(), 45);
    assert!(scans.load(SeqCst) > read);
}
