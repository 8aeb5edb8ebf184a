//! The writes a [`WriteTxn`] applies: one [`WriteOp`] per writing
//! [`Store`](crate::Store) method, with the same rules as every backend.

use super::codec::{self, Stored};
use super::js::idb_error;
use super::schema::{DIRTY_INDEX, SYNCED_INDEX};
use super::txn::{signed, PendingId, WriteTxn};
use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, LocalWrite, OpId, OpLogEntry, OpType, PruneSums, StoreRecord,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use topgun_core::Timestamp;
use wasm_bindgen::JsValue;

/// Records read per request when a write walks a whole map.
const PAGE: u32 = 512;

/// One writing call, validated.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Local(LocalWrite),
    /// A local write refused if the stored record is as new (see
    /// `Store::write_local_checked`).
    LocalChecked(LocalWrite),
    /// Several checked local writes, answered one by one (see
    /// `Store::write_local_checked_many`).
    LocalCheckedMany(Vec<LocalWrite>),
    Remote(Vec<StoreRecord>),
    Clear(String, Timestamp),
    Prune(String, Vec<String>, PruneSums),
    MarkSynced(Vec<OpId>),
    Acknowledge(Vec<OpId>),
    DropSynced,
    MetaPut(String, Vec<u8>),
}

/// What a [`WriteOp`] answers once its transaction commits.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    OpId(OpId),
    Checked(OpId, Option<StoreRecord>),
    Stale(Timestamp),
    /// The answers of [`WriteOp::LocalCheckedMany`]'s writes, in order.
    Many(Vec<WriteOutcome>),
    Changes(Vec<AppliedChange>),
    Cleared(ClearOutcome),
    Keys(Vec<String>),
    Count(u64),
    Done,
}

/// An outcome still waiting for the id of the op it logged (see
/// [`PendingId`]).
pub(crate) enum Applied {
    Ready(WriteOutcome),
    OpId(PendingId),
    Checked(PendingId, Option<StoreRecord>),
    Cleared(PendingId, Vec<String>),
    Many(Vec<Applied>),
}

