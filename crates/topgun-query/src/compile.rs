//! Validating a [`Query`] into a [`CompiledQuery`], and evaluating it.

use super::error::{type_name, QueryError};
use super::group::Grouping;
use super::order::{RowKey, SortSpec};
use super::value::{loose_eq, range_cmp, Path};
use regex::Regex;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use topgun_core::wire::{Predicate, PredicateOp, Query};

static NULL: Value = Value::Null;

/// A validated query, ready to run: patterns compiled, paths parsed, the
/// cursor decoded. Cheap to evaluate against many records; evaluation
/// never fails or panics.
#[derive(Debug, Clone)]
pub struct CompiledQuery {
    query: Query,
    filter: Option<Cond>,
    pub(crate) sort: SortSpec,
    pub(crate) cursor: Option<RowKey>,
    limit: Option<usize>,
    pub(crate) grouping: Option<Grouping>,
}

/// Compiling a [`Query`] (the wire type lives in `topgun-core`, the engine
/// here, so compilation is a trait).
pub trait QueryExt {
    /// Validates the query and prepares it for evaluation.
    ///
    /// # Errors
    /// See [`CompiledQuery::new`].
    fn compile(&self) -> Result<CompiledQuery, QueryError>;
}

impl QueryExt for Query {
    fn compile(&self) -> Result<CompiledQuery, QueryError> {
        CompiledQuery::new(self)
    }
}

