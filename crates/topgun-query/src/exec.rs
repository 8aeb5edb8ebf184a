//! Running a query over a store.

use super::compile::CompiledQuery;
use super::error::QueryError;
use super::group::Groups;
use super::order::RowKey;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use topgun_core::Timestamp;
use topgun_storage::{Paged, ScanCursor, StoreRecord};

/// The first millisecond at which a record written at `timestamp` with
/// `ttl_ms` reads as absent (TopGun's rule: absent once `millis + ttl <
/// now`); `None` without a TTL.
pub fn expires_at(timestamp: &Timestamp, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| timestamp.millis.saturating_add(ttl).saturating_add(1))
}

/// Records read from the store per `scan` call: larger in the browser,
/// where each page is a round trip to IndexedDB's backend.
pub(crate) const PAGE_SIZE: usize = if cfg!(target_family = "wasm") {
    4096
} else {
    512
};

/// The result of a query run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueryResult {
    /// `(key, value)` rows in the query's order (key order without `sort`),
    /// at most `limit` of them.
    pub results: Vec<(String, Value)>,
    /// Whether more matching rows follow `results`.
    pub has_more: bool,
    /// When `has_more` (and `results` is not empty): a cursor naming the
    /// last row; pass it as the query's `cursor` to get the next page.
    pub next_cursor: Option<String>,
    /// Live records whose value could not be decoded as MessagePack into a
    /// JSON-like value (e.g. binary data, maps with non-string keys).
    /// They were skipped, not treated as errors: one bad record must not
    /// hide a whole map from queries.
    pub undecodable: u64,
    /// Rows right after `results` (at most the `overflow` asked of
    /// [`run_query_with_overflow`]; empty for [`run_query`]). A
    /// [`LiveQuery`](super::LiveQuery) keeps them to refill its window.
    pub overflow: Vec<(String, Value)>,
    /// Whether `results` and `overflow` hold every matching row.
    pub(crate) exhaustive: bool,
    /// The `overflow` asked for.
    pub(crate) overflow_cap: usize,
    /// When rows of `results` and `overflow` (or, for a `groupBy` query,
    /// members of `groups`) expire by TTL (see [`expires_at`]).
    pub(crate) expiries: HashMap<String, u64>,
    /// For a `groupBy` query: every group with its members.
    pub(crate) groups: Option<Groups>,
}

/// Runs `query` over map `map` of `store`, reading only the store (so the
/// result is right whatever the in-memory working set holds).
///
/// For a `groupBy` query the rows are the groups (see the crate docs):
/// every matching record is read and kept, so memory is O(matches).
///
/// Records that are tombstones or expired at `now_millis` (`timestamp.millis
/// + ttl_ms < now_millis`) are absent. Values are decoded from MessagePack
/// as JSON; records that fail to decode are skipped and counted in
/// [`QueryResult::undecodable`].
///
/// The map is read in pages of 512 records. Memory is O(limit) with a
/// limit (a bounded heap keeps the best `limit + 1` rows), O(matches)
/// without. Without `sort`, a limited query stops reading once it has
/// `limit + 1` rows, and a cursor makes it start at the cursor's key.
///
/// # Errors
/// [`QueryError::Storage`] if the store fails; nothing else (compilation
/// already validated the query).
pub async fn run_query<S: Paged + ?Sized>(
    store: &S,
    map: &str,
    query: &CompiledQuery,
    now_millis: u64,
) -> Result<QueryResult, QueryError> {
    run_query_with_overflow(store, map, query, now_millis, 0).await
}

