//! Live queries: a query's result kept up to date write by write.
//!
//! [`LiveQuery`] is pure state (no I/O, no clock): it starts from a
//! [`QueryResult`] and is told each write to the map (the key and its new
//! decoded value, or `None` when removed or expired); it answers with the
//! ENTER / UPDATE / LEAVE changes of the visible result.
//!
//! With a `limit`, the result is a *window* of the first `limit` rows.
//! Besides the window, the live query keeps a small *buffer* of the rows
//! right after it (the `overflow` rows of
//! [`run_query_with_overflow`](super::run_query_with_overflow)) and a
//! *frontier*: every matching row up to the frontier is in the window or
//! buffer; rows beyond it are unknown. When a window row leaves, the first
//! buffered row enters in its place. A write beyond the frontier is ignored
//! (it cannot reach the window while the buffer is in front of it). When the
//! window is short and the buffer empty while rows may exist beyond the
//! frontier, [`LiveUpdate::needs_refill`] asks the caller to re-run the query
//! and call [`LiveQuery::reset`]. Each write costs O(log(limit + overflow)).
//!
//! A `groupBy` query keeps every matching record in its group; a write
//! recomputes the groups it leaves and joins, and the window (over group
//! rows, all of them known) reports the group rows that enter, change or
//! leave.
//!
//! **TTL.** The live query knows when each row it holds expires (writes
//! say so with [`LiveQuery::apply_expiring`]); [`LiveQuery::next_expiry`]
//! tells the caller when to wake up and [`LiveQuery::expire`] turns every
//! row expired by then into a LEAVE, without a write.

use super::compile::CompiledQuery;
use super::exec::QueryResult;
use super::group::Groups;
use super::order::RowKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use topgun_core::wire::ChangeType;

/// One change to a live result, shaped like a `QUERY_UPDATE` payload
/// (without `queryId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryChange {
    /// The record key.
    pub key: String,
    /// The row's value; `None` for [`ChangeType::Leave`].
    pub value: Option<Value>,
    /// What happened.
    pub change_type: ChangeType,
}

/// What one write did to a live query.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LiveUpdate {
    /// Changes to emit, leaves first, then updates, then enters (so a
    /// consumer applying them in order never holds more than `limit` rows).
    pub changes: Vec<QueryChange>,
    /// The window is short of `limit` and rows that could fill it were not
    /// kept: re-run the query and call [`LiveQuery::reset`].
    pub needs_refill: bool,
}

/// Which matching rows the live query knows about.
#[derive(Debug, Clone)]
enum Frontier {
    /// Every matching row.
    All,
    /// Every matching row up to and including this one.
    UpTo(RowKey),
    /// Every matching row strictly before this one.
    Below(RowKey),
    /// None (a `limit` of 0 with nothing buffered).
    Nothing,
}

impl Frontier {
    fn admits(&self, row: &RowKey) -> bool {
        match self {
            Self::All => true,
            Self::UpTo(last) => row <= last,
            Self::Below(bound) => row < bound,
            Self::Nothing => false,
        }
    }
}

/// The window (and buffer) of rows of one live query.
#[derive(Debug, Clone)]
struct Window {
    query: CompiledQuery,
    limit: usize,
    overflow_cap: usize,
    window: BTreeMap<RowKey, Value>,
    buffer: BTreeMap<RowKey, Value>,
    index: HashMap<String, RowKey>,
    frontier: Frontier,
}

