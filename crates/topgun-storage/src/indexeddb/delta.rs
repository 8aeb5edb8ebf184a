//! The store's counters and Merkle leaf sums: a base plus deltas.
//!
//! A write transaction does not read and rewrite the counters and the
//! leaf sums: reading them would make every write wait for a read before
//! it can write, the largest part of a small write's time. It stores a
//! [`Delta`] with what it changed instead: in the first `operation_log`
//! entry it adds (field `delta`, beside field `carries` that puts the
//! entry in the `carriers` index), or, if it logs no op, as an entry of
//! its own in `meta_store`, keyed `["delta", writer, n]` (`writer` a
//! random number per connection, `n` counting its transactions).
//!
//! The base is the `["counters"]` entry and each map's `["sums", map]`
//! leaf sums, folded up to the mark `["folded"]`: the highest
//! `operation_log` entry id whose delta is in the base. The totals are
//! the base plus the deltas in `meta_store` plus those of the carriers
//! past the mark (one range of the `carriers` index). A transaction that
//! rewrites or deletes a carrier past the mark moves its delta into its
//! own; one at or below the mark is rewritten without it.
//!
//! Any connection may [`fold`] every delta into the base, in one
//! transaction that reads them, deletes those in `meta_store` and moves
//! the mark past the carriers, which stay as they are (IndexedDB runs
//! read-write transactions over the same stores one at a time, so no
//! delta is added in between, and ids only grow).

use super::codec::{self, corrupt, Counters};
use super::js::{aborted, array, field, idb_error, to_bytes};
use super::schema::{CARRIERS_INDEX, META, OPS};
use crate::error::StorageError;
use idb::{Database, ObjectStore, TransactionMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::IntoFuture;
use topgun_core::merkle::LEAVES;
use topgun_core::MerkleSums;
use wasm_bindgen::JsValue;

/// What one write transaction changed in the counters and leaf sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delta {
    pub(crate) records: i64,
    pub(crate) dirty_records: i64,
    pub(crate) pending_ops: i64,
    pub(crate) bytes: i64,
    pub(crate) pruned: i64,
    /// Amounts added (wrapping) to leaf sums, by map and leaf.
    pub(crate) sums: BTreeMap<String, BTreeMap<u32, u32>>,
}

impl Delta {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Moves leaf `leaf` of `map_name` by `-sub + add` (wrapping).
    pub(crate) fn shift(&mut self, map_name: &str, leaf: usize, sub: u32, add: u32) {
        let sums = match self.sums.get_mut(map_name) {
            Some(sums) => sums,
            None => self.sums.entry(map_name.to_owned()).or_default(),
        };
        let slot = sums.entry(leaf as u32).or_insert(0);
        *slot = slot.wrapping_sub(sub).wrapping_add(add);
    }

    /// Adds `other` to this delta.
    pub(crate) fn merge(&mut self, other: Delta) {
        self.records += other.records;
        self.dirty_records += other.dirty_records;
        self.pending_ops += other.pending_ops;
        self.bytes += other.bytes;
        self.pruned += other.pruned;
        for (map_name, leaves) in other.sums {
            for (leaf, amount) in leaves {
                self.shift(&map_name, leaf as usize, 0, amount);
            }
        }
    }

    /// The delta as stored (MessagePack bytes).
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StorageError> {
        rmp_serde::to_vec(self).map_err(|source| StorageError::Encode {
            what: "a counters delta",
            source,
        })
    }

    fn from_js(value: &JsValue) -> Result<Self, StorageError> {
        let raw = to_bytes(value).ok_or_else(|| corrupt("counters deltas", "not binary"))?;
        let delta: Delta = rmp_serde::from_slice(&raw).map_err(|e| StorageError::Corrupt {
            what: "counters deltas",
            source: Box::new(e),
        })?;
        if delta
            .sums
            .values()
            .flat_map(BTreeMap::keys)
            .any(|leaf| *leaf as usize >= LEAVES)
        {
            return Err(corrupt("counters deltas", "a leaf is out of range"));
        }
        Ok(delta)
    }

    /// Moves the delta an `operation_log` entry carries, if any and not
    /// folded (the entry is past mark `folded`), into this one: for a
    /// transaction about to rewrite or delete the entry.
    pub(crate) fn take_from_entry(
        &mut self,
        entry: &JsValue,
        folded: u64,
    ) -> Result<(), StorageError> {
        if codec::entry_id(&field(entry, "id")?)? <= folded {
            return Ok(());
        }
        if let Some(carried) = codec::entry_delta(entry)? {
            self.merge(Delta::from_js(&carried)?);
        }
        Ok(())
    }
}