impl Applied {
    /// The outcome, given the keys of the entries the transaction's ops
    /// went into.
    pub(crate) fn resolve(self, entries: &[u64]) -> Result<WriteOutcome, StorageError> {
        Ok(match self {
            Applied::Ready(outcome) => outcome,
            Applied::OpId(pending) => WriteOutcome::OpId(pending.resolve(entries)?),
            Applied::Checked(pending, previous) => {
                WriteOutcome::Checked(pending.resolve(entries)?, previous)
            }
            Applied::Cleared(pending, removed_keys) => WriteOutcome::Cleared(ClearOutcome {
                op_id: pending.resolve(entries)?,
                removed_keys,
            }),
            Applied::Many(applied) => WriteOutcome::Many(
                applied
                    .into_iter()
                    .map(|applied| applied.resolve(entries))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl WriteOp {
    /// The records this op reads by key, so that a group of ops reads
    /// them all in one go before applying any.
    pub(crate) fn keys(&self) -> Vec<(&str, &str)> {
        match self {
            WriteOp::Local(write) | WriteOp::LocalChecked(write) => {
                vec![(&write.map_name, &write.key)]
            }
            WriteOp::LocalCheckedMany(writes) => writes
                .iter()
                .map(|w| (w.map_name.as_str(), w.key.as_str()))
                .collect(),
            WriteOp::Remote(records) => records
                .iter()
                .map(|r| (r.map_name.as_str(), r.key.as_str()))
                .collect(),
            WriteOp::Prune(map_name, keys, _) => keys
                .iter()
                .map(|k| (map_name.as_str(), k.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Applies this op in `txn`.
    pub(crate) async fn apply(&self, txn: &mut WriteTxn) -> Result<Applied, StorageError> {
        Ok(match self {
            WriteOp::Local(write) => Applied::OpId(write_local(txn, write).await?),
            WriteOp::LocalChecked(write) => write_checked(txn, write).await?,
            WriteOp::LocalCheckedMany(writes) => {
                let mut applied = Vec::with_capacity(writes.len());
                for write in writes {
                    applied.push(write_checked(txn, write).await?);
                }
                Applied::Many(applied)
            }
            WriteOp::Remote(records) => {
                Applied::Ready(WriteOutcome::Changes(apply_remote(txn, records).await?))
            }
            WriteOp::Clear(map_name, timestamp) => {
                let (request, removed) = clear_map(txn, map_name, timestamp).await?;
                Applied::Cleared(request, removed)
            }
            WriteOp::Prune(map_name, keys, sums) => Applied::Ready(WriteOutcome::Keys(
                prune_clean(txn, map_name, keys, *sums).await?,
            )),
            WriteOp::MarkSynced(ids) => {
                Applied::Ready(WriteOutcome::Count(settle(txn, ids, Settle::Mark).await?))
            }
            WriteOp::Acknowledge(ids) => {
                Applied::Ready(WriteOutcome::Count(settle(txn, ids, Settle::Delete).await?))
            }
            WriteOp::DropSynced => Applied::Ready(WriteOutcome::Count(drop_synced(txn).await?)),
            WriteOp::MetaPut(key, value) => {
                txn.meta
                    .put(&super::js::bytes(value), Some(&codec::app_meta_key(key)))
                    .map_err(idb_error("writing a meta value"))?;
                Applied::Ready(WriteOutcome::Done)
            }
        })
    }
}

/// A local write applied only over an older record (or none).
async fn write_checked(txn: &mut WriteTxn, write: &LocalWrite) -> Result<Applied, StorageError> {
    txn.load(&write.map_name, [write.key.as_str()]).await?;
    let previous = txn.current(&write.map_name, &write.key).cloned();
    Ok(match previous {
        Some(stored) if stored.timestamp >= write.timestamp => {
            Applied::Ready(WriteOutcome::Stale(stored.timestamp))
        }
        previous => Applied::Checked(write_local(txn, write).await?, previous),
    })
}

async fn write_local(txn: &mut WriteTxn, write: &LocalWrite) -> Result<PendingId, StorageError> {
    txn.load(&write.map_name, [write.key.as_str()]).await?;
    txn.store(StoreRecord {
        map_name: write.map_name.clone(),
        key: write.key.clone(),
        value: write.value.clone(),
        timestamp: write.timestamp.clone(),
        ttl_ms: write.ttl_ms,
        dirty: true,
    })?;
    txn.add_op(
        &write.map_name,
        write.op_type,
        &write.key,
        write.value.as_deref(),
        &write.timestamp,
        write.ttl_ms,
    )
}

async fn apply_remote(
    txn: &mut WriteTxn,
    records: &[StoreRecord],
) -> Result<Vec<AppliedChange>, StorageError> {
    let mut changes = Vec::new();
    for record in records {
        txn.load(&record.map_name, [record.key.as_str()]).await?;
        let previous = txn.current(&record.map_name, &record.key).cloned();
        if previous
            .as_ref()
            .is_some_and(|old| record.timestamp <= old.timestamp)
        {
            continue;
        }
        let mut current = record.clone();
        current.dirty = false;
        txn.store(current.clone())?;
        changes.push(AppliedChange { previous, current });
    }
    Ok(changes)
}

/// Reads every record of `map_name` into the overlay, a page at a time.
async fn load_map(txn: &mut WriteTxn, map_name: &str) -> Result<Vec<String>, StorageError> {
    const DURING: &str = "reading a map to clear";
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let range = codec::map_range(map_name, after.as_deref())?;
        let page = txn
            .records
            .get_all(Some(range.into()), Some(PAGE))
            .map_err(idb_error(DURING))?
            .await
            .map_err(idb_error(DURING))?;
        // Pruned records' entries are passed over.
        let full = page.len() >= PAGE as usize;
        for stored in super::page::stored_page(map_name, page)? {
            after = Some(stored.key().to_owned());
            if let Stored::Record(record) = stored {
                keys.push(record.key.clone());
                txn.adopt(record);
            }
        }
        if !full {
            return Ok(keys);
        }
    }
}

async fn clear_map(
    txn: &mut WriteTxn,
    map_name: &str,
    timestamp: &Timestamp,
) -> Result<(PendingId, Vec<String>), StorageError> {
    let mut removed = Vec::new();
    for key in load_map(txn, map_name).await? {
        let Some(record) = txn.current(map_name, &key) else {
            continue;
        };
        // Only live records older than the clear (a newer write wins).
        if record.value.is_none() || record.timestamp >= *timestamp {
            continue;
        }
        let tombstone = StoreRecord {
            value: None,
            ttl_ms: None,
            timestamp: timestamp.clone(),
            dirty: true,
            ..record.clone()
        };
        txn.store(tombstone)?;
        removed.push(key);
    }
    let request = txn.add_op(map_name, OpType::Clear, "", None, timestamp, None)?;
    Ok((request, removed))
}

/// The keys of `map_name` that unsynced ops write, stored ones and those
/// logged earlier in this transaction; `None` if one of them clears it.
async fn pending_keys(
    txn: &WriteTxn,
    map_name: &str,
) -> Result<Option<BTreeSet<String>>, StorageError> {
    const DURING: &str = "reading pending ops";
    let objects = txn
        .ops
        .index(SYNCED_INDEX)
        .map_err(idb_error(DURING))?
        .get_all(Some(JsValue::from_f64(0.0).into()), None)
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    let mut stored = Vec::new();
    for object in &objects {
        let (_, ops) = codec::entry_from_js(object)?;
        stored.extend(ops.into_iter().filter(|op| !op.synced));
    }
    let stored = stored
        .iter()
        .map(|op| (op.map_name.as_str(), op.op_type, op.key.as_str()));
    let logged = txn.logged()?;
    let logged = logged
        .iter()
        .map(|(map, op_type, key)| (map.as_str(), *op_type, key.as_str()));
    let mut keys = BTreeSet::new();
    for (map, op_type, key) in stored.chain(logged) {
        if map != map_name {
            continue;
        }
        if op_type == OpType::Clear {
            return Ok(None);
        }
        keys.insert(key.to_owned());
    }
    Ok(Some(keys))
}

async fn prune_clean(
    txn: &mut WriteTxn,
    map_name: &str,
    keys: &[String],
    sums: PruneSums,
) -> Result<Vec<String>, StorageError> {
    let Some(pending_keys) = pending_keys(txn, map_name).await? else {
        return Ok(Vec::new());
    };
    txn.load(map_name, keys.iter().map(String::as_str)).await?;
    let mut removed = Vec::new();
    for key in keys {
        if pending_keys.contains(key) {
            continue;
        }
        if txn.current(map_name, key).is_some_and(|r| !r.dirty) {
            txn.delete(map_name, key, sums)?;
            removed.push(key.clone());
        }
    }
    Ok(removed)
}

/// What [`settle`] does with an acknowledged op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Keep it, marked synced.
    Mark,
    /// Delete it (synced ones too).
    Delete,
}

/// Marks ops synced (cleaning the records that still carry their
/// timestamp) and keeps or deletes them; an entry is rewritten once,
/// without the ops deleted, or deleted with its last op.
async fn settle(txn: &mut WriteTxn, ids: &[OpId], how: Settle) -> Result<u64, StorageError> {
    const DURING: &str = "settling acknowledged ops";
    // A repeated id is settled once.
    let mut by_entry: BTreeMap<u64, BTreeSet<OpId>> = BTreeMap::new();
    for id in ids {
        by_entry
            .entry(codec::entry_of(*id))
            .or_default()
            .insert(*id);
    }
    let mut requests = Vec::with_capacity(by_entry.len());
    for (entry, asked) in by_entry {
        let request = txn
            .ops
            .get(codec::entry_key(entry))
            .map_err(idb_error(DURING))?;
        requests.push((asked, request.into_future()));
    }
    // Read after the entries: no wait of its own.
    let folded = txn.folded().await?;
    let mut changed = 0;
    for (asked, request) in requests {
        let Some(object) = request.await.map_err(idb_error(DURING))? else {
            continue;
        };
        let (entry, ops) = codec::entry_from_js(&object)?;
        let mut kept = Vec::with_capacity(ops.len());
        let mut rewrite = false;
        for mut op in ops {
            if !asked.contains(&op.id) {
                kept.push(op);
                continue;
            }
            if !op.synced {
                changed += 1;
                txn.delta.pending_ops -= 1;
                clean(txn, &op).await?;
            }
            match how {
                Settle::Mark => {
                    rewrite |= !op.synced;
                    op.synced = true;
                    kept.push(op);
                }
                Settle::Delete => {
                    rewrite = true;
                    txn.delta.bytes -= signed(op.approx_size());
                }
            }
        }
        if rewrite {
            rewrite_entry(txn, &object, entry, &kept, folded)?;
        }
    }
    Ok(changed)
}

/// Stores entry `entry` (read as `object`) with `ops`, or deletes it if
/// none are left; the delta it carried, if any and not folded (mark
/// `folded`), moves into the transaction's own.
fn rewrite_entry(
    txn: &mut WriteTxn,
    object: &JsValue,
    entry: u64,
    ops: &[OpLogEntry],
    folded: u64,
) -> Result<(), StorageError> {
    const DURING: &str = "rewriting the operation log";
    txn.delta.take_from_entry(object, folded)?;
    if ops.is_empty() {
        txn.ops
            .delete(codec::entry_key(entry))
            .map_err(idb_error(DURING))?;
    } else {
        txn.ops
            .put(&codec::entry_to_js(entry, ops)?, None)
            .map_err(idb_error(DURING))?;
    }
    Ok(())
}

/// Clears `dirty` on the records that still carry `op`'s timestamp.
async fn clean(txn: &mut WriteTxn, op: &OpLogEntry) -> Result<(), StorageError> {
    let keys = if op.op_type == OpType::Clear {
        dirty_keys(txn, &op.map_name).await?
    } else {
        txn.load(&op.map_name, [op.key.as_str()]).await?;
        vec![op.key.clone()]
    };
    for key in keys {
        match txn.current(&op.map_name, &key) {
            Some(record) if record.dirty && record.timestamp == op.timestamp => {
                let clean = StoreRecord {
                    dirty: false,
                    ..record.clone()
                };
                txn.store(clean)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The keys of `map_name`'s dirty records, read into the overlay.
async fn dirty_keys(txn: &mut WriteTxn, map_name: &str) -> Result<Vec<String>, StorageError> {
    const DURING: &str = "reading dirty records";
    let objects = txn
        .records
        .index(DIRTY_INDEX)
        .map_err(idb_error(DURING))?
        .get_all(Some(codec::dirty_key(map_name).into()), None)
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    let mut keys = Vec::with_capacity(objects.len());
    for object in &objects {
        let record = codec::record_from_js(object)?;
        keys.push(record.key.clone());
        txn.adopt(record);
    }
    Ok(keys)
}

/// Deletes every synced op: whole entries where all are (the `synced`
/// index), and the synced ops of entries that still hold pending ones
/// (every pending entry is read for those; the client acknowledges ops,
/// which deletes them, and does not call this).
async fn drop_synced(txn: &mut WriteTxn) -> Result<u64, StorageError> {
    const DURING: &str = "dropping synced ops";
    let index = txn.ops.index(SYNCED_INDEX).map_err(idb_error(DURING))?;
    let by_flag = |synced: f64| {
        index
            .get_all(Some(JsValue::from_f64(synced).into()), None)
            .map(IntoFuture::into_future)
            .map_err(idb_error(DURING))
    };
    let (synced, mixed) = (by_flag(1.0)?, by_flag(0.0)?);
    let folded = txn.folded().await?;
    let (synced, mixed) = (
        synced.await.map_err(idb_error(DURING))?,
        mixed.await.map_err(idb_error(DURING))?,
    );
    let mut dropped = 0;
    for object in synced.iter().chain(&mixed) {
        let (entry, ops) = codec::entry_from_js(object)?;
        let (gone, kept): (Vec<_>, Vec<_>) = ops.into_iter().partition(|op| op.synced);
        if gone.is_empty() {
            continue;
        }
        for op in &gone {
            txn.delta.bytes -= signed(op.approx_size());
        }
        dropped += gone.len() as u64;
        rewrite_entry(txn, object, entry, &kept, folded)?;
    }
    Ok(dropped)
}
