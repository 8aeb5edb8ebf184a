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
//! (see `delta`). Nothing stored changes in the upgrade; an older build,
//! which would ignore the deltas, refuses the database.
//!
//! The IndexedDB version is the schema version. Each upgrade step runs in
//! the browser's `upgradeneeded` transaction, from the version found to
//! [`SCHEMA_VERSION`]; a database of a newer version is refused with
//! [`StorageError::SchemaTooNew`] and left untouched.

use super::js::{idb_error, JsFailure};
use crate::error::StorageError;
use idb::{Database, DatabaseEvent, Factory, IndexParams, KeyPath, ObjectStoreParams};
use wasm_bindgen::JsCast;

/// The schema version this build writes and reads.
pub const INDEXEDDB_SCHEMA_VERSION: u32 = 3;

pub(crate) const RECORDS: &str = "key_value_store";
pub(crate) const OPS: &str = "operation_log";
pub(crate) const META: &str = "meta_store";
pub(crate) const DIRTY_INDEX: &str = "mapName_dirty";
pub(crate) const SYNCED_INDEX: &str = "synced";

/// Opens (creating or upgrading) database `name`.
pub(crate) async fn open(name: &str) -> Result<Database, StorageError> {
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
        Ok(mut database) => {
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
            Ok(database)
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
    Ok(())
}