impl CompiledQuery {
    /// Validates `query` and prepares it for evaluation.
    ///
    /// # Errors
    /// A [`QueryError`] naming the first problem found and where it is: an
    /// unknown operator, a leaf without attribute, `and`/`or` without
    /// children or `not` without exactly one, an operand of the wrong type
    /// (`in` without an array, `between` without `[lo, hi]`, `gt` with an
    /// object or array or null, `like`/`regex` without a string), a regex
    /// that does not compile, an empty sort field, or a cursor that is
    /// malformed or belongs to a different sort, a `where` that is not a
    /// map, an operand that has no JSON form (binary data, a map with
    /// non-string keys), or an invalid `groupBy` / aggregation.
    pub fn new(query: &Query) -> Result<CompiledQuery, QueryError> {
        let mut parts = Vec::new();
        if let Some(fields) = &query.where_ {
            let fields = match to_json(fields, "where")? {
                Value::Object(fields) => fields,
                Value::Null => Map::new(),
                other => {
                    return Err(invalid(
                        "where",
                        "where".to_owned(),
                        "a map of field conditions",
                        &other,
                    ))
                }
            };
            compile_where(&fields, &mut parts)?;
        }
        if let Some(predicate) = &query.predicate {
            parts.push(compile_predicate(predicate, "predicate")?);
        }
        let filter = match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Cond::And(parts)),
        };
        let sort = SortSpec::compile(query.sort_keys())?;
        let cursor = query
            .cursor
            .as_deref()
            .map(|c| sort.decode_cursor(c))
            .transpose()?;
        let grouping = Grouping::compile(query)?;
        Ok(CompiledQuery {
            query: query.clone(),
            filter,
            sort,
            cursor,
            limit: query
                .limit
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            grouping,
        })
    }

    /// This query without its cursor (to start again from the first page,
    /// e.g. after [`QueryError::InvalidCursor`]).
    ///
    /// # Errors
    /// As [`CompiledQuery::new`], except for the cursor.
    pub fn without_cursor(query: &Query) -> Result<CompiledQuery, QueryError> {
        CompiledQuery::new(&Query {
            cursor: None,
            ..query.clone()
        })
    }

    /// The same order, limit and cursor over rows that are already
    /// selected (the group rows of a `groupBy` query): no filter, no
    /// grouping.
    pub(crate) fn over_rows(&self) -> CompiledQuery {
        CompiledQuery {
            filter: None,
            grouping: None,
            ..self.clone()
        }
    }
    /// The query this was compiled from (e.g. to send in `QUERY_SUB`).
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// Whether the record `(key, value)` passes `where` and `predicate`.
    /// The cursor and limit are not considered here.
    pub fn matches(&self, key: &str, value: &Value) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|cond| cond.eval(key, value))
    }

    /// The query's limit, if any.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Whether this is a `groupBy` query (its rows are groups).
    pub fn is_grouped(&self) -> bool {
        self.grouping.is_some()
    }

    /// Whether the query has sort keys (otherwise results are in key order).
    pub fn is_sorted(&self) -> bool {
        !self.sort.is_empty()
    }

    /// The row's position in this query's order.
    pub(crate) fn row_key(&self, key: &str, value: &Value) -> RowKey {
        self.sort.row_key(key, value)
    }

    /// Whether a row lies after the query's cursor (always, without one).
    pub(crate) fn after_cursor(&self, row: &RowKey) -> bool {
        self.cursor.as_ref().is_none_or(|cursor| row > cursor)
    }
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A compiled predicate.
#[derive(Debug, Clone)]
enum Cond {
    Eq(Path, Value),
    Ne(Path, Value),
    Cmp(Path, CmpOp, Value),
    Between(Path, Value, Value),
    In(Path, Vec<Value>),
    NotIn(Path, Vec<Value>),
    Pattern(Path, Regex),
    StartsWith(Path, String),
    EndsWith(Path, String),
    IsNull(Path),
    Exists(Path, bool),
    Contains(Path, Value),
    ContainsAll(Path, Vec<Value>),
    ContainsAny(Path, Vec<Value>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    fn eval(&self, key: &str, value: &Value) -> bool {
        let attr = |path: &Path| path.resolve(key, value);
        match self {
            Self::Eq(p, v) => loose_eq(attr(p).as_deref().unwrap_or(&NULL), v),
            Self::Ne(p, v) => !loose_eq(attr(p).as_deref().unwrap_or(&NULL), v),
            Self::Cmp(p, op, v) => {
                attr(p)
                    .and_then(|a| range_cmp(&a, v))
                    .is_some_and(|o| match op {
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Gte => o != Ordering::Less,
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Lte => o != Ordering::Greater,
                    })
            }
            Self::Between(p, lo, hi) => attr(p).is_some_and(|a| {
                range_cmp(&a, lo).is_some_and(|o| o != Ordering::Less)
                    && range_cmp(&a, hi).is_some_and(|o| o != Ordering::Greater)
            }),
            Self::In(p, vs) => {
                let a = attr(p);
                let a = a.as_deref().unwrap_or(&NULL);
                vs.iter().any(|v| loose_eq(a, v))
            }
            Self::NotIn(p, vs) => {
                let a = attr(p);
                let a = a.as_deref().unwrap_or(&NULL);
                !vs.iter().any(|v| loose_eq(a, v))
            }
            Self::Pattern(p, re) => {
                attr(p).is_some_and(|a| a.as_str().is_some_and(|s| re.is_match(s)))
            }
            Self::StartsWith(p, prefix) => {
                attr(p).is_some_and(|a| a.as_str().is_some_and(|s| s.starts_with(prefix.as_str())))
            }
            Self::EndsWith(p, suffix) => {
                attr(p).is_some_and(|a| a.as_str().is_some_and(|s| s.ends_with(suffix.as_str())))
            }
            Self::IsNull(p) => attr(p).is_none_or(|a| a.is_null()),
            Self::Exists(p, wanted) => attr(p).is_some() == *wanted,
            Self::Contains(p, v) => attr(p).is_some_and(|a| contains(&a, v)),
            Self::ContainsAll(p, vs) => {
                attr(p).is_some_and(|a| is_container(&a) && vs.iter().all(|v| contains(&a, v)))
            }
            Self::ContainsAny(p, vs) => attr(p).is_some_and(|a| vs.iter().any(|v| contains(&a, v))),
            Self::And(cs) => cs.iter().all(|c| c.eval(key, value)),
            Self::Or(cs) => cs.iter().any(|c| c.eval(key, value)),
            Self::Not(c) => !c.eval(key, value),
        }
    }
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Array(_))
}

/// String contains substring, or array contains an element equal to `needle`.
fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
        (Value::Array(items), _) => items.iter().any(|item| loose_eq(item, needle)),
        _ => false,
    }
}

