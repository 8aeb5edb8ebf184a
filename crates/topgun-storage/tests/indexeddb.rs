//! The `Store` conformance suite and IndexedDB-specific checks against a
//! real IndexedDB in headless Chromium (`cargo xtask ci` runs them with
//! `wasm-bindgen-test-runner`).
#![cfg(all(target_family = "wasm", feature = "indexeddb"))]
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use topgun_storage::{IndexedDbStore, Store};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

thread_local! {
    static NEXT: Cell<u32> = const { Cell::new(0) };
}

/// A fresh database of its own for each test (tests share one page).
async fn fresh() -> (IndexedDbStore, ()) {
    std::panic::set_hook(Box::new(|info| {
        wasm_bindgen_test::console_log!("panic: {info}")
    }));
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    let name = format!("conformance-{}-{n}", js_sys::Date::now());
    (IndexedDbStore::open_named(&name).await.unwrap(), ())
}

/// Opens database `name` at a version past this build's schema (what a
/// newer version of the app in another tab does).
async fn open_newer(name: &str) -> idb::Database {
    let factory = idb::Factory::new().unwrap();
    factory
        .open(name, Some(topgun_storage::INDEXEDDB_SCHEMA_VERSION + 1))
        .unwrap()
        .await
        .unwrap()
}

topgun_storage::store_conformance_tests!(
    #[wasm_bindgen_test]
    fresh
);

#[wasm_bindgen_test]
async fn reopening_keeps_records_ops_and_counts() {
    let (store, ()) = fresh().await;
    let name = store.name();
    let write =
        topgun_storage::conformance::put("m", "k", b"v", topgun_storage::conformance::ts(1));
    let id = store.write_local(write).await.unwrap();
    let stats = store.stats().await.unwrap();
    store.close();

    let reopened = IndexedDbStore::open_named(&name).await.unwrap();
    let record = reopened.get("m", "k").await.unwrap().unwrap();
    assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
    assert!(record.dirty);
    let ops = reopened.pending_ops(None, 10).await.unwrap();
    assert_eq!(ops.iter().map(|op| op.id).collect::<Vec<_>>(), [id]);
    assert_eq!(reopened.stats().await.unwrap(), stats);
}

#[wasm_bindgen_test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let name = format!("newer-{}", js_sys::Date::now());
    // A database at a version past this build's schema.
    let newer = open_newer(&name).await;
    newer.close();

    let error = IndexedDbStore::open_named(&name).await.unwrap_err();
    match error {
        topgun_storage::StorageError::SchemaTooNew { found, supported } => {
            assert_eq!(found, topgun_storage::INDEXEDDB_SCHEMA_VERSION + 1);
            assert_eq!(supported, topgun_storage::INDEXEDDB_SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
}

#[wasm_bindgen_test]
async fn concurrent_writes_all_land_with_increasing_ids() {
    let (store, ()) = fresh().await;
    let writes = (0..200u64).map(|i| {
        let write = topgun_storage::conformance::put(
            "m",
            &format!("k{i:03}"),
            b"v",
            topgun_storage::conformance::ts(i + 1),
        );
        store.write_local(write)
    });
    let ids: Vec<u64> = futures_util::future::try_join_all(writes).await.unwrap();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 200, "every write got its own id");
    assert_eq!(ids, sorted, "ids follow the order of the calls");
    assert_eq!(store.stats().await.unwrap().records, 200);
    assert_eq!(store.pending_ops(None, 1000).await.unwrap().len(), 200);
}

/// The records of one write group (one transaction) keep their map,
/// key, value and dirty flag: maps alternating, keys of every UTF-8
/// width, short and long, new (the group is tried unread) and then
/// stored again (the unread try fails, and the group is read first).
#[wasm_bindgen_test]
async fn a_write_group_stores_each_record_as_written() {
    use topgun_storage::conformance::{put, ts};
    let (store, ()) = fresh().await;
    let long = format!("{}é", "k".repeat(70));
    let long_ascii = "x".repeat(100);
    let keys = [
        "a",
        "é",
        "€",
        "😀",
        "\u{E000}",
        "\u{FFFD}",
        &long,
        &long_ascii,
    ];
    let writes = |round: u64| -> Vec<_> {
        (0u64..)
            .zip(keys)
            .flat_map(|(i, key)| {
                ["m", "n😀"].map(|map| {
                    let value = format!("{map}/{key}/{round}");
                    put(map, key, value.as_bytes(), ts(round * 100 + i + 1))
                })
            })
            .collect()
    };
    for round in [1, 2] {
        let group = writes(round);
        let stored = group.iter().cloned().map(|w| store.write_local_checked(w));
        futures_util::future::try_join_all(stored).await.unwrap();
        for write in &group {
            let record = store.get(&write.map_name, &write.key).await.unwrap();
            let record = record.unwrap_or_else(|| panic!("{write:?} not stored"));
            assert_eq!(record.value, write.value, "{write:?}");
            assert_eq!(record.timestamp, write.timestamp);
            assert!(record.dirty);
        }
    }
    assert_eq!(store.stats().await.unwrap().records, 2 * keys.len() as u64);
    let pending = store.pending_ops(None, 1000).await.unwrap();
    assert_eq!(pending.len(), 4 * keys.len());
}

/// Write groups big enough to read their records by range (dense new
/// keys; keys spread over a big map, past what one range read returns;
/// merges) leave records, counts and Merkle sums exactly as the memory
/// store does.
#[wasm_bindgen_test]
async fn grouped_writes_read_by_range_match_the_memory_store() {
    use topgun_storage::conformance::{put, remote, remove, ts};
    let (store, ()) = fresh().await;
    let memory = topgun_storage::MemoryStore::new();
    let mut stamp = 0;
    let mut next = move || {
        stamp += 1;
        ts(stamp)
    };
    let dense: Vec<_> = (0..1_000)
        .map(|i| put("m", &format!("k{i:04}"), b"a", next()))
        .collect();
    let spread: Vec<_> = (0..40)
        .flat_map(|i| {
            [
                put("m", &format!("k{:04}", i * 25), b"b", next()),
                remove("m", &format!("k{:04}", i * 25 + 7), next()),
                put("m", &format!("k{:04}x", i * 25), b"new", next()),
            ]
        })
        .collect();
    for group in [dense, spread] {
        let writes = group.iter().cloned().map(|w| store.write_local(w));
        futures_util::future::try_join_all(writes).await.unwrap();
        for write in group {
            memory.write_local(write).await.unwrap();
        }
    }
    // Merges: some newer, some older than what is stored, some new keys.
    let merged: Vec<_> = (0..100)
        .map(|i| {
            let stamp = if i % 2 == 0 { ts(100_000 + i) } else { ts(1) };
            remote("m", &format!("k{:04}", i * 9), Some(b"server"), stamp)
        })
        .chain((0..50).map(|i| remote("m", &format!("z{i:02}"), Some(b"s"), ts(5))))
        .collect();
    let from_idb = store.apply_remote(merged.clone()).await.unwrap();
    let from_memory = memory.apply_remote(merged).await.unwrap();
    assert_eq!(from_idb.len(), from_memory.len());

    assert_eq!(
        store.merkle_leaves("m").await.unwrap(),
        memory.merkle_leaves("m").await.unwrap()
    );
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    assert_eq!(
        store.scan("m", None, 10_000).await.unwrap(),
        memory.scan("m", None, 10_000).await.unwrap()
    );
    // Many reads at once are read by range too: dense, spread over the
    // map past one range read, absent, repeated.
    let dense: Vec<String> = (100..160).map(|i| format!("k{i:04}")).collect();
    let spread: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "k{:04}{}",
                (i * 37) % 1_100,
                if i % 5 == 0 { "x" } else { "" }
            )
        })
        .chain(["k0001".to_owned(), "zz".to_owned(), "k0001".to_owned()])
        .collect();
    for keys in [dense, spread] {
        assert_eq!(
            store.get_many("m", &keys).await.unwrap(),
            memory.get_many("m", &keys).await.unwrap()
        );
        let one_by_one = keys.iter().map(|key| store.get("m", key));
        let gets = futures_util::future::try_join_all(one_by_one)
            .await
            .unwrap();
        assert_eq!(gets, memory.get_many("m", &keys).await.unwrap());
    }
}

