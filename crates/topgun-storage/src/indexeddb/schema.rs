//! The database schema and its versioned upgrades.
//!
//! Version 1 (TopGun's browser client schema):
//! - `key_value_store`: key path `[mapName, key]`, index `mapName_dirty`
//!   over `[mapName, dirty]`;
//! - `operation_log`: auto-increment key path `id`, index `synced`;
//! - `meta_store`: out-of-line keys.
//!
//! Version 2: an `operation_log` entry holds the ops of one write
//! transaction (see `codec`) instead of one. The stores and indexes are
//! unchanged and entries of version 1 read as entries of one op, so the
//! upgrade changes nothing stored; the version tells an older build,
//! which would misread the new entries, to refuse the database. Op ids
//! are renumbered by it (the op of version-1 entry `e` becomes op 0 of
//! entry `e`); nothing keeps an op id across opening the database.
//!
//! Version 3: a write transaction no longer rewrites the counters and
//! Merkle sum chunks in `meta_store`; it adds a delta entry beside them
//! (see `delta`). A record pruned with its Merkle contribution kept
//! leaves an entry in `key_value_store` at its key (see `codec::Stored`)
//! instead of one in `meta_store`: the upgrade moves those. An older
//! build, which would ignore the deltas, refuses the database.
//!
//! Version 4: `key_value_store`'s map names and keys are strings (see
//! `codec`), where earlier versions stored them as UTF-8 bytes; the
//! upgrade rewrites every record and pruned entry at its new key.
//!
//! Version 5: a write transaction that logs ops carries its delta in its
//! first `operation_log` entry (field `delta`) instead of adding one to
//! `meta_store`; index `delta` over that field finds the entries that
//! carry one (see `delta`). The upgrade adds the index; an older build,
//! which would ignore those deltas, refuses the database.
//!
//! Version 6: the base leaf sums of a map are one value,
//! `["sums", map]`, instead of chunks of 64 at `["merkle", map, chunk]`;
//! a fold no longer rewrites the entries that carry a delta but moves a
//! mark past them, and index `carriers` over `["carries", "id"]`
//! replaces index `delta` (see `delta`). The upgrade joins the chunks
//! and gives every entry that carries a delta field `carries`; an older
//! build, which would count folded deltas again, refuses the database.
//!
//! The IndexedDB version is the schema version. Each upgrade step runs in
//! the browser's `upgradeneeded` transaction, from the version found to
//! [`INDEXEDDB_SCHEMA_VERSION`]; a database of a newer version is refused with
//! [`StorageError::SchemaTooNew`] and left untouched.

use super::codec;
use super::js::{array, byte_name_part, bytes, idb_error, set, JsFailure};
use crate::error::StorageError;
use idb::{
    Database, DatabaseEvent, Event, Factory, IndexParams, KeyPath, ObjectStoreParams, Request,
};
use std::collections::BTreeMap;
use std::future::IntoFuture;
use topgun_core::merkle::LEAVES;
use wasm_bindgen::{JsCast, JsValue};

/// The schema version this build writes and reads.
pub const INDEXEDDB_SCHEMA_VERSION: u32 = 6;

pub(crate) const RECORDS: &str = "key_value_store";
pub(crate) const OPS: &str = "operation_log";
pub(crate) const META: &str = "meta_store";
pub(crate) const DIRTY_INDEX: &str = "mapName_dirty";
pub(crate) const SYNCED_INDEX: &str = "synced";
pub(crate) const CARRIERS_INDEX: &str = "carriers";
/// The index version 5 had in place of [`CARRIERS_INDEX`].
const OLD_DELTA_INDEX: &str = "delta";

/// Opens (creating or upgrading) database `name`: the connection, and the
/// same as a JS value (for the calls made without `idb`).
pub(crate) async fn open(name: &str) -> Result<(Database, JsValue), StorageError> {
    let factory = Factory::new().map_err(idb_error("opening IndexedDB"))?;
    let mut request = factory
        .open(name, Some(INDEXEDDB_SCHEMA_VERSION))
        .map_err(idb_error("opening the database"))?;
    request.on_upgrade_needed(|event| {
        // A JS exception thrown from `upgradeneeded` aborts the upgrade
        // transaction, which fails the open request below.
        if let Err(error) = upgrade(&event) {
            wasm_bindgen::throw_str(&format!("IndexedDB schema upgrade failed: {error}"));
        }
    });
    match request.await {
        Ok(database) => {
            let handle = JsValue::from(database);
            let mut database =
                Database::try_from(handle.clone()).map_err(idb_error("opening the database"))?;
            // Another tab upgrading or deleting the database waits for
            // every connection to close: this one closes at once (later
            // calls fail) instead of blocking it.
            database.on_version_change(|event| {
                let target = js_sys::Reflect::get(&event, &"target".into());
                if let Ok(target) = target {
                    let close = js_sys::Reflect::get(&target, &"close".into());
                    if let Ok(close) = close.and_then(|c| c.dyn_into::<js_sys::Function>()) {
                        let _ = close.call0(&target);
                    }
                }
            });
            Ok((database, handle))
        }
        Err(error) => {
            let failure = JsFailure::from_idb(&error);
            if failure.name == "VersionError" {
                return Err(StorageError::SchemaTooNew {
                    found: stored_version(&factory, name).await?,
                    supported: INDEXEDDB_SCHEMA_VERSION,
                });
            }
            Err(failure.into_error("opening the database"))
        }
    }
}