/// [`run_query`], also returning up to `overflow` rows after the page in
/// [`QueryResult::overflow`] (used to start a [`LiveQuery`](super::LiveQuery)).
/// Memory is O(limit + overflow).
///
/// # Errors
/// [`QueryError::Storage`] if the store fails.
pub async fn run_query_with_overflow<S: Paged + ?Sized>(
    store: &S,
    map: &str,
    query: &CompiledQuery,
    now_millis: u64,
    overflow: usize,
) -> Result<QueryResult, QueryError> {
    let mut collector = Collector::new(query, overflow);
    let mut pages = ScanCursor::new(map, PAGE_SIZE).after(collector.scan_start());
    if !collector.needs_key_order() {
        pages = pages.any_order();
    }
    'pages: while let Some(page) = pages.next_page(store).await? {
        for record in &page {
            collector.push_record(record, now_millis);
            if collector.is_done() {
                break 'pages;
            }
        }
    }
    Ok(collector.finish())
}

/// One record of a map held in memory, for [`run_query_on_rows`]: its
/// key, its value decoded as JSON (`None` if it could not be), and when it
/// expires (see [`expires_at`]).
#[derive(Debug, Clone, Copy)]
pub struct MemoryRow<'a> {
    /// The record's key.
    pub key: &'a str,
    /// The decoded value; `None` for one that is not JSON-like.
    pub value: Option<&'a Value>,
    /// When the record expires by TTL, if it does.
    pub expires: Option<u64>,
}

/// Runs `query` over live records already in memory (`rows`, in key
/// order): what [`run_query`] answers when those rows are all of the
/// map's live records, without reading or decoding anything. Rows expired
/// at `now_millis` are absent; rows without a value count as
/// undecodable.
pub fn run_query_on_rows<'a>(
    rows: impl IntoIterator<Item = MemoryRow<'a>>,
    query: &CompiledQuery,
    now_millis: u64,
) -> QueryResult {
    collect_rows(rows, query, now_millis).finish()
}

/// [`run_query_on_rows`], its rows' values borrowed from `rows` (a
/// group's row is made, so owned): what a caller that only writes the
/// rows out needs, without a copy of every value.
pub fn query_rows<'a>(
    rows: impl IntoIterator<Item = MemoryRow<'a>>,
    query: &CompiledQuery,
    now_millis: u64,
) -> QueryRows<'a> {
    collect_rows(rows, query, now_millis)
        .finish_rows()
        .into_rows()
}

/// The collector of [`run_query_on_rows`], fed every row.
fn collect_rows<'q, 'a>(
    rows: impl IntoIterator<Item = MemoryRow<'a>>,
    query: &'q CompiledQuery,
    now_millis: u64,
) -> Collector<'q, 'a> {
    let mut collector = Collector::new(query, 0);
    let start = collector.scan_start();
    for row in rows {
        if start.as_deref().is_some_and(|after| row.key <= after) {
            continue;
        }
        if row.expires.is_some_and(|at| now_millis >= at) {
            continue;
        }
        let Some(value) = row.value else {
            collector.undecodable += 1;
            continue;
        };
        // Matching first spares a copy of every value the query drops.
        if collector.query.matches(row.key, value) {
            collector.push_expiring(row.key, Cow::Borrowed(value), row.expires);
            if collector.is_done() {
                break;
            }
        }
    }
    collector
}

/// How many rows of `rows` (as for [`run_query_on_rows`]) `query`
/// returns, without collecting them.
pub fn count_on_rows<'a>(
    rows: impl IntoIterator<Item = MemoryRow<'a>>,
    query: &CompiledQuery,
    now_millis: u64,
) -> u64 {
    if query.grouping.is_some() || query.cursor.is_some() {
        return run_query_on_rows(rows, query, now_millis).results.len() as u64;
    }
    let limit = query.limit().unwrap_or(usize::MAX);
    let mut count = 0;
    for row in rows {
        if count >= limit {
            break;
        }
        if row.expires.is_some_and(|at| now_millis >= at) {
            continue;
        }
        if row.value.is_some_and(|value| query.matches(row.key, value)) {
            count += 1;
        }
    }
    count as u64
}

/// A candidate row, ordered by its position in the query's order; its
/// value owned (read from a store, or a group's row) or borrowed (from
/// records in memory).
#[derive(Debug)]
struct Entry<'a> {
    row: RowKey,
    value: Cow<'a, Value>,
    expires: Option<u64>,
}

