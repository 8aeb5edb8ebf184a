//! `groupBy` queries: matching records grouped by field values, one row
//! per group with its aggregates.
//!
//! A group row is a JSON object:
//! - `__key`: the group's key (also the row's key in results and
//!   `QUERY_UPDATE`s), built from the group fields' values with a type tag
//!   each, so `"1"` and `1` make different groups: `N` for null or
//!   missing, `B0`/`B1`, `I<n>;` for a whole number, `F<bits>;` for any
//!   other number (the f64 bit pattern), `S<len>:<text>` for a string,
//!   `O<json>;` for an array or object, concatenated in `groupBy` order.
//!   Numbers group by value: `3` and `3.0` are one group.
//! - `__count`: the number of records in the group (always present).
//! - `__sum_<field>`, `__min_<field>`, `__max_<field>`, `__avg_<field>`
//!   for each requested aggregation. Only numeric values count; `sum` is
//!   `0` and the others are `null` when a group has none. A whole sum is
//!   written as an integer, anything else as a float.
//! - each `groupBy` field with the group's value of it (null if missing).
//!
//! Groups come in `__key` order unless the query has a `sort`, which (with
//! `limit` and `cursor`) then applies to the group rows.

use super::error::QueryError;
use super::value::Path;
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, HashMap};
use topgun_core::wire::{AggFunc, Query};

/// The compiled `groupBy` and `aggregations` of a query.
#[derive(Debug, Clone)]
pub(crate) struct Grouping {
    fields: Vec<(String, Path)>,
    aggregates: Vec<Aggregate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone)]
struct Aggregate {
    func: Func,
    field: String,
    path: Path,
}

impl Grouping {
    /// The grouping of `query`, if it has a `groupBy`.
    pub(crate) fn compile(query: &Query) -> Result<Option<Self>, QueryError> {
        let Some(group_by) = &query.group_by else {
            if query.aggregations.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(QueryError::InvalidGrouping {
                    at: "aggregations".to_owned(),
                    reason: "aggregations need a groupBy",
                });
            }
            return Ok(None);
        };
        let mut fields = Vec::with_capacity(group_by.len());
        for (i, field) in group_by.iter().enumerate() {
            if field.is_empty() {
                return Err(QueryError::InvalidGrouping {
                    at: format!("groupBy[{i}]"),
                    reason: "a group field must not be empty",
                });
            }
            fields.push((field.clone(), Path::parse(field)));
        }
        let mut aggregates = Vec::new();
        for (i, aggregation) in query.aggregations.iter().flatten().enumerate() {
            let at = || format!("aggregations[{i}]");
            let func = match &aggregation.func {
                // Every group row carries `__count`.
                AggFunc::Count => continue,
                AggFunc::Sum => Func::Sum,
                AggFunc::Min => Func::Min,
                AggFunc::Max => Func::Max,
                AggFunc::Avg => Func::Avg,
                AggFunc::Other(_) => {
                    return Err(QueryError::InvalidGrouping {
                        at: at(),
                        reason: "unknown aggregation function (count, sum, min, max, avg)",
                    })
                }
            };
            let Some(field) = aggregation.field.as_ref().filter(|f| !f.is_empty()) else {
                return Err(QueryError::InvalidGrouping {
                    at: at(),
                    reason: "sum, min, max and avg need a field",
                });
            };
            aggregates.push(Aggregate {
                func,
                field: field.clone(),
                path: Path::parse(field),
            });
        }
        Ok(Some(Self { fields, aggregates }))
    }

    /// The key of the group `(key, value)` belongs to.
    pub(crate) fn group_key(&self, key: &str, value: &Value) -> String {
        let mut out = String::new();
        for (_, path) in &self.fields {
            match path.resolve(key, value).as_deref() {
                None | Some(Value::Null) => out.push('N'),
                Some(Value::Bool(b)) => out.push_str(if *b { "B1" } else { "B0" }),
                Some(Value::Number(n)) => out.push_str(&number_tag(n)),
                Some(Value::String(s)) => {
                    out.push_str(&format!("S{}:{s}", s.len()));
                }
                Some(other) => out.push_str(&format!("O{other};")),
            }
        }
        out
    }

    /// The group row of `members` (at least one), keyed `group_key`.
    fn row(&self, group_key: &str, members: &BTreeMap<String, Value>) -> Value {
        let mut row = Map::new();
        row.insert("__key".to_owned(), Value::from(group_key));
        row.insert("__count".to_owned(), Value::from(members.len()));
        for aggregate in &self.aggregates {
            let numbers = members.iter().filter_map(|(key, value)| {
                let v = aggregate.path.resolve(key, value)?;
                let n = v.as_f64()?;
                Some((n, v.into_owned()))
            });
            let (name, result) = match aggregate.func {
                Func::Sum => ("sum", whole_or_float(numbers.map(|(n, _)| n).sum())),
                Func::Avg => {
                    let (total, count) =
                        numbers.fold((0.0, 0_u32), |(t, c), (n, _)| (t + n, c + 1));
                    let avg = (count > 0).then(|| total / f64::from(count));
                    (
                        "avg",
                        avg.and_then(Number::from_f64)
                            .map_or(Value::Null, Value::Number),
                    )
                }
                Func::Min => ("min", extreme(numbers, |n, best| n < best)),
                Func::Max => ("max", extreme(numbers, |n, best| n > best)),
            };
            row.insert(format!("__{name}_{}", aggregate.field), result);
        }
        if let Some((key, value)) = members.iter().next() {
            for (field, path) in &self.fields {
                let v = path
                    .resolve(key, value)
                    .map_or(Value::Null, |v| v.into_owned());
                row.insert(field.clone(), v);
            }
        }
        Value::Object(row)
    }
}

