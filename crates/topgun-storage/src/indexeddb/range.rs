//! Reading many keys of one map with one request over the range they
//! span, instead of one request per key: a bulk write of new or
//! neighbouring keys, or a batch of reads of most of a map, then costs one
//! `getAll` (IndexedDB answers it far faster per record than separate
//! `get`s).

use super::codec::{self, Stored};
use super::js::idb_error;
use super::page;
use crate::error::StorageError;
use idb::ObjectStore;
use std::collections::HashMap;
use std::future::IntoFuture;

/// A map with at least this many keys to read at once is read by range.
pub(crate) const RANGE_READ_MIN: usize = 32;
/// A range read returns at most this many records per key asked for; past
/// that (the keys are spread over a big map) the caller reads the rest
/// again (a write by range again, the reader key by key).
const RANGE_READ_SPREAD: usize = 4;

const DURING: &str = "reading records by range";

/// A range read issued, not yet answered.
pub(crate) struct RangeRead {
    map_name: String,
    /// The keys asked for, sorted, without duplicates.
    keys: Vec<String>,
    limit: usize,
    request: idb::request::futures::GetAllStoreRequestFuture,
}

/// What a range read found.
pub(crate) struct RangeFound {
    pub(crate) map_name: String,
    /// What the store holds at each key asked for (`None`: nothing).
    pub(crate) records: Vec<(String, Option<Stored>)>,
    /// Keys past where a truncated range stopped: still to read.
    pub(crate) unread: Vec<String>,
}

impl RangeRead {
    /// Issues the read of `keys` (at least two) of `map_name` in `store`.
    pub(crate) fn issue(
        store: &ObjectStore,
        map_name: &str,
        mut keys: Vec<String>,
    ) -> Result<Self, StorageError> {
        keys.sort_unstable();
        keys.dedup();
        let limit = keys.len() * RANGE_READ_SPREAD;
        let (first, last) = match (keys.first(), keys.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Err(codec::corrupt("a range read", "no keys")),
        };
        let range = idb::KeyRange::bound(
            &codec::record_key(map_name, first),
            &codec::record_key(map_name, last),
            Some(false),
            Some(false),
        )
        .map_err(idb_error(DURING))?;
        let request = store
            .get_all(Some(range.into()), Some(limit as u32))
            .map_err(idb_error(DURING))?
            .into_future();
        Ok(Self {
            map_name: map_name.to_owned(),
            keys,
            limit,
            request,
        })
    }

    /// Waits for the answer.
    pub(crate) async fn finish(self) -> Result<RangeFound, StorageError> {
        let found = self.request.await.map_err(idb_error(DURING))?;
        let truncated = found.len() >= self.limit;
        let mut by_key = HashMap::with_capacity(found.len());
        let mut reached = None;
        for stored in page::stored_page(&self.map_name, found)? {
            reached = Some(stored.key().to_owned());
            by_key.insert(stored.key().to_owned(), stored);
        }
        let mut records = Vec::with_capacity(self.keys.len());
        let mut unread = Vec::new();
        for key in self.keys {
            if truncated && reached.as_ref().is_none_or(|last| key > *last) {
                unread.push(key);
            } else {
                let record = by_key.remove(&key);
                records.push((key, record));
            }
        }
        Ok(RangeFound {
            map_name: self.map_name,
            records,
            unread,
        })
    }
}