impl PartialEq for Entry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.row == other.row
    }
}
impl Eq for Entry<'_> {}
impl PartialOrd for Entry<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.row.cmp(&other.row)
    }
}

/// Accumulates matching rows fed in key order, keeping only what the
/// result needs. Sans-I/O: [`run_query_with_overflow`] feeds it from a
/// store, tests feed it directly.
#[derive(Debug)]
pub(crate) struct Collector<'q, 'a> {
    query: &'q CompiledQuery,
    /// For a `groupBy` query: the groups filled so far (the heap is
    /// filled from them in `finish`).
    groups: Option<Groups>,
    limit: usize,
    overflow: usize,
    /// Rows kept: `limit + overflow + 1` at most when limited.
    capacity: usize,
    /// Max-heap: the worst kept row is on top, ready to be evicted.
    heap: BinaryHeap<Entry<'a>>,
    /// Expiries of group members (rows keep theirs in the heap).
    group_expiries: HashMap<String, u64>,
    matched: usize,
    undecodable: u64,
}

impl<'q, 'a> Collector<'q, 'a> {
    pub(crate) fn new(query: &'q CompiledQuery, overflow: usize) -> Self {
        let limit = query.limit().unwrap_or(usize::MAX);
        let capacity = limit.saturating_add(overflow).saturating_add(1);
        Self {
            query,
            groups: query.grouping.as_ref().map(|_| Groups::default()),
            limit,
            overflow,
            capacity,
            heap: BinaryHeap::new(),
            group_expiries: HashMap::new(),
            matched: 0,
            undecodable: 0,
        }
    }

    /// Whether the result depends on reading records in key order: a
    /// query without sort or grouping starts after its cursor's key and
    /// stops once it has its rows. Other queries read every record, and
    /// the rows they keep do not depend on the order they are read in.
    pub(crate) fn needs_key_order(&self) -> bool {
        self.groups.is_none() && !self.query.is_sorted()
    }

    /// Where to start scanning: after the cursor's key for key-order queries.
    pub(crate) fn scan_start(&self) -> Option<String> {
        match &self.query.cursor {
            Some(cursor) if self.needs_key_order() => Some(cursor.key.clone()),
            _ => None,
        }
    }

    /// Whether later records (in key order) cannot change the result.
    pub(crate) fn is_done(&self) -> bool {
        self.needs_key_order() && self.heap.len() >= self.capacity
    }