#[wasm_bindgen_test]
async fn an_open_store_does_not_block_an_upgrade_elsewhere() {
    let (store, ()) = fresh().await;
    let name = store.name();
    // Another tab (a newer version of the app) upgrades the database: the
    // open store's connection closes for it instead of blocking it.
    let newer = open_newer(&name).await;
    assert_eq!(
        newer.version().unwrap(),
        topgun_storage::INDEXEDDB_SCHEMA_VERSION + 1
    );
    newer.close();
    // The old connection is gone: its calls fail, clearly.
    assert!(store.get("m", "k").await.is_err());
}

/// Opens a second connection to `name` and runs `f` on one of its object
/// stores in a read-write transaction.
async fn with_raw_store<F, Fut, T>(name: &str, store: &str, f: F) -> T
where
    F: FnOnce(idb::ObjectStore) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let database = idb::Factory::new()
        .unwrap()
        .open(name, None)
        .unwrap()
        .await
        .unwrap();
    let tx = database
        .transaction(&[store], idb::TransactionMode::ReadWrite)
        .unwrap();
    let out = f(tx.object_store(store).unwrap()).await;
    tx.commit().unwrap().await.unwrap();
    database.close();
    out
}

/// How many entries database `name`'s `operation_log` holds.
async fn entry_count(name: &str) -> u32 {
    with_raw_store(name, "operation_log", |ops| async move {
        ops.count(None).unwrap().await.unwrap()
    })
    .await
}

/// The ids of the first `limit` pending ops of `store`.
async fn pending_ids(store: &dyn Store, limit: usize) -> Vec<u64> {
    let ops = store.pending_ops(None, limit).await.unwrap();
    ops.iter().map(|op| op.id).collect()
}

/// The pending ops' ids, less `first`.
async fn pending_offsets(store: IndexedDbStore, first: u64) -> Vec<u64> {
    let ids = pending_ids(&store, 100).await;
    ids.iter().map(|id| id - first).collect()
}

/// The writes of one transaction share one `operation_log` entry; its
/// ops are acknowledged, marked, dropped and paged one by one, and the
/// entry goes when its last op does.
#[wasm_bindgen_test]
async fn one_transactions_ops_share_an_entry_and_settle_one_by_one() {
    use topgun_storage::conformance::{put, ts};
    let (store, ()) = fresh().await;
    let memory = topgun_storage::MemoryStore::new();
    let writes: Vec<_> = (0..10u64)
        .map(|i| put("m", &format!("k{i}"), b"v", ts(i + 1)))
        .collect();
    // Issued together, the writes go into one transaction.
    let ids =
        futures_util::future::try_join_all(writes.iter().map(|w| store.write_local(w.clone())))
            .await
            .unwrap();
    let expected: Vec<u64> = (ids[0]..ids[0] + 10).collect();
    assert_eq!(ids, expected, "one entry numbers its ops one after another");
    let name = store.name();
    let entries = || entry_count(&name);
    assert_eq!(entries().await, 1);
    let memory_ids = {
        let mut out = Vec::new();
        for write in &writes {
            out.push(memory.write_local(write.clone()).await.unwrap());
        }
        out
    };
    let first = ids[0];
    let pending = |store: &IndexedDbStore| pending_offsets(store.clone(), first);

    assert_eq!(store.acknowledge(&[ids[3], ids[7]]).await.unwrap(), 2);
    memory
        .acknowledge(&[memory_ids[3], memory_ids[7]])
        .await
        .unwrap();
    assert_eq!(pending(&store).await, [0, 1, 2, 4, 5, 6, 8, 9]);
    // A page that starts inside the entry and ends inside it.
    let page = store.pending_ops(Some(ids[1]), 3).await.unwrap();
    assert_eq!(
        page.iter().map(|op| op.id).collect::<Vec<_>>(),
        [ids[2], ids[4], ids[5]]
    );
    assert_eq!(page[1].key, "k4");

    assert_eq!(store.mark_synced(&[ids[0], ids[9]]).await.unwrap(), 2);
    memory
        .mark_synced(&[memory_ids[0], memory_ids[9]])
        .await
        .unwrap();
    assert_eq!(pending(&store).await, [1, 2, 4, 5, 6, 8]);
    assert_eq!(store.drop_synced_ops().await.unwrap(), 2);
    memory.drop_synced_ops().await.unwrap();
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    assert_eq!(entries().await, 1);

    let rest: Vec<u64> = [1, 2, 4, 5, 6, 8].iter().map(|i| ids[*i]).collect();
    assert_eq!(store.acknowledge(&rest).await.unwrap(), 6);
    assert_eq!(pending(&store).await, Vec::<u64>::new());
    assert_eq!(entries().await, 0, "the entry goes with its last op");
    let rest: Vec<u64> = [1, 2, 4, 5, 6, 8].iter().map(|i| memory_ids[*i]).collect();
    memory.acknowledge(&rest).await.unwrap();
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    let next = store
        .write_local(put("m", "k", b"w", ts(99)))
        .await
        .unwrap();
    assert!(next > ids[9], "ids are never reused");
}

