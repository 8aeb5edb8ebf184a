//! Last-writer-wins records and their merge rule.
//!
//! A [`LwwRecord`] is a value (or a tombstone, `value: None`) stamped with
//! the [`Timestamp`] of the write that produced it, and an optional
//! time-to-live. Merging two records keeps the one with the greater
//! timestamp; on equal timestamps the local record stays. Because
//! timestamps are totally ordered and unique per write, merge is
//! commutative, associative and idempotent, so replicas that see the same
//! writes in any order end equal.

use crate::hlc::Timestamp;
use serde::{Deserialize, Serialize};

/// A value with the timestamp of its last write. `value: None` is a
/// tombstone: the key was removed at `timestamp`.
///
/// On the wire: `{value, timestamp, ttlMs?}` with `value: null` for a
/// tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LwwRecord<V> {
    /// The value, or `None` for a tombstone.
    #[serde(default = "none")]
    pub value: Option<V>,
    /// When the value was written.
    pub timestamp: Timestamp,
    /// Time to live in milliseconds after `timestamp.millis`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::flex::opt_u64"
    )]
    pub ttl_ms: Option<u64>,
}

fn none<V>() -> Option<V> {
    None
}

impl<V> LwwRecord<V> {
    /// A live record.
    pub fn new(value: V, timestamp: Timestamp) -> Self {
        Self {
            value: Some(value),
            timestamp,
            ttl_ms: None,
        }
    }

    /// A tombstone: the key was removed at `timestamp`.
    pub fn tombstone(timestamp: Timestamp) -> Self {
        Self {
            value: None,
            timestamp,
            ttl_ms: None,
        }
    }

    /// Sets a time to live.
    #[must_use]
    pub fn with_ttl(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    /// Whether this record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether the record's TTL has run out at wall time `now_millis`:
    /// `millis + ttl < now`. A record without TTL never expires.
    pub fn is_expired(&self, now_millis: u64) -> bool {
        expired(&self.timestamp, self.ttl_ms, now_millis)
    }

    /// The value as a reader sees it at `now_millis`: `None` for a
    /// tombstone or an expired record.
    pub fn value_at(&self, now_millis: u64) -> Option<&V> {
        if self.is_expired(now_millis) {
            None
        } else {
            self.value.as_ref()
        }
    }

    /// Whether `self`, arriving from elsewhere, replaces `current`: only if
    /// its timestamp is strictly greater.
    pub fn wins_over(&self, current: &LwwRecord<V>) -> bool {
        self.timestamp > current.timestamp
    }

    /// Merges `remote` into `self` by the LWW rule. Returns `true` if
    /// `remote` replaced the local record.
    pub fn merge(&mut self, remote: LwwRecord<V>) -> bool {
        if remote.wins_over(self) {
            *self = remote;
            true
        } else {
            false
        }
    }
}

/// TopGun's TTL rule, for any record shape: written at `timestamp` with
/// `ttl_ms`, it reads as absent once `millis + ttl < now`. Without a TTL it
/// never expires.
pub fn expired(timestamp: &Timestamp, ttl_ms: Option<u64>, now_millis: u64) -> bool {
    ttl_ms.is_some_and(|ttl| timestamp.millis.saturating_add(ttl) < now_millis)
}

/// The LWW merge of two optional records (`None`: the key was never
/// seen): the one with the greater timestamp, `a` on a tie.
pub fn merge_opt<V>(a: Option<LwwRecord<V>>, b: Option<LwwRecord<V>>) -> Option<LwwRecord<V>> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(if b.wins_over(&a) { b } else { a }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
        Timestamp::new(millis, counter, node)
    }