impl Window {
    fn new(
        query: CompiledQuery,
        results: Vec<(String, Value)>,
        overflow: Vec<(String, Value)>,
        exhaustive: bool,
        overflow_cap: usize,
    ) -> Self {
        let limit = query.limit().unwrap_or(usize::MAX);
        let mut live = Self {
            query,
            limit,
            overflow_cap,
            window: BTreeMap::new(),
            buffer: BTreeMap::new(),
            index: HashMap::new(),
            frontier: Frontier::All,
        };
        for (key, value) in results {
            let row = live.query.row_key(&key, &value);
            live.index.insert(key, row.clone());
            live.window.insert(row, value);
        }
        for (key, value) in overflow {
            let row = live.query.row_key(&key, &value);
            live.index.insert(key, row.clone());
            live.buffer.insert(row, value);
        }
        if !exhaustive {
            let last = live
                .buffer
                .keys()
                .next_back()
                .or_else(|| live.window.keys().next_back());
            live.frontier = last.map_or(Frontier::Nothing, |row| Frontier::UpTo(row.clone()));
        }
        live
    }

    /// The current result rows, in the query's order.
    fn results(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.window
            .iter()
            .map(|(row, value)| (row.key.as_str(), value))
    }

    /// The current result rows, owned.
    fn to_results(&self) -> Vec<(String, Value)> {
        self.results()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// Number of rows in the result.
    fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the result is empty.
    fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Whether rows may follow the result (`true` also when unknown).
    fn has_more(&self) -> bool {
        !self.buffer.is_empty() || !matches!(self.frontier, Frontier::All)
    }

    /// Whether the window is short and only a re-run can fill it.
    fn needs_refill(&self) -> bool {
        self.window.len() < self.limit && !matches!(self.frontier, Frontier::All)
    }

    /// Applies one write: `new` is the key's new decoded value, `None` if
    /// the key was removed (tombstone), expired, or its value does not
    /// decode (as [`run_query`](super::run_query) skips such records). Returns the changes to
    /// emit. Writes that do not affect the result return no changes.
    fn apply(&mut self, key: &str, new: Option<&Value>) -> LiveUpdate {
        // 1. Take the key out, promoting the first buffered row if it left
        //    the window.
        let mut old_value = None;
        let mut promoted = None;
        if let Some(old_row) = self.index.remove(key) {
            if let Some(value) = self.window.remove(&old_row) {
                old_value = Some(value);
                if let Some((row, value)) = self.buffer.pop_first() {
                    promoted = Some(row.key.clone());
                    self.window.insert(row, value);
                }
            } else {
                self.buffer.remove(&old_row);
            }
        }

        // 2. Put it back where it now belongs, demoting the window's last
        //    row if it pushes in front of it.
        let mut new_value = None;
        let mut demoted = None;
        if let Some(value) = new.filter(|value| self.query.matches(key, value)) {
            let row = self.query.row_key(key, value);
            if self.query.after_cursor(&row) && self.frontier.admits(&row) {
                self.index.insert(key.to_owned(), row.clone());
                let before_last = self
                    .window
                    .last_key_value()
                    .is_some_and(|(last, _)| row < *last);
                if self.window.len() < self.limit {
                    // A short window means an empty buffer: the row is in.
                    self.window.insert(row, value.clone());
                    new_value = Some(value.clone());
                } else if before_last {
                    self.window.insert(row, value.clone());
                    new_value = Some(value.clone());
                    if let Some((last, last_value)) = self.window.pop_last() {
                        demoted = Some(last.key.clone());
                        self.buffer.insert(last, last_value);
                    }
                } else {
                    self.buffer.insert(row, value.clone());
                }
                if self.buffer.len() > self.overflow_cap {
                    if let Some((dropped, _)) = self.buffer.pop_last() {
                        self.index.remove(&dropped.key);
                        self.frontier = Frontier::Below(dropped);
                    }
                }
            }
        }

        // 3. Net changes of the visible window.
        if promoted.is_some() && promoted == demoted {
            promoted = None;
            demoted = None;
        }
        let mut changes = Vec::new();
        let leave = |key: String| QueryChange {
            key,
            value: None,
            change_type: ChangeType::Leave,
        };
        match (&old_value, &new_value) {
            (Some(_), None) => changes.push(leave(key.to_owned())),
            (Some(old), Some(new)) if old != new => changes.push(QueryChange {
                key: key.to_owned(),
                value: Some(new.clone()),
                change_type: ChangeType::Update,
            }),
            _ => {}
        }
        changes.extend(demoted.map(leave));
        if let Some(key) = promoted {
            let value = self
                .index
                .get(&key)
                .and_then(|row| self.window.get(row))
                .cloned();
            changes.push(QueryChange {
                key,
                value,
                change_type: ChangeType::Enter,
            });
        }
        if let (None, Some(new)) = (old_value, new_value) {
            changes.push(QueryChange {
                key: key.to_owned(),
                value: Some(new),
                change_type: ChangeType::Enter,
            });
        }
        sort_changes(&mut changes);
        LiveUpdate {
            changes,
            needs_refill: self.needs_refill(),
        }
    }
}

/// The incrementally maintained result of one query. See the module docs.
#[derive(Debug, Clone)]
pub struct LiveQuery {
    query: CompiledQuery,
    window: Window,
    groups: Option<Groups>,
    /// `(expires_at, key)` of every held row (or group member) with a TTL.
    expiry_queue: BTreeSet<(u64, String)>,
    expiry_of: HashMap<String, u64>,
}

impl LiveQuery {
    /// Starts from `initial`, the result of running `query` (with
    /// [`run_query_with_overflow`](super::run_query_with_overflow) to get a
    /// refill buffer, or [`run_query`](super::run_query) for none).
    pub fn new(query: CompiledQuery, initial: QueryResult) -> Self {
        let window = match (&initial.groups, &query.grouping) {
            (Some(groups), Some(grouping)) => {
                // Every group is known: the window holds them all.
                let mut rows = groups.rows(grouping);
                let over_rows = query.over_rows();
                rows.retain(|(key, value)| over_rows.after_cursor(&over_rows.row_key(key, value)));
                rows.sort_by_cached_key(|(key, value)| over_rows.row_key(key, value));
                let limit = over_rows.limit().unwrap_or(usize::MAX).min(rows.len());
                let overflow = rows.split_off(limit);
                Window::new(over_rows, rows, overflow, true, usize::MAX)
            }
            _ => Window::new(
                query.clone(),
                initial.results,
                initial.overflow,
                initial.exhaustive,
                initial.overflow_cap,
            ),
        };
        let mut live = Self {
            query,
            window,
            groups: initial.groups,
            expiry_queue: BTreeSet::new(),
            expiry_of: HashMap::new(),
        };
        for (key, at) in initial.expiries {
            live.expiry_queue.insert((at, key.clone()));
            live.expiry_of.insert(key, at);
        }
        live
    }