/// The version of an existing database, read by opening it unversioned.
async fn stored_version(factory: &Factory, name: &str) -> Result<u32, StorageError> {
    let database = factory
        .open(name, None)
        .map_err(idb_error("reading the database version"))?
        .await
        .map_err(idb_error("reading the database version"))?;
    let version = database
        .version()
        .map_err(idb_error("reading the database version"));
    database.close();
    version
}

fn upgrade(event: &idb::event::VersionChangeEvent) -> Result<(), idb::Error> {
    let database = event.database()?;
    let from = event.old_version()?;
    if from < 1 {
        let mut params = ObjectStoreParams::new();
        params.key_path(Some(KeyPath::new_array(["mapName", "key"])));
        let records = database.create_object_store(RECORDS, params)?;
        records.create_index(
            DIRTY_INDEX,
            KeyPath::new_array(["mapName", "dirty"]),
            Some(IndexParams::new()),
        )?;

        let mut params = ObjectStoreParams::new();
        params
            .key_path(Some(KeyPath::new_single("id")))
            .auto_increment(true);
        let ops = database.create_object_store(OPS, params)?;
        ops.create_index(
            SYNCED_INDEX,
            KeyPath::new_single("synced"),
            Some(IndexParams::new()),
        )?;

        database.create_object_store(META, ObjectStoreParams::new())?;
    }
    if from < 6 {
        let ops = event
            .target()?
            .transaction()
            .ok_or(idb::Error::TransactionNotFound)?
            .object_store(OPS)?;
        ops.create_index(
            CARRIERS_INDEX,
            KeyPath::new_array([codec::ENTRY_CARRIES, "id"]),
            Some(IndexParams::new()),
        )?;
    }
    if (1..6).contains(&from) {
        let tx = event
            .target()?
            .transaction()
            .ok_or(idb::Error::TransactionNotFound)?;
        wasm_bindgen_futures::spawn_local(async move {
            let upgraded = async {
                if from < 4 {
                    rename_records(&tx).await?;
                }
                if from < 3 {
                    move_pruned(&tx).await?;
                }
                join_sums(&tx).await?;
                if from == 5 {
                    mark_carriers(&tx).await?;
                }
                Ok::<_, StorageError>(())
            };
            // Failing, the upgrade is aborted and the open fails with it.
            if upgraded.await.is_err() {
                let _ = tx.abort();
            }
        });
    }
    Ok(())
}

/// The keys and values of `store` in `range` (the first `limit`), read
/// with one wait; in one transaction the two come in the same order.
async fn keys_and_values(
    store: &idb::ObjectStore,
    range: &idb::KeyRange,
    limit: Option<u32>,
    during: &'static str,
) -> Result<(Vec<JsValue>, Vec<JsValue>), StorageError> {
    let keys = store
        .get_all_keys(Some(range.clone().into()), limit)
        .map_err(idb_error(during))?
        .into_future();
    let values = store
        .get_all(Some(range.clone().into()), limit)
        .map_err(idb_error(during))?
        .into_future();
    Ok((
        keys.await.map_err(idb_error(during))?,
        values.await.map_err(idb_error(during))?,
    ))
}

/// Joins the chunks of leaf sums of schema versions 1 to 5 into one
/// value per map, in the upgrade transaction.
async fn join_sums(tx: &idb::Transaction) -> Result<(), StorageError> {
    const DURING: &str = "joining Merkle sums";
    let meta = tx.object_store(META).map_err(idb_error(DURING))?;
    let range = codec::old_sums_range()?;
    let (keys, values) = keys_and_values(&meta, &range, None, DURING).await?;
    let mut joined: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (key, value) in keys.iter().zip(&values) {
        let (map_name, chunk) = codec::old_sums_chunk_of(key)?;
        let chunk_sums = codec::sums_from_js(Some(value), codec::OLD_SUMS_CHUNK)?;
        let sums = joined.entry(map_name).or_insert_with(|| vec![0; LEAVES]);
        let at = chunk * codec::OLD_SUMS_CHUNK;
        sums[at..at + codec::OLD_SUMS_CHUNK].copy_from_slice(&chunk_sums);
    }
    meta.delete(range).map_err(idb_error(DURING))?;
    for (map_name, sums) in joined {
        meta.put(&codec::sums_to_js(&sums), Some(&codec::sums_key(&map_name)))
            .map_err(idb_error(DURING))?;
    }
    Ok(())
}

