//! Reads, each in a read-only transaction of its own.

use super::codec::{self, Stored};
use super::js::{idb_error, name_part, to_bytes};
use super::page;
use super::schema::{DIRTY_INDEX, META, OPS, RECORDS};
use crate::error::StorageError;
use crate::model::{OpId, OpLogEntry, StoreRecord, StoreStats};
use idb::{CursorDirection, Database, ObjectStore, Query, TransactionMode};
use wasm_bindgen::JsValue;

/// A page size IndexedDB takes (`u32`), from a `usize` limit.
fn page_limit(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

/// One object store in a read-only transaction.
fn reading(
    database: &Database,
    name: &str,
    during: &'static str,
) -> Result<ObjectStore, StorageError> {
    database
        .transaction(&[name], TransactionMode::ReadOnly)
        .map_err(idb_error(during))?
        .object_store(name)
        .map_err(idb_error(during))
}

/// Up to `limit` records of a map after `after`, in key order. Pruned
/// records' entries are skipped; while they leave a full page short, the
/// next objects are read in the same transaction (at least
/// [`PAST_PRUNED`] at a time).
pub(crate) async fn scan(
    database: &Database,
    map_name: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StoreRecord>, StorageError> {
    const DURING: &str = "scanning a map";
    if limit == 0 || map_name.is_empty() {
        return Ok(Vec::new());
    }
    let store = reading(database, RECORDS, DURING)?;
    let mut out = Vec::new();
    let mut from = after.map(str::to_owned);
    let mut ask = limit;
    loop {
        let range = codec::map_range(map_name, from.as_deref())?;
        let objects = store
            .get_all(Some(range.into()), Some(page_limit(ask)))
            .map_err(idb_error(DURING))?
            .await
            .map_err(idb_error(DURING))?;
        let full = objects.len() >= ask;
        for stored in page::stored_page(map_name, objects)? {
            match stored {
                Stored::Record(record) if out.len() < limit => out.push(record),
                Stored::Record(_) => return Ok(out),
                Stored::Pruned { key, .. } => from = Some(key),
            }
        }
        if !full || out.len() >= limit {
            return Ok(out);
        }
        ask = (limit - out.len()).max(PAST_PRUNED);
        if let Some(last) = out
            .last()
            .filter(|r| from.as_ref().is_none_or(|f| r.key > *f))
        {
            from = Some(last.key.clone());
        }
    }
}

/// Objects a scan asks for at least once pruned records' entries made
/// a page short.
const PAST_PRUNED: usize = 256;

/// Dirty records of a map in key order: a cursor over the
/// `[mapName, dirty]` index, whose entries with one index key are in
/// primary-key order, started after `[map, after]`.
pub(crate) async fn dirty_records(
    database: &Database,
    map_name: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StoreRecord>, StorageError> {
    const DURING: &str = "reading dirty records";
    if limit == 0 || map_name.is_empty() {
        return Ok(Vec::new());
    }
    let dirty = codec::dirty_key(map_name);
    let index = reading(database, RECORDS, DURING)?
        .index(DIRTY_INDEX)
        .map_err(idb_error(DURING))?;
    let Some(cursor) = index
        .open_cursor(Some(Query::Key(dirty.clone())), Some(CursorDirection::Next))
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?
    else {
        return Ok(Vec::new());
    };
    let mut cursor = cursor.into_managed();
    if let Some(after) = after {
        let at = |cursor: &idb::ManagedCursor| -> Result<Option<String>, StorageError> {
            Ok(cursor
                .primary_key()
                .map_err(idb_error(DURING))?
                .and_then(|primary| name_part(&primary, 1)))
        };
        if at(&cursor)?.is_some_and(|key| key.as_str() < after) {
            // `continuePrimaryKey` needs a target past the cursor.
            cursor
                .next_primary_key(&dirty, &codec::record_key(map_name, after))
                .await
                .map_err(idb_error(DURING))?;
        }
        // It stops at `after` itself if that record is dirty.
        if at(&cursor)?.is_some_and(|key| key == after) {
            cursor.next(None).await.map_err(idb_error(DURING))?;
        }
    }
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(object) = cursor.value().map_err(idb_error(DURING))? else {
            break;
        };
        out.push(codec::record_from_js(&object)?);
        cursor.next(None).await.map_err(idb_error(DURING))?;
    }
    Ok(out)
}

/// Entries the first page of [`pending_ops`] asks for.
const FIRST_ENTRIES: usize = 8;

/// Unsynced ops after `after` in id order, read entry by entry (an entry
/// holds one write transaction's ops, in id order).
pub(crate) async fn pending_ops(
    database: &Database,
    after: Option<OpId>,
    limit: usize,
) -> Result<Vec<OpLogEntry>, StorageError> {
    const DURING: &str = "reading pending ops";
    let store = reading(database, OPS, DURING)?;
    let mut out = Vec::new();
    // The first page starts at `after`'s own entry, which may hold later
    // ops; each next one after the last entry read.
    let mut from = after.map(|id| (codec::entry_of(id), false));
    // An entry holds one op or hundreds: the first page asks for a few
    // entries, each next one for as many as the ops still wanted fill at
    // the size of the entries read so far.
    let (mut entries_read, mut ops_read) = (0, 0);
    // Synced ops wait in the log only between `mark_synced` and
    // `drop_synced_ops`; they are skipped.
    while out.len() < limit {
        let remaining = limit - out.len();
        let want = match entries_read {
            0 => remaining.min(FIRST_ENTRIES),
            _ => remaining.div_ceil((ops_read / entries_read).max(1)),
        };
        let want = page_limit(want);
        let range = match from {
            Some((entry, open)) => Some(
                idb::KeyRange::lower_bound(&codec::entry_key(entry), Some(open))
                    .map_err(idb_error(DURING))?
                    .into(),
            ),
            None => None,
        };
        let page = store
            .get_all(range, Some(want))
            .map_err(idb_error(DURING))?
            .await
            .map_err(idb_error(DURING))?;
        let full = page.len() == want as usize;
        for object in &page {
            let (entry, ops) = codec::entry_from_js(object)?;
            from = Some((entry, true));
            entries_read += 1;
            ops_read += ops.len();
            let wanted = ops
                .into_iter()
                .filter(|op| !op.synced && after.is_none_or(|after| op.id > after));
            out.extend(wanted.take(limit - out.len()));
            if out.len() == limit {
                break;
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Maps with at least one record, in order: one step per map along the
/// `mapName_dirty` index (which pruned records' entries are not in).
pub(crate) async fn map_names(database: &Database) -> Result<Vec<String>, StorageError> {
    const DURING: &str = "listing maps";
    let index = reading(database, RECORDS, DURING)?
        .index(DIRTY_INDEX)
        .map_err(idb_error(DURING))?;
    let mut names = Vec::new();
    let mut from: Option<JsValue> = None;
    loop {
        let range: Option<Query> = match &from {
            Some(lower) => Some(
                idb::KeyRange::lower_bound(lower, Some(false))
                    .map_err(idb_error(DURING))?
                    .into(),
            ),
            None => None,
        };
        let cursor = index
            .open_key_cursor(range, None)
            .map_err(idb_error(DURING))?
            .await
            .map_err(idb_error(DURING))?;
        let Some(cursor) = cursor else {
            return Ok(names);
        };
        let key = cursor.key().map_err(idb_error(DURING))?;
        let name = name_part(&key, 0)
            .ok_or_else(|| codec::corrupt(RECORDS, "an index key is not [mapName, dirty]"))?;
        // Jump past every entry of this map.
        from = Some(codec::next_map(&name));
        names.push(name);
    }
}

/// The records of a map: a count of its `mapName_dirty` index entries,
/// which IndexedDB's backend answers without reading the records.
pub(crate) async fn count_records(
    database: &Database,
    map_name: &str,
) -> Result<u64, StorageError> {
    const DURING: &str = "counting records";
    if map_name.is_empty() {
        return Ok(0);
    }
    let count = reading(database, RECORDS, DURING)?
        .index(DIRTY_INDEX)
        .map_err(idb_error(DURING))?
        .count(Some(codec::flags_range(map_name)?.into()))
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    Ok(u64::from(count))
}

async fn meta_value(
    database: &Database,
    key: JsValue,
    during: &'static str,
) -> Result<Option<JsValue>, StorageError> {
    reading(database, META, during)?
        .get(key)
        .map_err(idb_error(during))?
        .await
        .map_err(idb_error(during))
}

pub(crate) async fn is_pruned(
    database: &Database,
    map_name: &str,
    key: &str,
) -> Result<bool, StorageError> {
    if map_name.is_empty() || key.is_empty() {
        return Ok(false);
    }
    const DURING: &str = "reading pruned records";
    let found = reading(database, RECORDS, DURING)?
        .get(codec::record_key(map_name, key))
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    let stored = found.as_ref().map(codec::stored_from_js).transpose()?;
    Ok(matches!(stored, Some(Stored::Pruned { .. })))
}

pub(crate) async fn meta_get(
    database: &Database,
    key: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let found = meta_value(database, codec::app_meta_key(key), "reading a meta value").await?;
    found
        .map(|value| {
            to_bytes(&value).ok_or_else(|| codec::corrupt(META, "a meta value is not binary"))
        })
        .transpose()
}

pub(crate) async fn stats(database: &Database) -> Result<StoreStats, StorageError> {
    let counters = super::delta::counters(database).await?;
    Ok(StoreStats {
        records: counters.records,
        dirty_records: counters.dirty_records,
        pending_ops: counters.pending_ops,
        bytes: counters.bytes,
    })
}