fn compile_where(fields: &Map<String, Value>, out: &mut Vec<Cond>) -> Result<(), QueryError> {
    for (field, expected) in fields {
        let at = format!("where.{field}");
        if field.is_empty() {
            return Err(QueryError::MissingAttribute { op: "where", at });
        }
        let path = Path::parse(field);
        let operators = match expected {
            Value::Object(ops) if !ops.is_empty() && ops.keys().any(|k| k.starts_with('$')) => ops,
            literal => {
                out.push(Cond::Eq(path, literal.clone()));
                continue;
            }
        };
        if !operators.keys().all(|k| k.starts_with('$')) {
            return Err(QueryError::InvalidValue {
                op: "where",
                at,
                expected: "either only `$` operators or a literal object without them",
                found: "an object mixing both",
            });
        }
        for (name, operand) in operators {
            let at = format!("{at}.{name}");
            let op = match name.as_str() {
                "$eq" => PredicateOp::Eq,
                "$ne" => PredicateOp::Neq,
                "$gt" => PredicateOp::Gt,
                "$gte" => PredicateOp::Gte,
                "$lt" => PredicateOp::Lt,
                "$lte" => PredicateOp::Lte,
                "$in" => PredicateOp::In,
                "$like" => PredicateOp::Like,
                "$regex" => PredicateOp::Regex,
                "$nin" => {
                    let values = array_operand("$nin", &at, operand)?;
                    out.push(Cond::NotIn(path.clone(), values));
                    continue;
                }
                "$exists" => {
                    let Value::Bool(wanted) = operand else {
                        return Err(invalid("$exists", at, "a boolean", operand));
                    };
                    out.push(Cond::Exists(path.clone(), *wanted));
                    continue;
                }
                _ => {
                    return Err(QueryError::UnknownOperator {
                        op: name.clone(),
                        at,
                    })
                }
            };
            out.push(compile_leaf(&op, path.clone(), Some(operand), &at)?);
        }
    }
    Ok(())
}

fn compile_predicate(node: &Predicate, at: &str) -> Result<Cond, QueryError> {
    let children = |op: &'static str, min: usize, max: usize, expected| {
        let children = node.children.as_deref().unwrap_or_default();
        if children.len() < min || children.len() > max {
            return Err(QueryError::WrongChildren {
                op,
                at: at.to_owned(),
                expected,
            });
        }
        children
            .iter()
            .enumerate()
            .map(|(i, child)| compile_predicate(child, &format!("{at}.children[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    match &node.op {
        PredicateOp::And => Ok(Cond::And(children(
            "and",
            1,
            usize::MAX,
            "at least one child",
        )?)),
        PredicateOp::Or => Ok(Cond::Or(children(
            "or",
            1,
            usize::MAX,
            "at least one child",
        )?)),
        PredicateOp::Not => {
            let mut only = children("not", 1, 1, "exactly one child")?;
            Ok(Cond::Not(Box::new(only.remove(0))))
        }
        PredicateOp::Other(name) => Err(QueryError::UnknownOperator {
            op: name.clone(),
            at: at.to_owned(),
        }),
        leaf => {
            let attribute = node.attribute.as_deref().filter(|a| !a.is_empty());
            let Some(attribute) = attribute else {
                return Err(QueryError::MissingAttribute {
                    op: static_name(leaf),
                    at: at.to_owned(),
                });
            };
            let operand = node.value.as_ref().map(|v| to_json(v, at)).transpose()?;
            compile_leaf(leaf, Path::parse(attribute), operand.as_ref(), at)
        }
    }
}

/// Compiles a leaf op (anything but and/or/not/unknown).
fn compile_leaf(
    op: &PredicateOp,
    path: Path,
    operand: Option<&Value>,
    at: &str,
) -> Result<Cond, QueryError> {
    let name = static_name(op);
    let value = operand.unwrap_or(&NULL);
    let cmp = |cmp_op| {
        Ok(Cond::Cmp(
            path.clone(),
            cmp_op,
            comparable(name, at, value)?.clone(),
        ))
    };
    match op {
        PredicateOp::Eq => Ok(Cond::Eq(path, value.clone())),
        PredicateOp::Neq => Ok(Cond::Ne(path, value.clone())),
        PredicateOp::Gt => cmp(CmpOp::Gt),
        PredicateOp::Gte => cmp(CmpOp::Gte),
        PredicateOp::Lt => cmp(CmpOp::Lt),
        PredicateOp::Lte => cmp(CmpOp::Lte),
        PredicateOp::Between => match value {
            Value::Array(bounds) if bounds.len() == 2 => {
                let lo = comparable(name, at, &bounds[0])?.clone();
                let hi = comparable(name, at, &bounds[1])?.clone();
                Ok(Cond::Between(path, lo, hi))
            }
            _ => Err(invalid(
                name,
                at.to_owned(),
                "a two-element array [lo, hi]",
                value,
            )),
        },
        PredicateOp::In => Ok(Cond::In(path, array_operand(name, at, value)?)),
        PredicateOp::ContainsAll => Ok(Cond::ContainsAll(path, array_operand(name, at, value)?)),
        PredicateOp::ContainsAny => Ok(Cond::ContainsAny(path, array_operand(name, at, value)?)),
        PredicateOp::Contains => Ok(Cond::Contains(path, value.clone())),
        PredicateOp::StartsWith | PredicateOp::EndsWith => {
            let Value::String(affix) = value else {
                return Err(invalid(name, at.to_owned(), "a string", value));
            };
            Ok(if *op == PredicateOp::StartsWith {
                Cond::StartsWith(path, affix.clone())
            } else {
                Cond::EndsWith(path, affix.clone())
            })
        }
        PredicateOp::IsNull => Ok(Cond::IsNull(path)),
        PredicateOp::IsNotNull => Ok(Cond::Not(Box::new(Cond::IsNull(path)))),
        PredicateOp::Like | PredicateOp::Regex => {
            let Value::String(pattern) = value else {
                return Err(invalid(name, at.to_owned(), "a string pattern", value));
            };
            let source = if *op == PredicateOp::Like {
                like_to_regex(pattern)
            } else {
                pattern.clone()
            };
            let regex = Regex::new(&source).map_err(|source| QueryError::InvalidRegex {
                pattern: pattern.clone(),
                at: at.to_owned(),
                source,
            })?;
            Ok(Cond::Pattern(path, regex))
        }
        PredicateOp::And | PredicateOp::Or | PredicateOp::Not | PredicateOp::Other(_) => {
            Err(QueryError::UnknownOperator {
                op: op.as_str().to_owned(),
                at: at.to_owned(),
            })
        }
    }
}

/// `%` → any run, `_` → one character, everything else literal; anchored
/// at both ends, case-insensitive, `.` matching newlines.
fn like_to_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("(?is)^");
    let mut buf = [0_u8; 4];
    for c in pattern.chars() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            c => out.push_str(&regex::escape(c.encode_utf8(&mut buf))),
        }
    }
    out.push('$');
    out
}

