//! Schema versions of the redb file and the migrations between them.
//!
//! The version lives in `store_info` under
//! [`SCHEMA_VERSION_KEY`](super::tables::SCHEMA_VERSION_KEY). On open:
//! - a newer version than [`SCHEMA_VERSION`] fails with
//!   [`StorageError::SchemaTooNew`] before anything is written;
//! - an older or absent version is migrated step by step, in one write
//!   transaction, by [`migrate`];
//! - the current version opens as is.
//!
//! Version history:
//! - 0: no version recorded (a new file, or one from before versioning);
//! - 1: the tables of [`tables`](super::tables), counters in `store_info`.
//!   Builds before "RedbStore: no dirty index" (`docs/decisions.md`) also
//!   kept a `dirty` index table; the formats of the other tables did not
//!   change, so dropping it did not bump the version. Opening a file that
//!   still has it deletes it (see [`LEGACY_TABLES`]);
//! - 2: Merkle leaf sums (`merkle_leaves`, saved at close, with the
//!   `merkle_saved` and `pruned_stubs` counters) and the contributions of
//!   pruned records (`pruned_contributions`);
//! - 3: records keyed `(map, bucket, key)` in `records_by_bucket`
//!   ([`RECORDS`]) instead of `(map, key)` in `records`
//!   ([`RECORDS_BY_KEY`]). An older file's records move to the new table
//!   before any other step, so every step reads [`RECORDS`].

use super::tables::{
    backend, decode_op, decode_record, Counters, MERKLE, META, PENDING_OPS, PRUNED, RECORDS,
    SCHEMA_VERSION_KEY, STORE_INFO, SYNCED_OPS,
};
use super::tables::{bucket, BUCKETS};
use crate::error::StorageError;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
    TableHandle, UntypedTableHandle, WriteTransaction,
};
use std::path::Path;

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// The records table of versions 0 to 2, `(map, key) -> record`.
const RECORDS_BY_KEY: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("records");

/// Tables that earlier builds kept and this one neither reads nor
/// maintains; [`open`] deletes them. `dirty` was an index of dirty
/// records, `(map, key) -> ()`: left in place it would go stale.
const LEGACY_TABLES: [&str; 1] = ["dirty"];

/// The version recorded in the file; 0 if there is none.
fn stored_version(db: &impl ReadableDatabase) -> Result<u32, StorageError> {
    let txn = db
        .begin_read()
        .map_err(backend("reading the schema version"))?;
    let info = match txn.open_table(STORE_INFO) {
        Ok(info) => info,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(backend("reading the schema version")(error)),
    };
    let version = info
        .get(SCHEMA_VERSION_KEY)
        .map_err(backend("reading the schema version"))?
        .map_or(0, |v| v.value());
    // A version beyond u32 is certainly newer than ours.
    Ok(u32::try_from(version).unwrap_or(u32::MAX))
}

/// Fails with [`StorageError::SchemaTooNew`] if the existing file at
/// `path` has a newer schema, reading it through a read-only handle:
/// opening a redb file for writing updates its header, and a file from a
/// newer TopGun must be left exactly as it is.
///
/// A file that cannot be opened read-only (missing, empty, being
/// recovered after a crash, broken) passes; the writable open then
/// creates, recovers or rejects it, and [`open`] checks again.
pub(super) fn refuse_newer(path: &Path) -> Result<(), StorageError> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(());
    }
    let Ok(db) = redb::Builder::new().open_read_only(path) else {
        return Ok(());
    };
    check_version(stored_version(&db)?).map(drop)
}

