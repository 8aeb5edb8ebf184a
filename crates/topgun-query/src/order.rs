//! Result order and cursors.
//!
//! Rows are ordered by their sort values (each by [`total_cmp`], reversed
//! for descending keys) and then by record key ascending, so the order is
//! total and results are deterministic.
//!
//! A cursor names one row of that order: it is the lower-case hex of the
//! JSON array `[1, fingerprint, key, [sort values…]]`, where `1` is the
//! format version and `fingerprint` a 32-bit FNV-1a hash of the sort spec.
//! A query given a cursor returns only rows strictly after it; a cursor of
//! a query with a different sort is rejected. Callers should treat the
//! string as opaque.

use super::error::QueryError;
use super::value::{total_cmp, Path};
use serde_json::Value;
use std::cmp::Ordering;
use topgun_core::wire::{SortDirection, SortKey as SortField};

/// One sort value with its direction.
#[derive(Debug, Clone)]
pub(crate) struct SortValue {
    pub(crate) value: Value,
    pub(crate) desc: bool,
}

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> Ordering {
        let order = total_cmp(Some(&self.value), Some(&other.value));
        if self.desc {
            order.reverse()
        } else {
            order
        }
    }
}
impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for SortValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SortValue {}

/// A row's position in the result order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RowKey {
    pub(crate) sort: Vec<SortValue>,
    pub(crate) key: String,
}

/// The compiled `sort` of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortSpec {
    keys: Vec<(Path, bool)>,
    fingerprint: u32,
}

impl SortSpec {
    pub(crate) fn compile(fields: &[SortField]) -> Result<Self, QueryError> {
        let mut hash = Fnv::new();
        let mut keys = Vec::with_capacity(fields.len());
        for (index, field) in fields.iter().enumerate() {
            if field.field.is_empty() {
                return Err(QueryError::EmptySortField { index });
            }
            let desc = match &field.direction {
                SortDirection::Asc => false,
                SortDirection::Desc => true,
                SortDirection::Other(direction) => {
                    return Err(QueryError::UnknownSortDirection {
                        index,
                        direction: direction.clone(),
                    })
                }
            };
            hash.write(field.field.as_bytes());
            hash.write(if desc { b"\0d" } else { b"\0a" });
            keys.push((Path::parse(&field.field), desc));
        }
        Ok(Self {
            keys,
            fingerprint: hash.0,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn row_key(&self, key: &str, value: &Value) -> RowKey {
        let sort = self
            .keys
            .iter()
            .map(|(path, desc)| SortValue {
                value: path
                    .resolve(key, value)
                    .map_or(Value::Null, |v| v.into_owned()),
                desc: *desc,
            })
            .collect();
        RowKey {
            sort,
            key: key.to_owned(),
        }
    }

    pub(crate) fn encode_cursor(&self, row: &RowKey) -> String {
        let values: Vec<&Value> = row.sort.iter().map(|s| &s.value).collect();
        let json = serde_json::json!([1, self.fingerprint, row.key, values]).to_string();
        let mut out = String::with_capacity(json.len() * 2);
        for byte in json.bytes() {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    pub(crate) fn decode_cursor(&self, cursor: &str) -> Result<RowKey, QueryError> {
        let malformed = QueryError::InvalidCursor {
            reason: "not a cursor of this library",
        };
        if cursor.len() % 2 != 0 {
            return Err(malformed);
        }
        let bytes = cursor
            .as_bytes()
            .chunks(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(QueryError::InvalidCursor {
                reason: "not a cursor of this library",
            })?;
        let (version, fingerprint, key, values): (u8, u32, String, Vec<Value>) =
            serde_json::from_slice(&bytes).map_err(|_| malformed)?;
        if version != 1 {
            return Err(QueryError::InvalidCursor {
                reason: "unsupported cursor version",
            });
        }
        if fingerprint != self.fingerprint || values.len() != self.keys.len() {
            return Err(QueryError::InvalidCursor {
                reason: "cursor belongs to a query with a different sort",
            });
        }
        let sort = values
            .into_iter()
            .zip(&self.keys)
            .map(|(value, (_, desc))| SortValue { value, desc: *desc })
            .collect();
        Ok(RowKey { sort, key })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u32::from(*byte)).wrapping_mul(0x0100_0193);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(fields: &[(&str, SortDirection)]) -> SortSpec {
        let fields: Vec<SortField> = fields
            .iter()
            .map(|(f, d)| SortField {
                field: (*f).to_owned(),
                direction: d.clone(),
            })
            .collect();
        SortSpec::compile(&fields).expect("valid sort")
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_sort() {
        let by_age = spec(&[("age", SortDirection::Desc)]);
        let row = by_age.row_key("k\"1", &json!({"age": 3.5}));
        let cursor = by_age.encode_cursor(&row);
        assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(by_age.decode_cursor(&cursor).expect("decodes"), row);

        let by_age_asc = spec(&[("age", SortDirection::Asc)]);
        assert!(matches!(
            by_age_asc.decode_cursor(&cursor),
            Err(QueryError::InvalidCursor { .. })
        ));
        assert!(matches!(
            spec(&[]).decode_cursor(&cursor),
            Err(QueryError::InvalidCursor { .. })
        ));
        for bad in ["", "zz", "abc", "5b5d"] {
            assert!(by_age.decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn desc_reverses_values_but_key_breaks_ties_ascending() {
        let s = spec(&[("n", SortDirection::Desc)]);
        let a = s.row_key("a", &json!({"n": 1}));
        let b = s.row_key("b", &json!({"n": 2}));
        let c = s.row_key("c", &json!({"n": 2.0}));
        let missing = s.row_key("d", &json!({}));
        assert!(b < a && b < c && a < missing);
    }

    #[test]
    fn empty_sort_field_is_rejected() {
        let fields = [SortField {
            field: String::new(),
            direction: SortDirection::Asc,
        }];
        assert!(matches!(
            SortSpec::compile(&fields),
            Err(QueryError::EmptySortField { index: 0 })
        ));
    }
}