    /// The query being maintained.
    pub fn query(&self) -> &CompiledQuery {
        &self.query
    }

    /// The current result rows, in the query's order (group rows for a
    /// `groupBy` query).
    pub fn results(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.window.results()
    }

    /// The current result rows, owned.
    pub fn to_results(&self) -> Vec<(String, Value)> {
        self.window.to_results()
    }

    /// Number of rows in the result.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the result is empty.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Whether rows may follow the result (`true` also when unknown).
    pub fn has_more(&self) -> bool {
        self.window.has_more()
    }

    /// Whether the window is short and only a re-run can fill it.
    pub fn needs_refill(&self) -> bool {
        self.window.needs_refill()
    }

    /// Applies one write: `new` is the key's new decoded value, `None` if
    /// the key was removed (tombstone), expired, or its value does not
    /// decode (as [`run_query`](super::run_query) skips such records).
    /// Returns the changes to emit. Writes that do not affect the result
    /// return no changes.
    pub fn apply(&mut self, key: &str, new: Option<&Value>) -> LiveUpdate {
        self.apply_expiring(key, new, None)
    }

    /// [`LiveQuery::apply`] for a record that expires at `expires_at`
    /// (see [`expires_at`](super::expires_at)); the live query then
    /// reports its LEAVE from [`LiveQuery::expire`].
    pub fn apply_expiring(
        &mut self,
        key: &str,
        new: Option<&Value>,
        expires_at: Option<u64>,
    ) -> LiveUpdate {
        let update = match (&mut self.groups, &self.query.grouping) {
            (Some(groups), Some(grouping)) => {
                let new = new.filter(|value| self.query.matches(key, value));
                let mut changes = Vec::new();
                for (group, row) in groups.apply(grouping, key, new) {
                    changes.extend(self.window.apply(&group, row.as_ref()).changes);
                }
                sort_changes(&mut changes);
                LiveUpdate {
                    changes,
                    needs_refill: self.window.needs_refill(),
                }
            }
            _ => self.window.apply(key, new),
        };
        if let Some(old) = self.expiry_of.remove(key) {
            self.expiry_queue.remove(&(old, key.to_owned()));
        }
        let held = match &self.groups {
            Some(groups) => groups.contains(key),
            None => self.window.index.contains_key(key),
        };
        if let (Some(at), true) = (expires_at, held) {
            self.expiry_queue.insert((at, key.to_owned()));
            self.expiry_of.insert(key.to_owned(), at);
        }
        update
    }