impl Counters {
    /// These counters moved by `delta`; a count below zero is corruption.
    pub(crate) fn with(self, delta: &Delta) -> Result<Self, StorageError> {
        let add = |base: u64, by: i64| {
            base.checked_add_signed(by)
                .ok_or_else(|| corrupt("counters", "a count went below zero"))
        };
        Ok(Self {
            records: add(self.records, delta.records)?,
            dirty_records: add(self.dirty_records, delta.dirty_records)?,
            pending_ops: add(self.pending_ops, delta.pending_ops)?,
            bytes: add(self.bytes, delta.bytes)?,
            pruned: add(self.pruned, delta.pruned)?,
        })
    }
}

/// The meta key of delta `n` of connection `writer`.
pub(crate) fn delta_key(writer: f64, n: u64) -> JsValue {
    array(&[
        JsValue::from_str("delta"),
        JsValue::from_f64(writer),
        JsValue::from_f64(n as f64),
    ])
}

/// The key range of every delta: `["delta", …]` keys sort between
/// `["delta"]` and `["delta", []]` (an array sorts after every number).
fn delta_range() -> Result<idb::KeyRange, StorageError> {
    idb::KeyRange::bound(
        &array(&[JsValue::from_str("delta")]),
        &array(&[JsValue::from_str("delta"), js_sys::Array::new().into()]),
        Some(true),
        Some(true),
    )
    .map_err(idb_error("building a key range"))
}

/// The folded mark (0 if none is stored), read in the transaction of
/// `meta`.
pub(crate) async fn folded_mark(
    meta: &ObjectStore,
    during: &'static str,
) -> Result<u64, StorageError> {
    let stored = meta
        .get(codec::folded_key())
        .map_err(idb_error(during))?
        .await
        .map_err(idb_error(during))?;
    codec::folded_from_js(stored)
}

/// The base counters and every delta not folded, read with two waits
/// (the mark, then the carriers past it).
struct Unfolded {
    base: Counters,
    /// The sum of every delta.
    total: Delta,
    /// How many deltas there are.
    count: usize,
    /// The id of the last carrier read, if any.
    last_carrier: Option<u64>,
}

impl Unfolded {
    /// Reads them in the transaction of `meta` and `ops`.
    async fn read(
        meta: &ObjectStore,
        ops: &ObjectStore,
        during: &'static str,
    ) -> Result<Self, StorageError> {
        let base = meta
            .get(codec::counters_key())
            .map_err(idb_error(during))?
            .into_future();
        let in_meta = meta
            .get_all(Some(delta_range()?.into()), None)
            .map_err(idb_error(during))?
            .into_future();
        let folded = folded_mark(meta, during).await?;
        let carriers = ops
            .index(CARRIERS_INDEX)
            .map_err(idb_error(during))?
            .get_all(Some(codec::carriers_after(folded)?.into()), None)
            .map_err(idb_error(during))?
            .into_future();
        let base = Counters::from_js(base.await.map_err(idb_error(during))?)?;
        let in_meta = in_meta.await.map_err(idb_error(during))?;
        let carriers = carriers.await.map_err(idb_error(during))?;
        let mut total = Delta::default();
        for value in &in_meta {
            total.merge(Delta::from_js(value)?);
        }
        for entry in &carriers {
            let carried = codec::entry_delta(entry)?
                .ok_or_else(|| corrupt("operation_log", "a carrier has no delta"))?;
            total.merge(Delta::from_js(&carried)?);
        }
        // The index is in id order: the last carrier has the highest.
        let last_carrier = match carriers.last() {
            Some(entry) => Some(codec::entry_id(&field(entry, "id")?)?),
            None => None,
        };
        Ok(Self {
            base,
            total,
            count: in_meta.len() + carriers.len(),
            last_carrier,
        })
    }
}

/// The counters: the base plus every delta, read in one transaction.
pub(crate) async fn counters(database: &Database) -> Result<Counters, StorageError> {
    const DURING: &str = "reading stats";
    let (meta, ops) = reading(database, DURING)?;
    let unfolded = Unfolded::read(&meta, &ops, DURING).await?;
    unfolded.base.with(&unfolded.total)
}