    #[test]
    fn remote_wins_only_when_strictly_greater() {
        let mut local = LwwRecord::new("a", ts(10, 0, "n1"));
        assert!(!local.merge(LwwRecord::new("b", ts(10, 0, "n1"))));
        assert_eq!(local.value, Some("a"));
        assert!(!local.merge(LwwRecord::new("b", ts(9, 9, "n9"))));
        assert!(local.merge(LwwRecord::new("c", ts(10, 0, "n2"))));
        assert_eq!(local.value, Some("c"));
        assert!(local.merge(LwwRecord::tombstone(ts(11, 0, "n1"))));
        assert!(local.is_tombstone());
    }

    #[test]
    fn ttl_expiry_reads_as_absent() {
        let r = LwwRecord::new(1, ts(1_000, 0, "n")).with_ttl(500);
        assert_eq!(r.value_at(1_500), Some(&1)); // millis + ttl == now: still live
        assert_eq!(r.value_at(1_501), None);
        assert!(r.is_expired(1_501));
        assert!(!LwwRecord::new(1, ts(0, 0, "n")).is_expired(u64::MAX));
    }

    #[test]
    fn wire_shape() {
        let live = LwwRecord::new("x".to_owned(), ts(5, 1, "n"));
        let v: rmpv::Value =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&live).unwrap()).unwrap();
        assert_eq!(
            v.as_map().unwrap().len(),
            2,
            "ttlMs omitted when absent: {v}"
        );
        let dead: LwwRecord<String> = LwwRecord::tombstone(ts(5, 1, "n")).with_ttl(7);
        let bytes = rmp_serde::to_vec_named(&dead).unwrap();
        let v: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            v["value"],
            rmpv::Value::Nil,
            "a tombstone carries value: null"
        );
        assert_eq!(v["ttlMs"], rmpv::Value::from(7));
        let back: LwwRecord<String> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, dead);
    }

    /// A record per (timestamp): one write has one value, as in reality.
    fn arb_record() -> impl Strategy<Value = (u8, LwwRecord<u32>)> {
        (
            0u8..6,
            0u64..20,
            0u32..3,
            prop::sample::select(vec!["a", "b", "c"]),
        )
            .prop_map(|(key, millis, counter, node)| {
                let tomb = (millis + u64::from(counter)) % 4 == 0;
                let t = ts(millis, counter, node);
                let value = (millis as u32) * 100 + counter * 10 + u32::from(node.as_bytes()[0]);
                let rec = if tomb {
                    LwwRecord::tombstone(t)
                } else {
                    LwwRecord::new(value, t)
                };
                (key, rec)
            })
    }

    fn apply_all(writes: &[(u8, LwwRecord<u32>)]) -> BTreeMap<u8, LwwRecord<u32>> {
        let mut map: BTreeMap<u8, LwwRecord<u32>> = BTreeMap::new();
        for (k, r) in writes {
            match map.get_mut(k) {
                Some(cur) => {
                    cur.merge(r.clone());
                }
                None => {
                    map.insert(*k, r.clone());
                }
            }
        }
        map
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(
            a in arb_record(), b in arb_record(), c in arb_record()
        ) {
            let (a, b, c) = (Some(a.1), Some(b.1), Some(c.1));
            prop_assert_eq!(merge_opt(a.clone(), b.clone()), merge_opt(b.clone(), a.clone()));
            prop_assert_eq!(
                merge_opt(merge_opt(a.clone(), b.clone()), c.clone()),
                merge_opt(a.clone(), merge_opt(b.clone(), c.clone()))
            );
            prop_assert_eq!(merge_opt(a.clone(), a.clone()), a);
        }

        #[test]
        fn any_delivery_order_gives_the_same_map(
            (writes, shuffled) in prop::collection::vec(arb_record(), 0..40)
                .prop_flat_map(|w| (Just(w.clone()), Just(w).prop_shuffle()))
        ) {
            let expected = apply_all(&writes);
            prop_assert_eq!(&apply_all(&shuffled), &expected);
            // Delivering everything twice changes nothing either.
            let mut twice = shuffled.clone();
            twice.extend(writes.iter().cloned());
            prop_assert_eq!(apply_all(&twice), expected);
        }
    }
}
