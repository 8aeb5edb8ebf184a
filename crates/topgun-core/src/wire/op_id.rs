//! Operation ids: opaque tokens a client attaches to its writes and a
//! server echoes back in acks and rejections.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

/// The id of a client operation (`ClientOp.id`, `OP_ACK.lastId`,
/// `opId`), echoed back in the form it arrived in.
///
/// TopGun's TypeScript client sends decimal strings (`"1"`, `"2"`, …),
/// other clients send strings like `"batch-3"` or plain integers. A whole
/// float (how JavaScript may encode a number) decodes as
/// [`OpId::Number`] and is written back as an integer; a fraction or a
/// negative number is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpId {
    /// A string id, compared and echoed verbatim.
    Text(String),
    /// An integer id.
    Number(u64),
}

impl OpId {
    /// The id as a number if it is one, or is a string of decimal digits
    /// that fits a `u64`: what TopGun's client compares when it treats
    /// `lastId` as a high-water mark. `None` otherwise.
    pub fn as_number(&self) -> Option<u64> {
        match self {
            OpId::Number(n) => Some(*n),
            OpId::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            OpId::Text(_) => None,
        }
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpId::Text(s) => f.write_str(s),
            OpId::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<u64> for OpId {
    fn from(n: u64) -> Self {
        OpId::Number(n)
    }
}

impl From<String> for OpId {
    fn from(s: String) -> Self {
        OpId::Text(s)
    }
}

impl From<&str> for OpId {
    fn from(s: &str) -> Self {
        OpId::Text(s.to_owned())
    }
}

impl Serialize for OpId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OpId::Text(t) => s.serialize_str(t),
            OpId::Number(n) => s.serialize_u64(*n),
        }
    }
}

struct OpIdVisitor;

impl Visitor<'_> for OpIdVisitor {
    type Value = OpId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a non-negative integer op id")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OpId, E> {
        Ok(OpId::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<OpId, E> {
        Ok(OpId::Text(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OpId, E> {
        Ok(OpId::Number(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OpId, E> {
        u64::try_from(v)
            .map(OpId::Number)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OpId, E> {
        crate::flex::whole_u64(v)
            .map(OpId::Number)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<OpId, E> {
        self.visit_f64(f64::from(v))
    }
}

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OpIdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_reading_follows_the_ts_client() {
        assert_eq!(OpId::from("17").as_number(), Some(17));
        assert_eq!(OpId::from(17).as_number(), Some(17));
        assert_eq!(OpId::from("batch-3").as_number(), None);
        assert_eq!(OpId::from("").as_number(), None);
        assert_eq!(OpId::from("+1").as_number(), None);
        assert_eq!(OpId::from("99999999999999999999").as_number(), None);
    }

    #[test]
    fn decodes_strings_integers_and_whole_floats_only() {
        let de = |v: rmpv::Value| rmpv::ext::from_value::<OpId>(v);
        assert_eq!(de("a".into()).unwrap(), OpId::from("a"));
        assert_eq!(de(7.into()).unwrap(), OpId::Number(7));
        assert_eq!(de(rmpv::Value::F64(7.0)).unwrap(), OpId::Number(7));
        assert!(de(rmpv::Value::F64(7.5)).is_err());
        assert!(de((-1).into()).is_err());
        assert!(de(rmpv::Value::Nil).is_err());
    }
}
