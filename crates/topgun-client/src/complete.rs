//! Queries over complete maps: a map whose records all fit in the working
//! set is read from the store once, by its first query, and its later
//! queries run over the cached records (see
//! [`WorkingSet`](crate::working_set::WorkingSet) for when a map stops
//! being complete). A map over the working set's
//! [`complete_limit`](crate::working_set::WorkingSet::complete_limit) is
//! queried in the store, as every map is before its first query.
//!
//! The cache follows every change this client makes or learns of (its
//! writes, merges from the server, other tabs' or processes' changes as
//! they arrive), so a query over a complete map answers as one over the
//! store would once those changes have arrived.

use crate::error::ClientError;
use crate::hub::MapShared;
use crate::local::LocalData;
use crate::working_set::{CachedRecord, Records};
use std::sync::Arc;
use topgun_query::{
    count_on_rows, expires_at, query_rows, run_query, CompiledQuery, MemoryRow, QueryRows,
};
use topgun_storage::ScanCursor;

/// Records read per store page while loading a map.
const PAGE: usize = if cfg!(target_family = "wasm") {
    16384
} else {
    512
};

/// Runs `query` over `map` (in memory if the map is complete or can be
/// made so, else over the store) and hands its rows to `page`: values
/// borrowed from the working set's records where the query ran in memory.
pub(crate) async fn query<R>(
    local: &LocalData,
    map: &MapShared,
    query: &CompiledQuery,
    page: impl FnOnce(QueryRows<'_>) -> R,
) -> Result<R, ClientError> {
    Ok(match records(local, map).await? {
        Some(records) => {
            let answer = page(query_rows(rows(&records), query, local.now_millis()));
            count_decoded(local, map, &records);
            answer
        }
        None => {
            let store = local.store().as_ref();
            page(
                run_query(store, map.name(), query, local.now_millis())
                    .await?
                    .into_rows(),
            )
        }
    })
}

/// How many records `query` returns over `map` (see [`query`]).
pub(crate) async fn count(
    local: &LocalData,
    map: &MapShared,
    query: &CompiledQuery,
) -> Result<u64, ClientError> {
    Ok(match records(local, map).await? {
        Some(records) => {
            let count = count_on_rows(rows(&records), query, local.now_millis());
            count_decoded(local, map, &records);
            count
        }
        None => {
            let store = local.store().as_ref();
            let result = run_query(store, map.name(), query, local.now_millis()).await?;
            result.results.len() as u64
        }
    })
}

/// The records of `map` if it is complete or can be made so.
async fn records(local: &LocalData, map: &MapShared) -> Result<Option<Records>, ClientError> {
    local.check_open()?;
    if complete_or_read(local, map, async { Ok(true) }).await? {
        return Ok(local.ws().complete_records(map.name()));
    }
    local.check_open()?;
    Ok(None)
}

/// The records of `map` if the working set holds it complete, after
/// waiting for a full read already under way (a preload, a query's first
/// read) rather than reading the map beside it; never starts a read.
pub(crate) async fn held(
    local: &LocalData,
    map: &MapShared,
) -> Result<Option<Records>, ClientError> {
    local.check_open()?;
    if complete_or_read(local, map, async { Ok(false) }).await? {
        return Ok(local.ws().complete_records(map.name()));
    }
    local.check_open()?;
    Ok(None)
}

/// Reads `map` into the working set ahead of its queries, once per
/// client, if it fits: no more records (tombstones counted) than the
/// complete limit, and room for them all without evicting another map's.
/// Answers whether the map is held complete.
pub(crate) async fn preload(local: &LocalData, map: &MapShared) -> Result<bool, ClientError> {
    local.check_open()?;
    if !map.first_preload() {
        return Ok(local.ws().is_complete(map.name()));
    }
    let fits = async {
        let records = local.store().count_records(map.name()).await?;
        let ws = local.ws();
        Ok(records <= ws.complete_limit().min(ws.room_for(map.name())) as u64)
    };
    complete_or_read(local, map, fits).await
}

/// Whether `map` is complete, after one full read of it if it was not,
/// is not known to be too big, and `worth_reading` (awaited under the
/// map's full-read lock, only if the read may happen) says so. Callers
/// that arrive during the read wait for it rather than read the map again.
async fn complete_or_read(
    local: &LocalData,
    map: &MapShared,
    worth_reading: impl std::future::Future<Output = Result<bool, ClientError>>,
) -> Result<bool, ClientError> {
    if local.ws().is_complete(map.name()) {
        return Ok(true);
    }
    let _reading = map.full_read().lock().await;
    if local.ws().is_complete(map.name()) {
        return Ok(true);
    }
    if map.too_big() || !worth_reading.await? {
        return Ok(false);
    }
    Ok(match load_map(local, map.name()).await? {
        Loaded::Complete => true,
        Loaded::TooBig => {
            map.set_too_big();
            false
        }
        Loaded::Raced => false,
    })
}

/// After a query over `records`: the values it decoded count in the
/// working set's byte size (it is not locked when the query decoded
/// none). A map whose trees do not fit is dropped from the working set
/// and queried in the store from then on, not read in again per query.
fn count_decoded(local: &LocalData, map: &MapShared, records: &Records) {
    if records.iter().any(|(_, record)| record.decoded_uncounted())
        && !local.ws().count_decoded(map.name(), records)
    {
        map.set_too_big();
    }
}

/// The live-or-expired records of a listing as query rows (tombstones
/// left out).
fn rows(records: &Records) -> impl Iterator<Item = MemoryRow<'_>> {
    records
        .iter()
        .filter(|(_, record)| record.value.is_some())
        .map(|(key, record)| MemoryRow {
            key,
            value: record.query_value(),
            expires: expires_at(&record.timestamp, record.ttl_ms),
        })
}

enum Loaded {
    Complete,
    TooBig,
    /// A change the read could not account for happened meanwhile.
    Raced,
}

/// Reads every record of `map` into the working set.
async fn load_map(local: &LocalData, map: &Arc<str>) -> Result<Loaded, ClientError> {
    let (mark, limit) = {
        let ws = local.ws();
        (ws.map_mark(map), ws.complete_limit())
    };
    let mut pages = ScanCursor::new(&**map, PAGE);
    let mut live = 0;
    while let Some(page) = pages.next_page(local.store().as_ref()).await? {
        local.check_open()?;
        let now = local.now_millis();
        let mut ws = local.ws();
        for record in page.iter().filter(|r| r.is_live(now)) {
            live += 1;
            if live > limit {
                return Ok(Loaded::TooBig);
            }
            ws.insert_for_complete(map, &record.key, CachedRecord::from_store(record), mark);
        }
    }
    Ok(if local.ws().mark_complete(map, mark) {
        Loaded::Complete
    } else {
        Loaded::Raced
    })
}
