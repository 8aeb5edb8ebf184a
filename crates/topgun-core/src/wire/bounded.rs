//! Reading a generic [`Value`] through serde with a bound on nesting.
//!
//! `rmpv::Value`'s own `Deserialize` recurses once per level; rmp-serde
//! stops at 1024 levels, which is already more stack than a debug build's
//! 2 MiB test thread has. The [`Message`](super::Message) `Deserialize`
//! impl reads through [`BoundedValue`] instead, so a hostile document fails
//! with an error whatever deserialiser it comes from.

use rmpv::Value;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A seed producing a [`Value`] that nests at most `levels` maps/arrays.
#[derive(Debug, Clone, Copy)]
pub(super) struct BoundedValue {
    /// Maps/arrays still allowed, this value's own included.
    pub(super) levels: usize,
}

impl BoundedValue {
    fn inner(self) -> Result<Self, String> {
        match self.levels.checked_sub(1) {
            Some(levels) => Ok(Self { levels }),
            None => Err("nesting exceeds the depth limit".to_owned()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for BoundedValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Value, E> {
        Ok(Value::F32(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Binary(v.to_owned()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Binary(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner().map_err(de::Error::custom)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner().map_err(de::Error::custom)?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(inner)? {
            let value = map.next_value_seed(inner)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }

    /// rmp-serde hands a MessagePack extension over as a newtype struct
    /// holding `(tag, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_tuple(2, ExtVisitor)
    }
}

struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack extension (tag, bytes)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        // The payload is a leaf (bytes), so no nesting is allowed inside.
        match seq.next_element_seed(BoundedValue { levels: 0 })? {
            Some(Value::Binary(bytes)) => Ok(Value::Ext(tag, bytes)),
            Some(_) => Err(de::Error::custom("extension payload is not bytes")),
            None => Err(de::Error::invalid_length(1, &self)),
        }
    }
}