/// An op of schema version 1 (one op per entry, its fields on the entry)
/// reads and acknowledges as op 0 of its entry, beside entries of
/// version 2.
#[wasm_bindgen_test]
async fn a_version_1_op_entry_reads_and_settles() {
    use topgun_storage::conformance::{put, ts};
    let (store, ()) = fresh().await;
    let first = store.write_local(put("m", "j", b"u", ts(4))).await.unwrap();
    let id = store.write_local(put("m", "k", b"v", ts(5))).await.unwrap();
    let before = store.pending_ops(None, 10).await.unwrap();
    assert_eq!(before.len(), 2);
    let stats = store.stats().await.unwrap();
    let name = store.name();
    // The record's body holds what a version-1 op's body held.
    let body = with_raw_store(&name, "key_value_store", |records| async move {
        let all = records.get_all(None, None).unwrap().await.unwrap();
        js_sys::Reflect::get(&all[1], &"body".into()).unwrap()
    })
    .await;
    // The second write's entry (key 2) rewritten as version 1 wrote it
    // (keeping the counters delta it carries and its `carries` field,
    // which this build added).
    with_raw_store(&name, "operation_log", |ops| async move {
        let current = ops
            .get(wasm_bindgen::JsValue::from_f64(2.0))
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let field = |name: &str| js_sys::Reflect::get(&current, &name.into()).unwrap();
        let (delta, carries) = (field("delta"), field("carries"));
        let old = js_sys::Object::new();
        let set = |field: &str, value: &wasm_bindgen::JsValue| {
            js_sys::Reflect::set(&old, &field.into(), value).unwrap();
        };
        set("id", &2.0.into());
        set("mapName", &"m".into());
        set("key", &"k".into());
        set("opType", &"PUT".into());
        set("synced", &0.0.into());
        set("body", &body);
        set("delta", &delta);
        set("carries", &carries);
        ops.put(&old, None).unwrap().await.unwrap();
    })
    .await;
    assert_eq!(store.pending_ops(None, 10).await.unwrap(), before);
    assert_eq!(
        store.pending_ops(Some(first), 10).await.unwrap()[..],
        before[1..]
    );
    assert_eq!(store.acknowledge(&[id]).await.unwrap(), 1);
    let left = store.pending_ops(None, 10).await.unwrap();
    assert_eq!(left.iter().map(|op| op.id).collect::<Vec<_>>(), [first]);
    let after = store.stats().await.unwrap();
    assert_eq!(after.pending_ops, stats.pending_ops - 1);
    assert_eq!(after.dirty_records, 1);
    assert_eq!(entry_count(&name).await, 1);
}

/// A prune in the same write transaction as a clear of its map, or as a
/// write of its key (then overwritten clean by a newer merge), sees their
/// ops as pending, as it does once they are stored.
#[wasm_bindgen_test]
async fn a_prune_sees_the_ops_logged_earlier_in_its_transaction() {
    use topgun_storage::conformance::{put, remote, ts};
    use topgun_storage::PruneSums;
    let (store, ()) = fresh().await;
    // k1 newer than the clear below: the clear leaves it clean.
    store
        .apply_remote(vec![remote("m", "k1", Some(b"a"), ts(10))])
        .await
        .unwrap();
    // Issued together, the clear and the prune share a transaction.
    let keys = ["k1".to_owned()];
    let (cleared, pruned) = futures_util::future::join(
        store.clear_map("m", ts(5)),
        store.prune_clean("m", &keys, PruneSums::Keep),
    )
    .await;
    cleared.unwrap();
    assert_eq!(pruned.unwrap(), Vec::<String>::new(), "a clear is pending");
    assert!(store.get("m", "k1").await.unwrap().is_some());

    // k2 written, then overwritten clean by a newer merge, then pruned:
    // its put is pending all the same.
    let keys = ["k2".to_owned()];
    let (written, merged, pruned) = futures_util::future::join3(
        store.write_local(put("n", "k2", b"b", ts(20))),
        store.apply_remote(vec![remote("n", "k2", Some(b"c"), ts(30))]),
        store.prune_clean("n", &keys, PruneSums::Keep),
    )
    .await;
    written.unwrap();
    merged.unwrap();
    assert_eq!(pruned.unwrap(), Vec::<String>::new(), "a put is pending");
    let record = store.get("n", "k2").await.unwrap().unwrap();
    assert!(!record.dirty);
}

