//! The query as users write it and as it travels in `QUERY_SUB`: serde
//! types in TopGun's camelCase shape, plus builder helpers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A query over one map, in TopGun's shape:
/// `{where?, predicate?, sort?: [{field, direction}], limit?, cursor?}`.
///
/// `where` and `predicate` both filter; when both are present a record
/// must satisfy both. Without `sort`, results come in key order. Attribute
/// paths are dotted (`address.city`; a numeric segment indexes an array,
/// `tags.0`), and the attribute `_key` always means the record's key, never
/// a field of the value.
///
/// ```
/// use serde_json::json;
/// use topgun_client::query::{Predicate, Query, SortDirection};
///
/// let query = Query::new()
///     .where_eq("status", json!("active"))
///     .filter(Predicate::gt("age", 18))
///     .sort_by("age", SortDirection::Desc)
///     .limit(50);
/// let compiled = query.compile().expect("valid query");
/// assert!(compiled.matches("u1", &json!({"status": "active", "age": 30})));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Field → expected value (equality), or field → operator object such
    /// as `{"$gt": 18}`. Operators: `$eq $ne $gt $gte $lt $lte $in $nin
    /// $like $regex $exists`. An object whose keys all start with `$` is an
    /// operator object; any other object is compared for equality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#where: Option<Map<String, Value>>,
    /// A predicate tree (see [`Predicate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Predicate>,
    /// Sort keys, most significant first. The record key always breaks
    /// remaining ties (ascending), so the order is total.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<SortField>,
    /// Most results to return. On the wire, a whole float (as JS encoders
    /// write large integers) is accepted too.
    #[serde(
        default,
        deserialize_with = "whole_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<usize>,
    /// Continue after the row this cursor names (a `next_cursor` of an
    /// earlier result of the same query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortField {
    /// Dotted attribute path, or `_key`.
    pub field: String,
    /// Ascending or descending.
    pub direction: SortDirection,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    /// Smallest first; null and missing values come first.
    #[default]
    Asc,
    /// Largest first; null and missing values come last.
    Desc,
}

/// A node of a predicate tree: `{op, attribute?, value?, children?}`.
///
/// Leaf ops compare `attribute` with `value`; `and`/`or` combine
/// `children`, `not` negates its single child. See [`PredicateOp`] for
/// each op's meaning. A `value` of JSON `null` and an absent `value` are
/// the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    /// The operator.
    pub op: PredicateOp,
    /// The attribute a leaf op reads (dotted path or `_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operand of a leaf op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The operands of `and`, `or`, `not`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<Predicate>>,
}

/// Predicate operators, written on the wire in camelCase (`isNull`, …).
///
/// Comparison semantics are those of [`crate::query`]: numbers compare
/// numerically, strings byte-wise, booleans `false < true`, and values of
/// different types never satisfy a range op.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum PredicateOp {
    /// Equal (numbers by value: `1 == 1.0`; a missing attribute equals null).
    Eq,
    /// Not equal (the negation of `eq`).
    Neq,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// SQL `LIKE` on strings: `%` any run, `_` one character, whole string,
    /// case-insensitive. No escape character.
    Like,
    /// Regular expression (Rust `regex` syntax, linear time) found anywhere
    /// in a string attribute.
    Regex,
    /// Equal to one element of the array `value`.
    In,
    /// `lo <= attribute <= hi` for `value = [lo, hi]`.
    Between,
    /// The attribute is missing or null.
    IsNull,
    /// The attribute is present and not null.
    IsNotNull,
    /// A string attribute contains the string `value`, or an array
    /// attribute has an element equal to `value`.
    Contains,
    /// Contains every element of the array `value`.
    ContainsAll,
    /// Contains at least one element of the array `value`.
    ContainsAny,
    /// All children hold.
    And,
    /// At least one child holds.
    Or,
    /// The single child does not hold.
    Not,
    /// An op this version does not know; [`Query::compile`] rejects it.
    Unknown(String),
}