/// `map_name`'s [`LEAVES`] leaf sums: the base plus every delta, read in
/// one transaction.
pub(crate) async fn merkle_leaves(
    database: &Database,
    map_name: &str,
) -> Result<Vec<u32>, StorageError> {
    const DURING: &str = "reading Merkle sums";
    let (meta, ops) = reading(database, DURING)?;
    let base = meta
        .get(codec::sums_key(map_name))
        .map_err(idb_error(DURING))?
        .into_future();
    let unfolded = Unfolded::read(&meta, &ops, DURING).await?;
    let base = base.await.map_err(idb_error(DURING))?;
    let mut leaves = codec::sums_from_js(base.as_ref(), LEAVES)?;
    for (leaf, amount) in unfolded.total.sums.get(map_name).into_iter().flatten() {
        MerkleSums::shift(&mut leaves, *leaf as usize, 0, *amount);
    }
    Ok(leaves)
}

/// `meta_store` and `operation_log` in one read-only transaction.
fn reading(
    database: &Database,
    during: &'static str,
) -> Result<(ObjectStore, ObjectStore), StorageError> {
    let tx = database
        .transaction(&[META, OPS], TransactionMode::ReadOnly)
        .map_err(idb_error(during))?;
    let store = |name| tx.object_store(name).map_err(idb_error(during));
    Ok((store(META)?, store(OPS)?))
}

/// Moves every delta into the base: one read-write transaction over
/// `meta_store` and `operation_log` reads the deltas, the base counters
/// and the mark, deletes the deltas in `meta_store`, moves the mark to
/// the last carrier, then reads and rewrites the sums of each map the
/// deltas touch. Returns how many deltas it folded. If any step fails
/// the transaction is aborted: the deltas stay, and so does the base.
pub(crate) async fn fold(database: &Database) -> Result<usize, StorageError> {
    const DURING: &str = "folding counters deltas";
    let tx = database
        .transaction(&[META, OPS], TransactionMode::ReadWrite)
        .map_err(idb_error(DURING))?;
    let folded = match fold_in(&tx).await {
        Ok(folded) => folded,
        Err(error) => {
            let _ = tx.abort();
            return Err(error);
        }
    };
    if folded == 0 {
        return Ok(0);
    }
    let result = tx
        .commit()
        .map_err(idb_error(DURING))?
        .await
        .map_err(idb_error(DURING))?;
    if result.is_aborted() {
        return Err(aborted(DURING));
    }
    Ok(folded)
}

/// The requests of [`fold`], in `tx`.
async fn fold_in(tx: &idb::Transaction) -> Result<usize, StorageError> {
    const DURING: &str = "folding counters deltas";
    let meta = tx.object_store(META).map_err(idb_error(DURING))?;
    let ops = tx.object_store(OPS).map_err(idb_error(DURING))?;
    let unfolded = Unfolded::read(&meta, &ops, DURING).await?;
    if unfolded.count == 0 {
        return Ok(0);
    }
    let counters = unfolded.base.with(&unfolded.total)?;
    meta.delete(delta_range()?).map_err(idb_error(DURING))?;
    if let Some(last) = unfolded.last_carrier {
        meta.put(&codec::entry_key(last), Some(&codec::folded_key()))
            .map_err(idb_error(DURING))?;
    }
    meta.put(&counters.to_js()?, Some(&codec::counters_key()))
        .map_err(idb_error(DURING))?;
    // The sums of every map a delta touches are read with one wait, then
    // rewritten.
    let mut reads = Vec::with_capacity(unfolded.total.sums.len());
    for (map_name, leaves) in &unfolded.total.sums {
        let request = meta
            .get(codec::sums_key(map_name))
            .map_err(idb_error(DURING))?
            .into_future();
        reads.push((map_name, leaves, request));
    }
    for (map_name, leaves, request) in reads {
        let stored = request.await.map_err(idb_error(DURING))?;
        let mut sums = codec::sums_from_js(stored.as_ref(), LEAVES)?;
        for (leaf, amount) in leaves {
            MerkleSums::shift(&mut sums, *leaf as usize, 0, *amount);
        }
        meta.put(&codec::sums_to_js(&sums), Some(&codec::sums_key(map_name)))
            .map_err(idb_error(DURING))?;
    }
    Ok(unfolded.count)
}