fn check_version(found: u32) -> Result<u32, StorageError> {
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Brings the file to [`SCHEMA_VERSION`], deletes [`LEGACY_TABLES`], and
/// returns its counters. Writes nothing to a current file without legacy
/// tables.
///
/// # Errors
/// [`StorageError::SchemaTooNew`] if the file is newer (nothing written);
/// backend or corruption errors otherwise (the migration is rolled back).
pub(super) fn open(db: &mut Database) -> Result<Counters, StorageError> {
    let found = check_version(stored_version(db)?)?;
    let legacy = legacy_tables(db)?;
    // Moving the records (version 3) leaves the old table's pages free:
    // the file is compacted afterwards, once.
    let mut compact = false;
    if found < SCHEMA_VERSION || !legacy.is_empty() {
        let txn = db
            .begin_write()
            .map_err(backend("starting the schema migration"))?;
        if found < SCHEMA_VERSION {
            compact = migrate(&txn, found)?;
        }
        for table in legacy {
            let name = table.name().to_owned();
            txn.delete_table(table)
                .map_err(backend("deleting a legacy table"))?;
            tracing::info!(table = name, "deleted a legacy redb store table");
        }
        txn.commit()
            .map_err(backend("committing the schema migration"))?;
    }
    if compact {
        db.compact()
            .map_err(backend("compacting after the migration"))?;
    }
    let txn = db.begin_read().map_err(backend("reading counters"))?;
    let info = txn
        .open_table(STORE_INFO)
        .map_err(backend("reading counters"))?;
    Counters::load(&info)
}

/// The [`LEGACY_TABLES`] present in the file.
fn legacy_tables(db: &Database) -> Result<Vec<UntypedTableHandle>, StorageError> {
    const DURING: &str = "listing tables";
    let txn = db.begin_read().map_err(backend(DURING))?;
    let tables = txn
        .list_tables()
        .map_err(backend(DURING))?
        .filter(|table| LEGACY_TABLES.contains(&table.name()))
        .collect();
    Ok(tables)
}

/// Runs every migration step from version `from` to [`SCHEMA_VERSION`].
/// Returns whether records moved to another table (the file is worth
/// compacting).
fn migrate(txn: &WriteTransaction, from: u32) -> Result<bool, StorageError> {
    let moved = from < 3 && records_to_buckets(txn)?;
    let mut version = from;
    while version < SCHEMA_VERSION {
        match version {
            0 => v0_to_v1(txn)?,
            1 => v1_to_v2(txn)?,
            // The records moved first (above).
            2 => {}
            // Unreachable while SCHEMA_VERSION is 3; each new version adds
            // its step above.
            _ => break,
        }
        version += 1;
        tracing::info!(version, "migrated the redb store schema");
    }
    let mut info = txn
        .open_table(STORE_INFO)
        .map_err(backend("writing the schema version"))?;
    info.insert(SCHEMA_VERSION_KEY, u64::from(SCHEMA_VERSION))
        .map_err(backend("writing the schema version"))?;
    Ok(moved)
}

/// Version 3 keys records by `(map, bucket, key)`: moves every record of
/// the `records` table of earlier versions, if there is one, into
/// [`RECORDS`] and deletes it. Returns whether there was one.
fn records_to_buckets(txn: &WriteTransaction) -> Result<bool, StorageError> {
    const DURING: &str = "migrating to schema version 3";
    let exists = txn
        .list_tables()
        .map_err(backend(DURING))?
        .any(|table| table.name() == RECORDS_BY_KEY.name());
    if !exists {
        return Ok(false);
    }
    let old = txn.open_table(RECORDS_BY_KEY).map_err(backend(DURING))?;
    let moved = old.len().map_err(backend(DURING))?;
    {
        let mut records = txn.open_table(RECORDS).map_err(backend(DURING))?;
        // A pass per bucket, so that each bucket's records go in as one
        // sorted run and fill their pages.
        for wanted in 0..BUCKETS {
            for row in old.iter().map_err(backend(DURING))? {
                let (at, value) = row.map_err(backend(DURING))?;
                let (map_name, key) = at.value();
                if bucket(key) == wanted {
                    records
                        .insert((map_name, wanted, key), value.value())
                        .map_err(backend(DURING))?;
                }
            }
        }
    }
    drop(old);
    txn.delete_table(RECORDS_BY_KEY).map_err(backend(DURING))?;
    tracing::info!(
        records = moved,
        "moved the redb store's records into buckets"
    );
    Ok(true)
}

/// Version 2 keeps Merkle leaf sums (`merkle_leaves`, saved at close) and
/// the contributions of pruned records (`pruned_contributions`). The
/// `merkle_saved` counter is absent, so the sums are computed from the
/// records when the store opens.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StorageError> {
    const DURING: &str = "migrating to schema version 2";
    txn.open_table(MERKLE).map_err(backend(DURING))?;
    txn.open_table(PRUNED).map_err(backend(DURING))?;
    Ok(())
}

/// Version 1: creates every table and computes the counters from the
/// data (none in a new file).
fn v0_to_v1(txn: &WriteTransaction) -> Result<(), StorageError> {
    const DURING: &str = "migrating to schema version 1";
    txn.open_table(META).map_err(backend(DURING))?;
    let mut counters = Counters::default();
    {
        let records = txn.open_table(RECORDS).map_err(backend(DURING))?;
        for row in records.iter().map_err(backend(DURING))? {
            let (key, value) = row.map_err(backend(DURING))?;
            let (map_name, _, key) = key.value();
            let record = decode_record(value.value())?;
            counters.records += 1;
            counters.bytes += record.approx_size(map_name, key);
            if record.dirty {
                counters.dirty += 1;
            }
        }
    }
    for (table, synced) in [(PENDING_OPS, false), (SYNCED_OPS, true)] {
        let ops = txn.open_table(table).map_err(backend(DURING))?;
        for row in ops.iter().map_err(backend(DURING))? {
            let (id, value) = row.map_err(backend(DURING))?;
            let size = decode_op(value.value())?.approx_size();
            counters.next_op_id = counters.next_op_id.max(id.value() + 1);
            counters.bytes += size;
            if synced {
                counters.synced_bytes += size;
            } else {
                counters.pending += 1;
            }
        }
    }
    counters.next_op_id = counters.next_op_id.max(1);
    let mut info = txn.open_table(STORE_INFO).map_err(backend(DURING))?;
    counters.store(None, &mut info).map_err(backend(DURING))
}