impl PredicateOp {
    /// The wire name (`"isNull"`, …); for [`PredicateOp::Unknown`], the name
    /// as received.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unknown(name) => name,
            known => known.static_name(),
        }
    }

    /// The wire name of a known op; `"unknown"` for [`PredicateOp::Unknown`].
    pub(crate) fn static_name(&self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Neq => "neq",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Like => "like",
            Self::Regex => "regex",
            Self::In => "in",
            Self::Between => "between",
            Self::IsNull => "isNull",
            Self::IsNotNull => "isNotNull",
            Self::Contains => "contains",
            Self::ContainsAll => "containsAll",
            Self::ContainsAny => "containsAny",
            Self::And => "and",
            Self::Or => "or",
            Self::Not => "not",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl From<String> for PredicateOp {
    fn from(name: String) -> Self {
        match name.as_str() {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "like" => Self::Like,
            "regex" => Self::Regex,
            "in" => Self::In,
            "between" => Self::Between,
            "isNull" => Self::IsNull,
            "isNotNull" => Self::IsNotNull,
            "contains" => Self::Contains,
            "containsAll" => Self::ContainsAll,
            "containsAny" => Self::ContainsAny,
            "and" => Self::And,
            "or" => Self::Or,
            "not" => Self::Not,
            _ => Self::Unknown(name),
        }
    }
}

impl From<PredicateOp> for String {
    fn from(op: PredicateOp) -> Self {
        match op {
            PredicateOp::Unknown(name) => name,
            known => known.static_name().to_owned(),
        }
    }
}

impl Predicate {
    fn leaf(op: PredicateOp, attribute: &str, value: Option<Value>) -> Self {
        Self {
            op,
            attribute: Some(attribute.to_owned()),
            value,
            children: None,
        }
    }

    fn node(op: PredicateOp, children: Vec<Predicate>) -> Self {
        Self {
            op,
            attribute: None,
            value: None,
            children: Some(children),
        }
    }

    /// `attribute == value`.
    pub fn eq(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Eq, attribute, Some(value.into()))
    }
    /// `attribute != value`.
    pub fn neq(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Neq, attribute, Some(value.into()))
    }
    /// `attribute > value`.
    pub fn gt(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Gt, attribute, Some(value.into()))
    }
    /// `attribute >= value`.
    pub fn gte(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Gte, attribute, Some(value.into()))
    }
    /// `attribute < value`.
    pub fn lt(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Lt, attribute, Some(value.into()))
    }
    /// `attribute <= value`.
    pub fn lte(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Lte, attribute, Some(value.into()))
    }
    /// SQL `LIKE` (`%`, `_`), case-insensitive.
    pub fn like(attribute: &str, pattern: &str) -> Self {
        Self::leaf(PredicateOp::Like, attribute, Some(Value::from(pattern)))
    }
    /// Regular expression match anywhere in the string.
    pub fn regex(attribute: &str, pattern: &str) -> Self {
        Self::leaf(PredicateOp::Regex, attribute, Some(Value::from(pattern)))
    }
    /// `attribute` equals one of `values`.
    pub fn is_in(attribute: &str, values: impl IntoIterator<Item = Value>) -> Self {
        Self::leaf(
            PredicateOp::In,
            attribute,
            Some(Value::Array(values.into_iter().collect())),
        )
    }
    /// `lo <= attribute <= hi`.
    pub fn between(attribute: &str, lo: impl Into<Value>, hi: impl Into<Value>) -> Self {
        Self::leaf(
            PredicateOp::Between,
            attribute,
            Some(Value::Array(vec![lo.into(), hi.into()])),
        )
    }
    /// `attribute` is missing or null.
    pub fn is_null(attribute: &str) -> Self {
        Self::leaf(PredicateOp::IsNull, attribute, None)
    }
    /// `attribute` is present and not null.
    pub fn is_not_null(attribute: &str) -> Self {
        Self::leaf(PredicateOp::IsNotNull, attribute, None)
    }
    /// String contains substring, or array contains element.
    pub fn contains(attribute: &str, value: impl Into<Value>) -> Self {
        Self::leaf(PredicateOp::Contains, attribute, Some(value.into()))
    }
    /// Contains every one of `values`.
    pub fn contains_all(attribute: &str, values: impl IntoIterator<Item = Value>) -> Self {
        let values = Value::Array(values.into_iter().collect());
        Self::leaf(PredicateOp::ContainsAll, attribute, Some(values))
    }
    /// Contains at least one of `values`.
    pub fn contains_any(attribute: &str, values: impl IntoIterator<Item = Value>) -> Self {
        let values = Value::Array(values.into_iter().collect());
        Self::leaf(PredicateOp::ContainsAny, attribute, Some(values))
    }
    /// All of `children`.
    pub fn and(children: Vec<Predicate>) -> Self {
        Self::node(PredicateOp::And, children)
    }
    /// Any of `children`.
    pub fn or(children: Vec<Predicate>) -> Self {
        Self::node(PredicateOp::Or, children)
    }
    /// Not `child`.
    #[allow(clippy::should_implement_trait)] // a constructor, not negation of `self`
    pub fn not(child: Predicate) -> Self {
        Self::node(PredicateOp::Not, vec![child])
    }
}

impl Query {
    /// A query matching every record of the map, in key order.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `field == value` to `where`.
    pub fn where_eq(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.r#where
            .get_or_insert_with(Map::new)
            .insert(field.to_owned(), value.into());
        self
    }

    /// ANDs `predicate` with the query's predicate (if any).
    pub fn filter(mut self, predicate: Predicate) -> Self {
        self.predicate = Some(match self.predicate.take() {
            None => predicate,
            Some(Predicate {
                op: PredicateOp::And,
                attribute: None,
                value: None,
                children,
            }) => {
                let mut children = children.unwrap_or_default();
                children.push(predicate);
                Predicate::and(children)
            }
            Some(existing) => Predicate::and(vec![existing, predicate]),
        });
        self
    }

    /// Appends a sort key (less significant than those already present).
    pub fn sort_by(mut self, field: &str, direction: SortDirection) -> Self {
        self.sort.push(SortField {
            field: field.to_owned(),
            direction,
        });
        self
    }

    /// Returns at most `limit` results.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after `cursor` (a `next_cursor` from a previous page).
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }
}

/// Reads an optional non-negative integer that may arrive as a whole float.
fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Float(f64),
    }
    let expected = "a non-negative integer";
    match Option::<Number>::deserialize(de)? {
        None => Ok(None),
        Some(Number::Int(n)) => usize::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("limit out of range")),
        Some(Number::Float(f)) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53) => {
            // Whole, non-negative and below 2^53: the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Some(f as usize))
        }
        Some(Number::Float(f)) => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Float(f),
            &expected,
        )),
    }
}