/// A transaction whose ops outgrow one entry spreads them over several:
/// ids still follow the calls, pages of every size read them in order,
/// and acknowledging them all empties the log.
#[wasm_bindgen_test]
async fn big_transactions_spread_their_ops_over_entries() {
    use topgun_storage::conformance::{put, ts};
    let (store, ()) = fresh().await;
    let memory = topgun_storage::MemoryStore::new();
    let value = vec![7u8; 2048];
    let writes: Vec<_> = (0..100u64)
        .map(|i| put("m", &format!("k{i:03}"), &value, ts(i + 1)))
        .collect();
    let ids =
        futures_util::future::try_join_all(writes.iter().map(|w| store.write_local(w.clone())))
            .await
            .unwrap();
    for write in &writes {
        memory.write_local(write.clone()).await.unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow the calls");
    let entries = entry_count(&store.name()).await;
    assert!(entries >= 4, "200 KiB of ops in {entries} entries");
    for limit in [1, 7, 33, 1000] {
        let mut read = Vec::new();
        let mut after = None;
        loop {
            let page = store.pending_ops(after, limit).await.unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            read.extend(page.iter().map(|op| op.id));
        }
        assert_eq!(read, ids, "pages of {limit}");
    }
    assert_eq!(store.acknowledge(&ids).await.unwrap(), 100);
    let memory_ids = pending_ids(&memory, 1000).await;
    memory.acknowledge(&memory_ids).await.unwrap();
    assert_eq!(entry_count(&store.name()).await, 0);
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
}

/// A database at schema `version` (1 to 5: the stores and indexes of
/// version 1, which later versions kept, and from version 5 its index
/// `delta`), empty.
async fn old_database(name: &str, version: u32) -> idb::Database {
    let mut request = idb::Factory::new()
        .unwrap()
        .open(name, Some(version))
        .unwrap();
    request.on_upgrade_needed(move |event| {
        use idb::DatabaseEvent;
        let database = event.database().unwrap();
        let mut params = idb::ObjectStoreParams::new();
        params.key_path(Some(idb::KeyPath::new_array(["mapName", "key"])));
        let records = database
            .create_object_store("key_value_store", params)
            .unwrap();
        records
            .create_index(
                "mapName_dirty",
                idb::KeyPath::new_array(["mapName", "dirty"]),
                None,
            )
            .unwrap();
        let mut params = idb::ObjectStoreParams::new();
        params
            .key_path(Some(idb::KeyPath::new_single("id")))
            .auto_increment(true);
        let ops = database
            .create_object_store("operation_log", params)
            .unwrap();
        ops.create_index("synced", idb::KeyPath::new_single("synced"), None)
            .unwrap();
        if version >= 5 {
            ops.create_index("delta", idb::KeyPath::new_single("delta"), None)
                .unwrap();
        }
        database
            .create_object_store("meta_store", idb::ObjectStoreParams::new())
            .unwrap();
    });
    request.await.unwrap()
}

/// A database of schema version 1, as an earlier build made it (its
/// stores and indexes, an op in its own entry, a record pruned with its
/// Merkle contribution kept in `meta_store`), opens: the upgrade keeps its
/// op, which reads, and a new write's op follows it; the pruned record is
/// moved, still pruned, and writing its key again takes its contribution
/// out of the sums.
#[wasm_bindgen_test]
async fn a_version_1_database_opens_and_keeps_its_ops() {
    use topgun_storage::conformance::{put, ts};
    let name = format!("version-1-{}", js_sys::Date::now());
    let database = old_database(&name, 1).await;
    // An op of version 1: its fields on the entry, value, stamp and TTL
    // in a MessagePack body.
    let body =
        rmp_serde::to_vec(&(Some(serde_bytes::Bytes::new(b"v")), ts(3), None::<u64>)).unwrap();
    let old = js_sys::Object::new();
    let set = |field: &str, value: &wasm_bindgen::JsValue| {
        js_sys::Reflect::set(&old, &field.into(), value).unwrap();
    };
    set("mapName", &"m".into());
    set("key", &"k".into());
    set("opType", &"PUT".into());
    set("synced", &0.0.into());
    set("body", &js_sys::Uint8Array::from(&body[..]).into());
    let tx = database
        .transaction(&["operation_log"], idb::TransactionMode::ReadWrite)
        .unwrap();
    tx.object_store("operation_log")
        .unwrap()
        .add(&old, None)
        .unwrap()
        .await
        .unwrap();
    tx.commit().unwrap().await.unwrap();
    // A record pruned with its Merkle contribution kept, as versions 1
    // and 2 kept it: the contribution in the sums and in a meta entry.
    let memory = topgun_storage::MemoryStore::new();
    let server = topgun_storage::conformance::remote("m", "p", Some(b"s"), ts(2));
    memory.apply_remote(vec![server]).await.unwrap();
    let pruned = ["p".to_owned()];
    let keep = topgun_storage::PruneSums::Keep;
    memory.prune_clean("m", &pruned, keep).await.unwrap();
    let leaves = memory.merkle_leaves("m").await.unwrap();
    let leaf = leaves.iter().position(|sum| *sum != 0).unwrap();
    let chunk: Vec<u8> = leaves[leaf / 64 * 64..][..64]
        .iter()
        .flat_map(|sum| sum.to_le_bytes())
        .collect();
    let tx = database
        .transaction(&["meta_store"], idb::TransactionMode::ReadWrite)
        .unwrap();
    let meta = tx.object_store("meta_store").unwrap();
    let key = |parts: &[wasm_bindgen::JsValue]| -> wasm_bindgen::JsValue {
        parts.iter().collect::<js_sys::Array>().into()
    };
    let bytes = |b: &[u8]| -> wasm_bindgen::JsValue { js_sys::Uint8Array::from(b).into() };
    let chunk_key = key(&["merkle".into(), bytes(b"m"), ((leaf / 64) as f64).into()]);
    meta.put(&bytes(&chunk), Some(&chunk_key)).unwrap();
    let pruned_key = key(&["pruned".into(), bytes(b"m"), bytes(b"p")]);
    meta.put(&f64::from(leaves[leaf]).into(), Some(&pruned_key))
        .unwrap();
    // A pruned entry beside a record of its key (no version wrote that):
    // the record stays.
    let stray = key(&["pruned".into(), bytes(b"m"), bytes(b"live")]);
    meta.put(&7.0.into(), Some(&stray)).unwrap();
    tx.commit().unwrap().await.unwrap();
    let live =
        rmp_serde::to_vec(&(Some(serde_bytes::Bytes::new(b"l")), ts(1), None::<u64>)).unwrap();
    let record = js_sys::Object::new();
    js_sys::Reflect::set(&record, &"mapName".into(), &bytes(b"m")).unwrap();
    js_sys::Reflect::set(&record, &"key".into(), &bytes(b"live")).unwrap();
    js_sys::Reflect::set(&record, &"dirty".into(), &0.0.into()).unwrap();
    js_sys::Reflect::set(&record, &"body".into(), &bytes(&live)).unwrap();
    let tx = database
        .transaction(&["key_value_store"], idb::TransactionMode::ReadWrite)
        .unwrap();
    let records = tx.object_store("key_value_store").unwrap();
    records.put(&record, None).unwrap();
    tx.commit().unwrap().await.unwrap();
    database.close();

    let store = IndexedDbStore::open_named(&name).await.unwrap();
    // The pruned record moved into key_value_store: still pruned, and
    // written again its kept contribution leaves the sums.
    assert!(store.is_pruned("m", "p").await.unwrap());
    assert_eq!(store.get("m", "p").await.unwrap(), None);
    let kept = store.get("m", "live").await.unwrap().unwrap();
    assert_eq!(kept.value.as_deref(), Some(&b"l"[..]));
    assert!(!store.is_pruned("m", "live").await.unwrap());
    assert_eq!(store.merkle_leaves("m").await.unwrap(), leaves);
    let again = put("m", "p", b"again", ts(20));
    store.write_local_checked(again.clone()).await.unwrap();
    memory.write_local_checked(again).await.unwrap();
    let memory_leaves = memory.merkle_leaves("m").await.unwrap();
    assert_eq!(store.merkle_leaves("m").await.unwrap(), memory_leaves);
    assert!(!store.is_pruned("m", "p").await.unwrap());
    let ops = store.pending_ops(None, 10).await.unwrap();
    assert_eq!(ops.len(), 2);
    let ops = &ops[..1];
    assert_eq!((ops[0].map_name.as_str(), ops[0].key.as_str()), ("m", "k"));
    assert_eq!(ops[0].value.as_deref(), Some(&b"v"[..]));
    assert_eq!(ops[0].timestamp, ts(3));
    let next = store.write_local(put("m", "j", b"w", ts(4))).await.unwrap();
    assert!(next > ops[0].id);
    let all = store.pending_ops(None, 10).await.unwrap();
    assert_eq!(all.first().map(|op| op.id), Some(ops[0].id));
    assert_eq!(all.last().map(|op| op.id), Some(next));
}

/// Every key and value of object store `store` of database `name`.
async fn raw_contents(name: &str, store: &str) -> (js_sys::Array, js_sys::Array) {
    with_raw_store(name, store, |store| async move {
        let keys = store.get_all_keys(None, None).unwrap().await.unwrap();
        let values = store.get_all(None, None).unwrap().await.unwrap();
        (keys.into_iter().collect(), values.into_iter().collect())
    })
    .await
}

/// A database of schema version 5 (each map's sums in chunks of 64
/// leaves, every delta an op-log entry carries unfolded) opens with the
/// same counts and sums, and settling its ops takes each delta once.
/// It is made from one of this version: the same records, ops and meta
/// entries, laid out as version 5 kept them.
#[wasm_bindgen_test]
async fn a_version_5_database_opens_with_its_counts_and_sums() {
    use topgun_storage::conformance::{put, remote, ts};
    use wasm_bindgen::JsValue;
    let (store, ()) = fresh().await;
    let name = store.name();
    // More single writes than a fold waits for: a base, a mark, and
    // carriers past it; a merge's delta in `meta_store`.
    for i in 0..300 {
        let write = put("m", &format!("k{i:03}"), b"v", ts(10 + i));
        store.write_local(write).await.unwrap();
    }
    let merged = vec![remote("n", "server", Some(b"s"), ts(5))];
    store.apply_remote(merged).await.unwrap();
    let (in_meta, carried) = delta_count(&name).await;
    assert!(in_meta > 0 && carried > 0 && carried < 256);

    let old = format!("version-5-{}", js_sys::Date::now());
    let (mark_key, sums_tag) = (JsValue::from_str("folded"), JsValue::from_str("sums"));
    let (keys, values) = raw_contents(&name, "meta_store").await;
    let mut folded = 0.0;
    let mut meta = Vec::new();
    for (key, value) in keys.iter().zip(values.iter()) {
        let tag = js_sys::Reflect::get_u32(&key, 0).unwrap();
        if tag == mark_key {
            folded = value.as_f64().unwrap();
        } else if tag == sums_tag {
            // Version 5's chunks: `["merkle", map, chunk]`.
            let sums = js_sys::Uint8Array::new(&value);
            for chunk in 0..64u32 {
                let part = sums.slice(chunk * 256, (chunk + 1) * 256);
                let map_name = js_sys::Reflect::get_u32(&key, 1).unwrap();
                let chunk_key =
                    js_sys::Array::of3(&"merkle".into(), &map_name, &f64::from(chunk).into());
                meta.push((chunk_key.into(), part.into()));
            }
        } else {
            meta.push((key, value));
        }
    }
    let (_, entries) = raw_contents(&name, "operation_log").await;
    let (_, records) = raw_contents(&name, "key_value_store").await;
    let database = old_database(&old, 5).await;
    let tx = database
        .transaction(
            &["meta_store", "operation_log", "key_value_store"],
            idb::TransactionMode::ReadWrite,
        )
        .unwrap();
    let meta_store = tx.object_store("meta_store").unwrap();
    for (key, value) in &meta {
        meta_store.put(value, Some(key)).unwrap();
    }
    let ops = tx.object_store("operation_log").unwrap();
    for entry in entries.iter() {
        // Version 5 had no mark: an entry whose delta was folded had it
        // taken away, and none had `carries`.
        let object: js_sys::Object = entry.clone().into();
        js_sys::Reflect::delete_property(&object, &"carries".into()).unwrap();
        let id = js_sys::Reflect::get(&entry, &"id".into()).unwrap();
        if id.as_f64().unwrap() <= folded {
            js_sys::Reflect::delete_property(&object, &"delta".into()).unwrap();
        }
        ops.put(&entry, None).unwrap();
    }
    let record_store = tx.object_store("key_value_store").unwrap();
    for record in records.iter() {
        record_store.put(&record, None).unwrap();
    }
    tx.commit().unwrap().await.unwrap();
    database.close();
    assert!(folded > 0.0);

    let upgraded = IndexedDbStore::open_named(&old).await.unwrap();
    for map_name in ["m", "n"] {
        assert_eq!(
            upgraded.merkle_leaves(map_name).await.unwrap(),
            store.merkle_leaves(map_name).await.unwrap()
        );
    }
    assert_eq!(
        upgraded.stats().await.unwrap(),
        store.stats().await.unwrap()
    );
    // Settling every op (folded ones and carriers) in both, then writes
    // past another fold: the same counts and sums.
    for s in [&store, &upgraded] {
        s.acknowledge(&pending_ids(s, 1000).await).await.unwrap();
        for i in 0..260 {
            let write = put("m", &format!("j{i:03}"), b"w", ts(1000 + i));
            s.write_local(write).await.unwrap();
        }
    }
    assert_eq!(
        upgraded.stats().await.unwrap(),
        store.stats().await.unwrap()
    );
    assert_eq!(
        upgraded.merkle_leaves("m").await.unwrap(),
        store.merkle_leaves("m").await.unwrap()
    );
}

/// The keys of map `m😀` and of its dirty records.
async fn listing(store: &dyn Store) -> (Vec<String>, Vec<String>) {
    use topgun_storage::StoreRecord;
    let keys = |rs: Vec<StoreRecord>| rs.into_iter().map(|r| r.key).collect::<Vec<_>>();
    let records = store.scan("m😀", None, 100).await.unwrap();
    let dirty = store.dirty_records("m😀", None, 100).await.unwrap();
    (keys(records), keys(dirty))
}

/// A database of schema version 3 (map names and keys as UTF-8 bytes)
/// opens with every record and pruned entry at its new key (more records
/// than the upgrade renames at a time): reads, scans in `str` order,
/// dirty scans, pruned checks and map listing see them as the memory
/// store sees the same records.
#[wasm_bindgen_test]
async fn a_version_3_database_opens_with_its_records_renamed() {
    use topgun_storage::conformance::{put, remote, ts};
    use topgun_storage::MemoryStore;
    let name = format!("version-3-{}", js_sys::Date::now());
    let database = old_database(&name, 3).await;
    let bytes = |b: &[u8]| -> wasm_bindgen::JsValue { js_sys::Uint8Array::from(b).into() };
    let object = |fields: &[(&str, wasm_bindgen::JsValue)]| {
        let object = js_sys::Object::new();
        for (field, value) in fields {
            js_sys::Reflect::set(&object, &(*field).into(), value).unwrap();
        }
        object
    };
    let keys = ["b", "\u{e000}", "😀", "a", "日本"];
    let memory = MemoryStore::new();
    let tx = database
        .transaction(&["key_value_store"], idb::TransactionMode::ReadWrite)
        .unwrap();
    let records = tx.object_store("key_value_store").unwrap();
    for (i, key) in keys.iter().enumerate() {
        let dirty = i % 2 == 0;
        let value = key.as_bytes();
        let body =
            rmp_serde::to_vec(&(Some(serde_bytes::Bytes::new(value)), ts(1), None::<u64>)).unwrap();
        let stored = object(&[
            ("mapName", bytes("m😀".as_bytes())),
            ("key", bytes(key.as_bytes())),
            ("dirty", f64::from(u8::from(dirty)).into()),
            ("body", bytes(&body)),
        ]);
        records.put(&stored, None).unwrap();
        if dirty {
            memory
                .write_local(put("m😀", key, value, ts(1)))
                .await
                .unwrap();
        } else {
            let merged = remote("m😀", key, Some(value), ts(1));
            memory.apply_remote(vec![merged]).await.unwrap();
        }
    }
    let stub = object(&[
        ("mapName", bytes("m😀".as_bytes())),
        ("key", bytes("p".as_bytes())),
        ("pruned", 9.0.into()),
    ]);
    records.put(&stub, None).unwrap();
    // More records than the upgrade renames per page.
    let body =
        rmp_serde::to_vec(&(Some(serde_bytes::Bytes::new(b"v")), ts(1), None::<u64>)).unwrap();
    for i in 0..2_100 {
        let key = format!("k{i:04}");
        let stored = object(&[
            ("mapName", bytes(b"big")),
            ("key", bytes(key.as_bytes())),
            ("dirty", 0.0.into()),
            ("body", bytes(&body)),
        ]);
        records.put(&stored, None).unwrap();
    }
    tx.commit().unwrap().await.unwrap();
    database.close();

    let store = IndexedDbStore::open_named(&name).await.unwrap();
    let big = store.scan("big", None, 10_000).await.unwrap();
    let expected: Vec<String> = (0..2_100).map(|i| format!("k{i:04}")).collect();
    assert_eq!(big.into_iter().map(|r| r.key).collect::<Vec<_>>(), expected);
    assert_eq!(store.map_names().await.unwrap(), ["big", "m😀"]);
    for key in keys {
        let record = store.get("m😀", key).await.unwrap().unwrap();
        assert_eq!(record.value.as_deref(), Some(key.as_bytes()));
    }
    let listed = listing(&store).await;
    let memory_listed = listing(&memory).await;
    assert_eq!(listed.0, memory_listed.0);
    assert_eq!(listed.1, memory_listed.1);
    assert_eq!(listed.0, ["a", "b", "日本", "\u{e000}", "😀"]);
    assert!(store.is_pruned("m😀", "p").await.unwrap());
    assert!(!store.is_pruned("m😀", "a").await.unwrap());
}

/// How many counters deltas database `name` holds unfolded: in
/// `meta_store`, and carried by `operation_log` entries past the folded
/// mark.
async fn delta_count(name: &str) -> (u32, u32) {
    let folded = with_raw_store(name, "meta_store", |meta| async move {
        let mark = meta
            .get(wasm_bindgen::JsValue::from(js_sys::Array::of1(
                &"folded".into(),
            )))
            .unwrap()
            .await
            .unwrap();
        mark.and_then(|m| m.as_f64()).unwrap_or(0.0)
    })
    .await;
    let in_meta = with_raw_store(name, "meta_store", |meta| async move {
        let range = idb::KeyRange::bound(
            &js_sys::Array::of1(&"delta".into()).into(),
            &js_sys::Array::of2(&"delta".into(), &js_sys::Array::new()).into(),
            Some(true),
            Some(true),
        )
        .unwrap();
        meta.count(Some(range.into())).unwrap().await.unwrap()
    })
    .await;
    let carried = with_raw_store(name, "operation_log", |ops| async move {
        let past_mark = idb::KeyRange::lower_bound(
            &js_sys::Array::of2(&1.0.into(), &folded.into()).into(),
            Some(true),
        )
        .unwrap();
        ops.index("carriers")
            .unwrap()
            .count(Some(past_mark.into()))
            .unwrap()
            .await
            .unwrap()
    })
    .await;
    (in_meta, carried)
}

/// Three connections to one database (three tabs) write the same keys,
/// most of them checked writes tried without reading the key first: a
/// key that has a record, or a pruned entry, makes that attempt fail and
/// the write is made again with reads. The answers, counts and Merkle
/// sums end as the memory store's after the same writes.
#[wasm_bindgen_test]
async fn connections_sharing_a_database_keep_counts_and_sums_exact() {
    use topgun_storage::conformance::{put, remote, remove, ts};
    use topgun_storage::{MemoryStore, PruneSums};
    let (a, ()) = fresh().await;
    let b = IndexedDbStore::open_named(&a.name()).await.unwrap();
    let memory = MemoryStore::new();
    // New keys from both tabs.
    for i in 0..6 {
        let store = if i % 2 == 0 { &a } else { &b };
        let write = put("m", &format!("k{i}"), b"one", ts(10 + i));
        let stored = store.write_local_checked(write.clone()).await.unwrap();
        let expected = memory.write_local_checked(write).await.unwrap();
        assert_eq!(stored.1, expected.1, "k{i} had no record");
    }
    // Keys the other tab wrote: the unread attempt fails, the write is
    // made with reads and answers the record it replaced.
    for i in 0..6 {
        let store = if i % 2 == 0 { &b } else { &a };
        let write = put("m", &format!("k{i}"), b"two", ts(100 + i));
        let stored = store.write_local_checked(write.clone()).await.unwrap();
        let expected = memory.write_local_checked(write).await.unwrap();
        assert_eq!(stored.1, expected.1, "k{i}'s previous record");
        assert_eq!(stored.1.unwrap().value.as_deref(), Some(&b"one"[..]));
    }
    // An older checked write is refused, from either tab.
    let stale = a.write_local_checked(put("m", "k1", b"old", ts(1))).await;
    assert!(matches!(
        stale,
        Err(topgun_storage::StorageError::Stale { .. })
    ));
    a.write_local(remove("m", "k2", ts(200))).await.unwrap();
    memory
        .write_local(remove("m", "k2", ts(200)))
        .await
        .unwrap();

    // Clean records pruned with their sums kept, then written again by a
    // third tab that has not read them: their kept contribution leaves
    // the sums.
    let merged: Vec<_> = (0..3)
        .map(|i| remote("m", &format!("p{i}"), Some(b"server"), ts(300 + i)))
        .collect();
    b.apply_remote(merged.clone()).await.unwrap();
    memory.apply_remote(merged).await.unwrap();
    let pruned: Vec<String> = (0..3).map(|i| format!("p{i}")).collect();
    b.prune_clean("m", &pruned, PruneSums::Keep).await.unwrap();
    memory
        .prune_clean("m", &pruned, PruneSums::Keep)
        .await
        .unwrap();
    assert_eq!(
        a.merkle_leaves("m").await.unwrap(),
        memory.merkle_leaves("m").await.unwrap()
    );
    let c = IndexedDbStore::open_named(&a.name()).await.unwrap();
    for i in 0..3 {
        let write = put("m", &format!("p{i}"), b"again", ts(400 + i));
        let stored = c.write_local_checked(write.clone()).await.unwrap();
        let expected = memory.write_local_checked(write).await.unwrap();
        assert_eq!(stored.1, expected.1);
    }
    assert!(!c.is_pruned("m", "p0").await.unwrap());

    for store in [&a, &b, &c] {
        assert_eq!(
            store.merkle_leaves("m").await.unwrap(),
            memory.merkle_leaves("m").await.unwrap()
        );
        assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    }
    assert_eq!(
        a.scan("m", None, 100).await.unwrap(),
        memory.scan("m", None, 100).await.unwrap()
    );
}

/// `store`'s counts and `m`'s Merkle sums are `memory`'s.
async fn same_counts(store: &IndexedDbStore, memory: &topgun_storage::MemoryStore) {
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    assert_eq!(
        store.merkle_leaves("m").await.unwrap(),
        memory.merkle_leaves("m").await.unwrap()
    );
}

/// A connection folds the deltas its writes add into the base now and
/// then (any connection's, left by a closed tab too): they do not pile
/// up, and counts and sums read the same before and after. A write that
/// logs ops carries its delta in its op-log entry; acknowledging the ops
/// moves it, with the change the acknowledgement makes, into the
/// acknowledging transaction's delta.
#[wasm_bindgen_test]
async fn deltas_are_folded_into_the_counters_and_sums() {
    use topgun_storage::conformance::{put, remote, ts};
    use topgun_storage::MemoryStore;
    let (store, ()) = fresh().await;
    let name = store.name();
    let memory = MemoryStore::new();
    // A tab that wrote and went away: four local writes (their deltas in
    // their op-log entries) and a merge from the server (logs no op: its
    // delta is in `meta_store`).
    let gone = IndexedDbStore::open_named(&name).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let write = put("m", &format!("gone{i}"), b"v", ts(1 + i));
        ids.push(gone.write_local(write.clone()).await.unwrap());
        memory.write_local(write).await.unwrap();
    }
    let merged = vec![remote("m", "server", Some(b"s"), ts(50))];
    gone.apply_remote(merged.clone()).await.unwrap();
    memory.apply_remote(merged).await.unwrap();
    gone.close();
    assert_eq!(delta_count(&name).await, (1, 4));
    same_counts(&store, &memory).await;
    // Two of them acknowledged: their entries go, their deltas move into
    // the acknowledgement's own (in `meta_store`).
    store.acknowledge(&ids[..2]).await.unwrap();
    let memory_acked = pending_ids(&memory, 2).await;
    memory.acknowledge(&memory_acked).await.unwrap();
    assert_eq!(delta_count(&name).await, (2, 2));
    same_counts(&store, &memory).await;
    // One write at a time: a transaction and a delta each.
    for i in 0..300 {
        let write = put("m", &format!("k{i:03}"), b"v", ts(1000 + i));
        store.write_local(write.clone()).await.unwrap();
        memory.write_local(write).await.unwrap();
    }
    let (in_meta, carried) = delta_count(&name).await;
    assert!(
        in_meta + carried < 256,
        "{in_meta} + {carried} deltas left unfolded"
    );
    same_counts(&store, &memory).await;
    // The entries whose delta the fold took still settle, and their
    // delta is not counted again.
    store
        .acknowledge(&pending_ids(&store, 1000).await)
        .await
        .unwrap();
    memory
        .acknowledge(&pending_ids(&memory, 1000).await)
        .await
        .unwrap();
    assert_eq!(entry_count(&name).await, 0);
    same_counts(&store, &memory).await;
}