    /// The earliest millisecond at which a held row expires by TTL: call
    /// [`LiveQuery::expire`] once the clock reaches it. `None` when no
    /// held row has a TTL.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry_queue.first().map(|(at, _)| *at)
    }

    /// Removes every held row whose TTL has passed at `now_millis` (its
    /// expiry `<= now_millis`), as a write removing it would, and returns
    /// the changes: a LEAVE for each expired row of the result, and the
    /// rows that enter in their place (or, for a `groupBy` query, the
    /// group rows that change).
    pub fn expire(&mut self, now_millis: u64) -> LiveUpdate {
        let mut update = LiveUpdate::default();
        while let Some((at, key)) = self.expiry_queue.first().cloned() {
            if at > now_millis {
                break;
            }
            let step = self.apply(&key, None);
            update.changes.extend(step.changes);
        }
        sort_changes(&mut update.changes);
        update.needs_refill = self.window.needs_refill();
        update
    }

    /// Replaces the state with a fresh run of the same query (after
    /// [`LiveUpdate::needs_refill`], or a reconnect) and returns the
    /// changes from the old result to the new one.
    pub fn reset(&mut self, fresh: QueryResult) -> Vec<QueryChange> {
        let old = self.to_results();
        *self = Self::new(self.query.clone(), fresh);
        diff_results(&old, &self.to_results())
    }
}

/// Leaves first, then updates, then enters (stable within each group).
fn sort_changes(changes: &mut [QueryChange]) {
    changes.sort_by_key(|c| match c.change_type {
        ChangeType::Leave => 0,
        ChangeType::Update => 1,
        _ => 2,
    });
}

/// The changes that turn result `old` into result `new`: LEAVE for rows
/// only in `old`, UPDATE for rows in both whose value differs, ENTER for
/// rows only in `new` (in that order, each group in its result's order).
pub fn diff_results(old: &[(String, Value)], new: &[(String, Value)]) -> Vec<QueryChange> {
    let new_by_key: HashMap<&str, &Value> = new.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let old_keys: HashSet<&str> = old.iter().map(|(k, _)| k.as_str()).collect();
    let mut changes = Vec::new();
    for (key, value) in old {
        match new_by_key.get(key.as_str()) {
            None => changes.push(QueryChange {
                key: key.clone(),
                value: None,
                change_type: ChangeType::Leave,
            }),
            Some(new_value) if *new_value != value => changes.push(QueryChange {
                key: key.clone(),
                value: Some((*new_value).clone()),
                change_type: ChangeType::Update,
            }),
            Some(_) => {}
        }
    }
    changes.sort_by_key(|c| c.change_type == ChangeType::Update);
    for (key, value) in new {
        if !old_keys.contains(key.as_str()) {
            changes.push(QueryChange {
                key: key.clone(),
                value: Some(value.clone()),
                change_type: ChangeType::Enter,
            });
        }
    }
    changes
}