/// The tag of a number in a group key: by value, so `3` and `3.0` agree.
fn number_tag(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return format!("I{i};");
    }
    if let Some(u) = n.as_u64() {
        return format!("I{u};");
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // A whole float within i64 range converts exactly.
    #[allow(clippy::cast_possible_truncation)]
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        return format!("I{};", f as i64);
    }
    format!("F{};", f.to_bits())
}

/// A whole, finite sum as an integer; anything else as a float.
fn whole_or_float(sum: f64) -> Value {
    // Whole and within i64 range: the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    if sum.is_finite() && sum.fract() == 0.0 && sum.abs() < 9.2e18 {
        return Value::from(sum as i64);
    }
    Number::from_f64(sum).map_or(Value::Null, Value::Number)
}

/// The value whose number wins `better` against every other (the first
/// on ties), or null if there is none.
fn extreme(
    numbers: impl Iterator<Item = (f64, Value)>,
    better: impl Fn(f64, f64) -> bool,
) -> Value {
    let mut best: Option<(f64, Value)> = None;
    for (n, v) in numbers {
        if best.as_ref().is_none_or(|(b, _)| better(n, *b)) {
            best = Some((n, v));
        }
    }
    best.map_or(Value::Null, |(_, v)| v)
}

/// The members of every group, kept so that one write recomputes only the
/// groups it touches.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Groups {
    /// Record key → its group's key.
    member_of: HashMap<String, String>,
    /// Group key → its members (record key → value).
    groups: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Groups {
    /// Puts `(key, value)` into its group (a record that matches the
    /// query's filter).
    pub(crate) fn insert(&mut self, grouping: &Grouping, key: &str, value: Value) {
        let group = grouping.group_key(key, &value);
        self.member_of.insert(key.to_owned(), group.clone());
        self.groups
            .entry(group)
            .or_default()
            .insert(key.to_owned(), value);
    }

    /// Whether `key` is in a group.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.member_of.contains_key(key)
    }

    /// Moves `key` to the group of `new` (a matching value), or out of
    /// every group (`None`). Returns each group row that changed: the new
    /// row, or `None` for a group that is now empty.
    pub(crate) fn apply(
        &mut self,
        grouping: &Grouping,
        key: &str,
        new: Option<&Value>,
    ) -> Vec<(String, Option<Value>)> {
        let mut touched = Vec::new();
        if let Some(old_group) = self.member_of.remove(key) {
            if let Some(members) = self.groups.get_mut(&old_group) {
                members.remove(key);
                if members.is_empty() {
                    self.groups.remove(&old_group);
                }
            }
            touched.push(old_group);
        }
        if let Some(value) = new {
            let group = grouping.group_key(key, value);
            self.insert(grouping, key, value.clone());
            if !touched.contains(&group) {
                touched.push(group);
            }
        }
        touched
            .into_iter()
            .map(|group| {
                let row = self.groups.get(&group).map(|m| grouping.row(&group, m));
                (group, row)
            })
            .collect()
    }

    /// Every group row, in group key order.
    pub(crate) fn rows(&self, grouping: &Grouping) -> Vec<(String, Value)> {
        self.groups
            .iter()
            .map(|(group, members)| (group.clone(), grouping.row(group, members)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use topgun_core::wire::Aggregation;

    fn grouping(fields: &[&str], aggs: Vec<Aggregation>) -> Grouping {
        let mut q = Query::new().group_by(fields.iter().copied());
        for a in aggs {
            q = q.aggregate(a);
        }
        Grouping::compile(&q).unwrap().unwrap()
    }

    #[test]
    fn rows_carry_count_requested_aggregates_and_group_fields() {
        let g = grouping(
            &["category"],
            vec![
                Aggregation {
                    func: AggFunc::Count,
                    field: None,
                },
                Aggregation::new(AggFunc::Sum, "price"),
                Aggregation::new(AggFunc::Avg, "price"),
                Aggregation::new(AggFunc::Min, "price"),
                Aggregation::new(AggFunc::Max, "price"),
            ],
        );
        let mut groups = Groups::default();
        groups.insert(&g, "o1", json!({"category": "a", "price": 10}));
        groups.insert(&g, "o2", json!({"category": "a", "price": 25}));
        groups.insert(&g, "o3", json!({"category": "b", "price": 50.5}));
        groups.insert(&g, "o4", json!({"category": "b", "price": "n/a"}));
        let rows = groups.rows(&g);
        assert_eq!(
            rows,
            vec![
                (
                    "S1:a".to_owned(),
                    json!({"__key": "S1:a", "__count": 2, "__sum_price": 35,
                        "__avg_price": 17.5, "__min_price": 10, "__max_price": 25,
                        "category": "a"})
                ),
                (
                    "S1:b".to_owned(),
                    json!({"__key": "S1:b", "__count": 2, "__sum_price": 50.5,
                        "__avg_price": 50.5, "__min_price": 50.5, "__max_price": 50.5,
                        "category": "b"})
                ),
            ]
        );
    }

    #[test]
    fn keys_tag_types_and_numbers_group_by_value() {
        let g = grouping(&["v", "w"], vec![]);
        assert_eq!(g.group_key("k", &json!({"v": 3, "w": "x"})), "I3;S1:x");
        assert_eq!(g.group_key("k", &json!({"v": 3.0})), "I3;N");
        assert_eq!(g.group_key("k", &json!({"v": "3", "w": true})), "S1:3B1");
        assert_eq!(
            g.group_key("k", &json!({"v": 0.5, "w": null})),
            format!("F{};N", 0.5_f64.to_bits())
        );
    }

    #[test]
    fn a_write_moves_a_member_and_reports_both_groups() {
        let g = grouping(&["c"], vec![]);
        let mut groups = Groups::default();
        groups.insert(&g, "k1", json!({"c": "a"}));
        let changed = groups.apply(&g, "k1", Some(&json!({"c": "b"})));
        assert_eq!(
            changed,
            vec![
                ("S1:a".to_owned(), None),
                (
                    "S1:b".to_owned(),
                    Some(json!({"__key": "S1:b", "__count": 1, "c": "b"}))
                ),
            ]
        );
        assert!(groups.contains("k1"));
        assert_eq!(
            groups.apply(&g, "k1", None),
            vec![("S1:b".to_owned(), None)]
        );
        assert!(!groups.contains("k1"));
    }

    #[test]
    fn bad_groupings_are_refused() {
        let no_field = Query::new().group_by(["c"]).aggregate(Aggregation {
            func: AggFunc::Sum,
            field: None,
        });
        assert!(matches!(
            Grouping::compile(&no_field),
            Err(QueryError::InvalidGrouping { .. })
        ));
        let orphan = Query::new().aggregate(Aggregation::new(AggFunc::Sum, "p"));
        assert!(Grouping::compile(&orphan).is_err());
        let unknown = Query::new()
            .group_by(["c"])
            .aggregate(Aggregation::new(AggFunc::from("median"), "p"));
        assert!(Grouping::compile(&unknown).is_err());
    }
}