    pub(crate) fn push_record(&mut self, record: &StoreRecord, now_millis: u64) {
        if !record.is_live(now_millis) {
            return;
        }
        let Some(bytes) = &record.value else { return };
        match rmp_serde::from_slice::<Value>(bytes) {
            Ok(value) => self.push_expiring(
                &record.key,
                Cow::Owned(value),
                expires_at(&record.timestamp, record.ttl_ms),
            ),
            Err(error) => {
                self.undecodable += 1;
                tracing::debug!(key = %record.key, %error, "query skipped an undecodable value");
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn push(&mut self, key: &str, value: Value) {
        self.push_expiring(key, Cow::Owned(value), None);
    }

    /// A live record that expires at `expires` (see [`expires_at`]).
    pub(crate) fn push_expiring(&mut self, key: &str, value: Cow<'a, Value>, expires: Option<u64>) {
        if !self.query.matches(key, &value) {
            return;
        }
        if let (Some(groups), Some(grouping)) = (&mut self.groups, &self.query.grouping) {
            groups.insert(grouping, key, value.into_owned());
            if let Some(at) = expires {
                self.group_expiries.insert(key.to_owned(), at);
            }
            return;
        }
        self.push_row(key, value, expires);
    }

    /// A row already selected (a record that matched, or a group row).
    fn push_row(&mut self, key: &str, value: Cow<'a, Value>, expires: Option<u64>) {
        let row = self.query.row_key(key, &value);
        if !self.query.after_cursor(&row) {
            return;
        }
        self.matched += 1;
        if self.heap.len() >= self.capacity {
            // Full: the candidate replaces the worst kept row if it is better.
            match self.heap.peek() {
                Some(worst) if row < worst.row => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Entry {
            row,
            value,
            expires,
        });
    }

    pub(crate) fn finish(self) -> QueryResult {
        let f = self.finish_rows();
        let owned = |rows: Vec<(String, Cow<'a, Value>)>| {
            rows.into_iter()
                .map(|(key, value)| (key, value.into_owned()))
                .collect()
        };
        QueryResult {
            results: owned(f.results),
            has_more: f.has_more,
            next_cursor: f.next_cursor,
            undecodable: f.undecodable,
            exhaustive: f.exhaustive,
            overflow: owned(f.overflow),
            overflow_cap: f.overflow_cap,
            expiries: f.expiries,
            groups: f.groups,
        }
    }

    /// The rows kept, in order, their values as they were pushed.
    fn finish_rows(mut self) -> Finished<'a> {
        let groups = self.groups.take();
        let mut expiries = std::mem::take(&mut self.group_expiries);
        if let (Some(groups), Some(grouping)) = (&groups, &self.query.grouping) {
            for (key, row) in groups.rows(grouping) {
                self.push_row(&key, Cow::Owned(row), None);
            }
        }
        let mut rows = self.heap.into_sorted_vec().into_iter();
        let mut results: Vec<(RowKey, Cow<'a, Value>)> = Vec::new();
        for e in rows.by_ref().take(self.limit) {
            expiries.extend(e.expires.map(|at| (e.row.key.clone(), at)));
            results.push((e.row, e.value));
        }
        let mut overflow = Vec::new();
        for e in rows.take(self.overflow) {
            expiries.extend(e.expires.map(|at| (e.row.key.clone(), at)));
            overflow.push((e.row.key, e.value));
        }
        let has_more = self.matched > results.len();
        let next_cursor = match results.last() {
            Some((row, _)) if has_more => Some(self.query.sort.encode_cursor(row)),
            _ => None,
        };
        Finished {
            results: results
                .into_iter()
                .map(|(row, value)| (row.key, value))
                .collect(),
            has_more,
            next_cursor,
            undecodable: self.undecodable,
            exhaustive: self.matched <= self.limit.saturating_add(self.overflow),
            overflow,
            overflow_cap: self.overflow,
            expiries,
            groups,
        }
    }
}

/// What a [`Collector`] ends with: a [`QueryResult`] whose values may be
/// borrowed.
struct Finished<'a> {
    results: Vec<(String, Cow<'a, Value>)>,
    has_more: bool,
    next_cursor: Option<String>,
    undecodable: u64,
    exhaustive: bool,
    overflow: Vec<(String, Cow<'a, Value>)>,
    overflow_cap: usize,
    expiries: HashMap<String, u64>,
    groups: Option<Groups>,
}

impl<'a> Finished<'a> {
    fn into_rows(self) -> QueryRows<'a> {
        QueryRows {
            results: self.results,
            has_more: self.has_more,
            next_cursor: self.next_cursor,
            undecodable: self.undecodable,
        }
    }
}

/// One page of a query's rows (see [`query_rows`]), values borrowed
/// where they could be.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueryRows<'a> {
    /// `(key, value)` rows in the query's order, as in
    /// [`QueryResult::results`].
    pub results: Vec<(String, Cow<'a, Value>)>,
    /// Whether more matching rows follow `results`.
    pub has_more: bool,
    /// When `has_more`: the cursor of the next page.
    pub next_cursor: Option<String>,
    /// Live records whose value could not be decoded (skipped).
    pub undecodable: u64,
}

impl QueryResult {
    /// This result's page as [`QueryRows`] (every value owned).
    pub fn into_rows(self) -> QueryRows<'static> {
        QueryRows {
            results: self
                .results
                .into_iter()
                .map(|(key, value)| (key, Cow::Owned(value)))
                .collect(),
            has_more: self.has_more,
            next_cursor: self.next_cursor,
            undecodable: self.undecodable,
        }
    }
}