/// Records pruned with their sums kept leave entries among the map's
/// records: scans page over them at any page size, and a map left with
/// none but those is not listed, as in the memory store.
#[wasm_bindgen_test]
async fn scans_and_map_listing_pass_over_pruned_records() {
    use topgun_storage::conformance::{remote, ts};
    use topgun_storage::{MemoryStore, PruneSums, ScanCursor};
    let (store, ()) = fresh().await;
    let memory = MemoryStore::new();
    let merged: Vec<_> = (0..300)
        .map(|i| remote("m", &format!("k{i:03}"), Some(b"v"), ts(1 + i)))
        .chain((0..5).map(|i| remote("q", &format!("q{i}"), Some(b"v"), ts(1))))
        .collect();
    store.apply_remote(merged.clone()).await.unwrap();
    memory.apply_remote(merged).await.unwrap();
    // Long runs of pruned records, a few records left between them.
    let pruned: Vec<String> = (0..300)
        .filter(|i| i % 97 != 5)
        .map(|i| format!("k{i:03}"))
        .collect();
    let all_q: Vec<String> = (0..5).map(|i| format!("q{i}")).collect();
    for store in [&store as &dyn Store, &memory] {
        store
            .prune_clean("m", &pruned, PruneSums::Keep)
            .await
            .unwrap();
        store
            .prune_clean("q", &all_q, PruneSums::Keep)
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..300)
        .filter(|i| i % 97 == 5)
        .map(|i| format!("k{i:03}"))
        .collect();
    for page in [1, 2, 7, 1000] {
        let mut cursor = ScanCursor::new("m", page);
        let mut keys = Vec::new();
        while let Some(records) = cursor.next_page(&store).await.unwrap() {
            keys.extend(records.into_iter().map(|r| r.key));
        }
        assert_eq!(keys, expected, "pages of {page}");
    }
    assert_eq!(
        store.map_names().await.unwrap(),
        memory.map_names().await.unwrap()
    );
    assert_eq!(store.map_names().await.unwrap(), ["m"]);
    assert_eq!(store.stats().await.unwrap(), memory.stats().await.unwrap());
    assert_eq!(
        store.merkle_leaves("q").await.unwrap(),
        memory.merkle_leaves("q").await.unwrap()
    );
}

