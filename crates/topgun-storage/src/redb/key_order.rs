//! A map's rows of the records table: in key order ([`KeyOrder`], merged
//! from its buckets) or in slot order ([`slot_order`], bucket by bucket).

use super::tables::{backend, bucket, Slot, BUCKETS};
use crate::error::StorageError;
use redb::{AccessGuard, Range, ReadableTable};
use std::ops::Bound;

/// The rows of one map of the records table, in key order, after an
/// optional key. Each of the map's [`BUCKETS`] is a key-ordered run of
/// the table; this keeps the next row of each, ordered, and yields the
/// smallest. A page costs one B-tree descent per bucket, and a row a
/// binary search among the buckets' next keys.
pub(super) struct KeyOrder<'a, V: redb::Value + 'static> {
    map_name: String,
    ranges: Vec<Range<'a, Slot<'static>, V>>,
    /// The next row of each bucket, its key copied out; `None` once the
    /// bucket is read to its end.
    heads: Vec<Option<(String, AccessGuard<'a, V>)>>,
    /// The buckets that have a next row, by descending next key: the
    /// smallest is last.
    order: Vec<usize>,
    during: &'static str,
}

impl<'a, V: redb::Value + 'static> KeyOrder<'a, V> {
    /// The rows of `map_name` after key `after` (all of them for `None`).
    pub(super) fn new(
        table: &'a impl ReadableTable<Slot<'static>, V>,
        map_name: &str,
        after: Option<&str>,
        during: &'static str,
    ) -> Result<Self, StorageError> {
        let mut ranges = Vec::with_capacity(usize::from(BUCKETS));
        for bucket in 0..BUCKETS {
            let start = match after {
                Some(key) => Bound::Excluded((map_name, bucket, key)),
                None => Bound::Included((map_name, bucket, "")),
            };
            // Unbounded: an end bound costs a second descent; `pull`
            // stops at the bucket's end instead.
            ranges.push(
                table
                    .range::<Slot<'_>>((start, Bound::Unbounded))
                    .map_err(backend(during))?,
            );
        }
        let mut order = Self {
            map_name: map_name.to_owned(),
            heads: Vec::with_capacity(ranges.len()),
            order: Vec::with_capacity(ranges.len()),
            ranges,
            during,
        };
        for bucket in 0..order.ranges.len() {
            let head = order.pull(bucket)?;
            order.heads.push(head);
            order.place(bucket);
        }
        Ok(order)
    }

    /// The next row of `bucket`, if it is still of this map and bucket.
    fn pull(
        &mut self,
        bucket: usize,
    ) -> Result<Option<(String, AccessGuard<'a, V>)>, StorageError> {
        let Some(row) = self.ranges[bucket].next() else {
            return Ok(None);
        };
        let (slot, value) = row.map_err(backend(self.during))?;
        let (map_name, at, key) = slot.value();
        if map_name != self.map_name || usize::from(at) != bucket {
            return Ok(None);
        }
        Ok(Some((key.to_owned(), value)))
    }

    /// Puts `bucket` into `order` by its next key (if it has one).
    fn place(&mut self, bucket: usize) {
        let Some((key, _)) = &self.heads[bucket] else {
            return;
        };
        let heads = &self.heads;
        let next_key = |b: usize| heads[b].as_ref().map(|(k, _)| k.as_str());
        let at = self
            .order
            .partition_point(|&b| next_key(b) > Some(key.as_str()));
        self.order.insert(at, bucket);
    }
}

impl<'a, V: redb::Value + 'static> Iterator for KeyOrder<'a, V> {
    /// A key and its row's value.
    type Item = Result<(String, AccessGuard<'a, V>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let bucket = self.order.pop()?;
        let head = self.heads[bucket].take();
        match self.pull(bucket) {
            Ok(next) => self.heads[bucket] = next,
            Err(error) => return Some(Err(error)),
        }
        self.place(bucket);
        head.map(Ok)
    }
}

/// The rows of one map of the records table in slot order (bucket, then
/// key) after key `after`: one range, no merge.
pub(super) fn slot_order<'a, V: redb::Value + 'static>(
    table: &'a impl ReadableTable<Slot<'static>, V>,
    map_name: &'a str,
    after: Option<&str>,
    during: &'static str,
) -> Result<
    impl Iterator<Item = Result<(String, AccessGuard<'a, V>), StorageError>> + 'a,
    StorageError,
> {
    let start = match after {
        Some(key) => Bound::Excluded((map_name, bucket(key), key)),
        None => Bound::Included((map_name, 0, "")),
    };
    let rows = table
        .range::<Slot<'_>>((start, Bound::Unbounded))
        .map_err(backend(during))?;
    Ok(rows
        .map(move |row| {
            let (slot, value) = row.map_err(backend(during))?;
            let (map, _, key) = slot.value();
            Ok((map == map_name).then(|| (key.to_owned(), value)))
        })
        .map_while(Result::transpose))
}