/// Gives every `operation_log` entry of schema version 5 that carries a
/// delta (every one is unfolded there) field `carries`, and drops that
/// version's index of them, in the upgrade transaction.
async fn mark_carriers(tx: &idb::Transaction) -> Result<(), StorageError> {
    const DURING: &str = "marking the entries that carry a delta";
    let ops = tx.object_store(OPS).map_err(idb_error(DURING))?;
    let carriers = ops
        .index(OLD_DELTA_INDEX)
        .map_err(idb_error(DURING))?
        .get_all(None, None)
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    for entry in &carriers {
        set(entry, codec::ENTRY_CARRIES, &JsValue::from_f64(1.0))?;
        ops.put(entry, None).map_err(idb_error(DURING))?;
    }
    ops.delete_index(OLD_DELTA_INDEX)
        .map_err(idb_error(DURING))?;
    Ok(())
}

/// Records renamed per round trip of [`rename_records`].
const RENAME_PAGE: u32 = 1024;

/// Rewrites every entry of `key_value_store` of schema versions 1 to 3
/// (map name and key as UTF-8 bytes) at its key of version 4 (strings),
/// in the upgrade transaction, a page at a time.
async fn rename_records(tx: &idb::Transaction) -> Result<(), StorageError> {
    const DURING: &str = "renaming records";
    let records = tx.object_store(RECORDS).map_err(idb_error(DURING))?;
    // Every key of those versions is `[bytes, bytes]`: an array key whose
    // first part is binary sorts after every `[string, string]` and from
    // `[empty bytes]` on. Renamed records leave the range, so each page
    // reads it from its start again.
    let old = idb::KeyRange::lower_bound(&array(&[bytes(&[])]), Some(false))
        .map_err(idb_error(DURING))?;
    loop {
        let (keys, values) = keys_and_values(&records, &old, Some(RENAME_PAGE), DURING).await?;
        if keys.is_empty() {
            return Ok(());
        }
        for (key, value) in keys.iter().zip(&values) {
            let name = |n| {
                byte_name_part(key, n)
                    .ok_or_else(|| codec::corrupt(RECORDS, "a key is not [mapName, key] of UTF-8"))
            };
            let (map_name, record_key) = (name(0)?, name(1)?);
            codec::rename(value, &map_name, &record_key)?;
            records.delete(key.clone()).map_err(idb_error(DURING))?;
            records.put(value, None).map_err(idb_error(DURING))?;
        }
        // Requests of a transaction run in order: the next page's reads
        // see these writes, and a failed one aborts the transaction.
    }
}

/// Moves the pruned records' entries of schema versions 1 and 2 from
/// `meta_store` into `key_value_store`, in the upgrade transaction. A key
/// that has a record keeps it (those versions took the entry away when
/// they wrote the key, so this is only in case).
async fn move_pruned(tx: &idb::Transaction) -> Result<(), StorageError> {
    const DURING: &str = "moving pruned records";
    let meta = tx.object_store(META).map_err(idb_error(DURING))?;
    let records = tx.object_store(RECORDS).map_err(idb_error(DURING))?;
    let range = codec::old_pruned_range()?;
    let (keys, values) = keys_and_values(&meta, &range, None, DURING).await?;
    let mut moves = Vec::with_capacity(keys.len());
    for (key, value) in keys.iter().zip(&values) {
        let (Some(map_name), Some(record_key)) = (byte_name_part(key, 1), byte_name_part(key, 2))
        else {
            return Err(codec::corrupt(
                META,
                "a pruned entry's key is not [\"pruned\", map, key]",
            ));
        };
        let kept = codec::contribution_from_js(value)?;
        let record = codec::record_key(&map_name, &record_key);
        let present = records
            .count(Some(record.into()))
            .map_err(idb_error(DURING))?
            .into_future();
        moves.push((map_name, record_key, kept, present));
    }
    for (map_name, record_key, kept, present) in moves {
        if present.await.map_err(idb_error(DURING))? == 0 {
            records
                .put(&codec::pruned_to_js(&map_name, &record_key, kept)?, None)
                .map_err(idb_error(DURING))?;
        }
    }
    meta.delete(range).map_err(idb_error(DURING))?;
    Ok(())
}
