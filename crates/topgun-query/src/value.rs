//! Reading attributes out of values and comparing JSON values.
//!
//! Three relations, used by different parts of the engine:
//! - [`loose_eq`]: equality for `eq`, `in`, `contains`: like `==` on JSON,
//!   except that numbers compare by value (`1 == 1.0`), also inside arrays
//!   and objects;
//! - [`range_cmp`]: the order for `gt`/`gte`/`lt`/`lte`/`between`: numbers
//!   numerically (integers and floats mixed, exactly), strings byte-wise,
//!   booleans `false < true`; any other pair is incomparable and never
//!   satisfies a range op;
//! - [`total_cmp`]: the total order for sorting: null/missing < booleans <
//!   numbers < strings < arrays < objects, each type in its natural order
//!   (arrays lexicographically, objects by sorted entries).

use serde_json::{Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

/// The attribute name that means the record key.
pub(crate) const KEY_ATTRIBUTE: &str = "_key";

/// A compiled attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Path {
    /// `_key`: the record key.
    Key,
    /// Dotted path segments into the value.
    Field(Vec<String>),
}

impl Path {
    pub(crate) fn parse(attribute: &str) -> Self {
        if attribute == KEY_ATTRIBUTE {
            Self::Key
        } else {
            Self::Field(attribute.split('.').map(str::to_owned).collect())
        }
    }

    /// The attribute of a record; `None` when missing.
    pub(crate) fn resolve<'a>(&self, key: &str, value: &'a Value) -> Option<Cow<'a, Value>> {
        match self {
            Self::Key => Some(Cow::Owned(Value::String(key.to_owned()))),
            Self::Field(segments) => {
                let mut current = value;
                for segment in segments {
                    current = match current {
                        Value::Object(map) => map.get(segment)?,
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                Some(Cow::Borrowed(current))
            }
        }
    }
}

/// Compares two JSON numbers exactly, whatever their representation.
pub(crate) fn number_cmp(a: &Number, b: &Number) -> Ordering {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => int_float_cmp(x, b.as_f64().unwrap_or(0.0)),
        (None, Some(y)) => int_float_cmp(y, a.as_f64().unwrap_or(0.0)).reverse(),
        // serde_json numbers are finite, so `total_cmp` is the usual order
        // (it only separates -0.0 from 0.0, which we treat as equal).
        (None, None) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or_else(|| x.total_cmp(&y))
        }
    }
}

fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Exact comparison of an integer with a finite float.
fn int_float_cmp(i: i128, f: f64) -> Ordering {
    // i128 covers every i64/u64; floats beyond ±2^127 are beyond all of them.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0; // 2^127
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // `whole` is integral and within i128 range, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal if f > whole => Ordering::Less,
        Ordering::Equal if f < whole => Ordering::Greater,
        other => other,
    }
}

/// Equality for `eq`, `in`, `contains`: JSON equality with numbers by value.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| loose_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| loose_eq(x, y)))
        }
        _ => a == b,
    }
}

/// The order of range ops; `None` for pairs that are not comparable.
pub(crate) fn range_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(number_cmp(x, y)),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn type_rank(value: Option<&Value>) -> u8 {
    match value {
        None | Some(Value::Null) => 0,
        Some(Value::Bool(_)) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
    }
}

/// The total sort order; `None` (missing) sorts with null.
pub(crate) fn total_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let rank = type_rank(a).cmp(&type_rank(b));
    if rank != Ordering::Equal {
        return rank;
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => number_cmp(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(Value::Array(xs)), Some(Value::Array(ys))) => {
            for (x, y) in xs.iter().zip(ys) {
                let order = total_cmp(Some(x), Some(y));
                if order != Ordering::Equal {
                    return order;
                }
            }
            xs.len().cmp(&ys.len())
        }
        (Some(Value::Object(xs)), Some(Value::Object(ys))) => {
            let mut xs: Vec<_> = xs.iter().collect();
            let mut ys: Vec<_> = ys.iter().collect();
            xs.sort_by(|a, b| a.0.cmp(b.0));
            ys.sort_by(|a, b| a.0.cmp(b.0));
            for ((kx, x), (ky, y)) in xs.iter().zip(&ys) {
                let order = kx.cmp(ky).then_with(|| total_cmp(Some(x), Some(y)));
                if order != Ordering::Equal {
                    return order;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => Ordering::Equal, // both null or missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_exactly_across_representations() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(number_cmp(&n(json!(1)), &n(json!(1.0))), Ordering::Equal);
        assert_eq!(number_cmp(&n(json!(1)), &n(json!(1.5))), Ordering::Less);
        assert_eq!(
            number_cmp(&n(json!(-1)), &n(json!(-1.5))),
            Ordering::Greater
        );
        assert_eq!(
            number_cmp(&n(json!(u64::MAX)), &n(json!(-1))),
            Ordering::Greater
        );
        // 2^53 + 1 is not representable as f64; exact comparison still sees it.
        let big = (1_u64 << 53) + 1;
        assert_eq!(
            number_cmp(&n(json!(big)), &n(json!(9_007_199_254_740_992.0))),
            Ordering::Greater
        );
        assert_eq!(
            number_cmp(&n(json!(1e300)), &n(json!(u64::MAX))),
            Ordering::Greater
        );
        assert_eq!(number_cmp(&n(json!(-0.0)), &n(json!(0))), Ordering::Equal);
    }

    #[test]
    fn loose_eq_compares_numbers_by_value_deeply() {
        assert!(loose_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!loose_eq(&json!([1]), &json!([1, 2])));
        assert!(!loose_eq(&json!("1"), &json!(1)));
    }

    #[test]
    fn range_cmp_rejects_mixed_types() {
        assert_eq!(range_cmp(&json!("a"), &json!(1)), None);
        assert_eq!(range_cmp(&json!(null), &json!(null)), None);
        assert_eq!(range_cmp(&json!(false), &json!(true)), Some(Ordering::Less));
        assert_eq!(range_cmp(&json!("B"), &json!("a")), Some(Ordering::Less));
    }

    #[test]
    fn total_order_ranks_types() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-3),
            json!(2.5),
            json!(7),
            json!(""),
            json!("a"),
            json!([]),
            json!([1]),
            json!({}),
            json!({"a": 1}),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(total_cmp(Some(a), Some(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(total_cmp(None, Some(&json!(null))), Ordering::Equal);
    }

    #[test]
    fn paths_reach_nested_fields_array_items_and_the_key() {
        let doc = json!({"address": {"city": "Oslo"}, "tags": ["x", "y"]});
        let get = |p: &str| Path::parse(p).resolve("k1", &doc).map(Cow::into_owned);
        assert_eq!(get("address.city"), Some(json!("Oslo")));
        assert_eq!(get("tags.1"), Some(json!("y")));
        assert_eq!(get("tags.9"), None);
        assert_eq!(get("address.city.x"), None);
        assert_eq!(get("_key"), Some(json!("k1")));
        assert_eq!(get("missing"), None);
    }
}