/// A scan's page (read into wasm with one call) holds keys of every
/// UTF-8 width and passes over pruned entries; a stored object without
/// body bytes is a clear error, not a panic or a wrong record.
#[wasm_bindgen_test]
async fn a_page_reads_keys_of_every_width_and_refuses_a_corrupt_object() {
    use topgun_storage::conformance::{remote, ts};
    use topgun_storage::{PruneSums, StorageError};
    let name = format!("page-{}", js_sys::Date::now());
    let store = IndexedDbStore::open_named(&name).await.unwrap();
    let keys = [
        "a",
        "é: two bytes",
        "€: three",
        "😀: four",
        "\u{E000}: shifted",
        "z",
    ];
    let merged: Vec<_> = (0u64..)
        .zip(keys)
        .map(|(i, key)| remote("m", key, Some(key.as_bytes()), ts(1 + i)))
        .collect();
    store.apply_remote(merged).await.unwrap();
    store
        .prune_clean("m", &["€: three".to_owned()], PruneSums::Keep)
        .await
        .unwrap();
    let page = store.scan("m", None, 100).await.unwrap();
    let mut expected: Vec<&str> = keys.into_iter().filter(|k| *k != "€: three").collect();
    expected.sort_unstable();
    let read: Vec<&str> = page.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(read, expected);
    for record in &page {
        assert_eq!(record.value.as_deref(), Some(record.key.as_bytes()));
        assert!(!record.dirty);
    }
    with_raw_store(&name, "key_value_store", |records| async move {
        let object = js_sys::Object::new();
        for (field, value) in [("mapName", "m"), ("key", "b"), ("body", "not bytes")] {
            js_sys::Reflect::set(&object, &field.into(), &value.into()).unwrap();
        }
        js_sys::Reflect::set(&object, &"dirty".into(), &0.into()).unwrap();
        records.put(&object, None).unwrap().await.unwrap();
    })
    .await;
    let error = store.scan("m", None, 100).await.unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("key_value_store"), "{error}");
}