fn comparable<'v>(op: &'static str, at: &str, value: &'v Value) -> Result<&'v Value, QueryError> {
    match value {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => Ok(value),
        _ => Err(invalid(
            op,
            at.to_owned(),
            "a number, string or boolean",
            value,
        )),
    }
}

fn array_operand(op: &'static str, at: &str, value: &Value) -> Result<Vec<Value>, QueryError> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(invalid(op, at.to_owned(), "an array", value)),
    }
}

fn invalid(op: &'static str, at: String, expected: &'static str, found: &Value) -> QueryError {
    QueryError::InvalidValue {
        op,
        at,
        expected,
        found: type_name(found),
    }
}

/// The wire name of a known op; `"unknown"` for [`PredicateOp::Other`].
fn static_name(op: &PredicateOp) -> &'static str {
    match op {
        PredicateOp::Eq => "eq",
        PredicateOp::Neq => "neq",
        PredicateOp::Gt => "gt",
        PredicateOp::Gte => "gte",
        PredicateOp::Lt => "lt",
        PredicateOp::Lte => "lte",
        PredicateOp::Like => "like",
        PredicateOp::Regex => "regex",
        PredicateOp::In => "in",
        PredicateOp::Between => "between",
        PredicateOp::IsNull => "isNull",
        PredicateOp::IsNotNull => "isNotNull",
        PredicateOp::Contains => "contains",
        PredicateOp::ContainsAll => "containsAll",
        PredicateOp::ContainsAny => "containsAny",
        PredicateOp::StartsWith => "startsWith",
        PredicateOp::EndsWith => "endsWith",
        PredicateOp::And => "and",
        PredicateOp::Or => "or",
        PredicateOp::Not => "not",
        PredicateOp::Other(_) => "unknown",
    }
}

/// An operand as the JSON value the engine compares with.
pub(crate) fn to_json(value: &rmpv::Value, at: &str) -> Result<Value, QueryError> {
    rmpv::ext::from_value(value.clone())
        .map_err(|_| QueryError::UnsupportedValue { at: at.to_owned() })
}
