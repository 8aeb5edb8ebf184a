//! Lenient number deserialisation for wire fields.
//!
//! JavaScript peers encode integers above 2^32 (and sometimes any integer) as
//! float64. Wherever the protocol expects an integer we accept a whole,
//! non-negative float that fits the target type, and reject anything else
//! with an error instead of truncating.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer (or a whole float)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        whole_u64(v).ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<u64, E> {
        self.visit_f64(f64::from(v))
    }
}

/// The `u64` a float stands for, if it is whole, non-negative and below
/// 2^64; `None` for a fraction, a negative, an infinity or NaN.
pub(crate) fn whole_u64(v: f64) -> Option<u64> {
    // 2^64 as f64; every whole float below it converts exactly.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < LIMIT {
        // Whole, in range: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(v as u64)
    } else {
        None
    }
}

/// Deserialises a `u64` from any integer or whole float.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// Deserialises a `u32` from any integer or whole float that fits.
pub(crate) fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = d.deserialize_any(U64Visitor)?;
    u32::try_from(v).map_err(|_| de::Error::invalid_value(de::Unexpected::Unsigned(v), &"a u32"))
}

/// Deserialises an optional `u64` (absent or nil → `None`).
pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("nil or a non-negative integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            u64(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}
