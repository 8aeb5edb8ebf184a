//! The small string enumerations of the protocol (op types, write
//! concerns, change types, …).
//!
//! Each keeps a value it does not know in an `Other` variant instead of
//! failing the whole frame, so that a peer speaking a newer protocol can be
//! answered (for instance with `OP_REJECTED`) rather than dropped.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        ///
        /// Converting from a string maps a known spelling to its variant and
        /// anything else to `Other`; serialising writes the spelling back.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = concat!("`\"", $text, "\"`")] $variant, )+
            /// A value this version does not know, kept verbatim. Build
            /// values with `From<&str>`, which never yields `Other` for a
            /// known spelling.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $( $text => $name::$variant, )+
                    _ => $name::Other(s),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

wire_enum! {
    /// The kind of a write: `ClientOp.opType` and `SERVER_EVENT.eventType`.
    OpType {
        /// Set a key's value.
        Put = "PUT",
        /// Remove a key (the record is a tombstone).
        Remove = "REMOVE",
        /// Add to an observed-remove map (not supported by this project).
        OrAdd = "OR_ADD",
        /// Remove from an observed-remove map (not supported by this project).
        OrRemove = "OR_REMOVE",
    }
}

wire_enum! {
    /// When a write counts as acknowledged: `writeConcern` of an op or
    /// batch, and `achievedLevel` of an ack.
    WriteConcern {
        /// No acknowledgement wanted.
        FireAndForget = "FIRE_AND_FORGET",
        /// Applied in the server's memory.
        Memory = "MEMORY",
        /// Applied (TopGun's default ack level).
        Applied = "APPLIED",
        /// Replicated to other server nodes.
        Replicated = "REPLICATED",
        /// Persisted to durable storage.
        Persisted = "PERSISTED",
    }
}

wire_enum! {
    /// How a key's membership in a live query changed (`QUERY_UPDATE.changeType`).
    ChangeType {
        /// The key now matches the query.
        Enter = "ENTER",
        /// The key still matches; its value changed.
        Update = "UPDATE",
        /// The key no longer matches.
        Leave = "LEAVE",
    }
}

wire_enum! {
    /// Sort order of one query field.
    SortDirection {
        /// Ascending.
        Asc = "asc",
        /// Descending.
        Desc = "desc",
    }
}

wire_enum! {
    /// State of the pagination cursor a query was sent with (`QUERY_RESP.cursorStatus`).
    CursorStatus {
        /// The cursor was used.
        Valid = "valid",
        /// The cursor had expired; results start from the beginning.
        Expired = "expired",
        /// The cursor could not be read.
        Invalid = "invalid",
        /// No cursor was sent.
        NoCursor = "none",
    }
}

wire_enum! {
    /// The operator of a query predicate node (`predicate.op`). The
    /// `topgun-query` crate defines what each one matches.
    PredicateOp {
        /// Equal.
        Eq = "eq",
        /// Not equal.
        Neq = "neq",
        /// Greater than.
        Gt = "gt",
        /// Greater than or equal.
        Gte = "gte",
        /// Less than.
        Lt = "lt",
        /// Less than or equal.
        Lte = "lte",
        /// SQL `LIKE` pattern (`%`, `_`).
        Like = "like",
        /// Regular expression.
        Regex = "regex",
        /// Equal to one element of an array.
        In = "in",
        /// Within `[lo, hi]`, inclusive.
        Between = "between",
        /// Missing or null.
        IsNull = "isNull",
        /// Present and not null.
        IsNotNull = "isNotNull",
        /// String contains a substring, or array contains an element.
        Contains = "contains",
        /// Contains every element of an array.
        ContainsAll = "containsAll",
        /// Contains at least one element of an array.
        ContainsAny = "containsAny",
        /// String starts with a prefix.
        StartsWith = "startsWith",
        /// String ends with a suffix.
        EndsWith = "endsWith",
        /// All children hold.
        And = "and",
        /// At least one child holds.
        Or = "or",
        /// The single child does not hold.
        Not = "not",
    }
}

wire_enum! {
    /// The function of a `groupBy` aggregation (`aggregations[].func`).
    AggFunc {
        /// Rows in the group.
        Count = "count",
        /// Sum of a numeric field.
        Sum = "sum",
        /// Smallest numeric value of a field.
        Min = "min",
        /// Largest numeric value of a field.
        Max = "max",
        /// Mean of a field's numeric values.
        Avg = "avg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_spellings_round_trip() {
        assert_eq!(OpType::from("REMOVE"), OpType::Remove);
        assert_eq!(OpType::from("PUT".to_owned()), OpType::Put);
        assert_eq!(
            OpType::from("COUNTER_INC"),
            OpType::Other("COUNTER_INC".into())
        );
        assert_eq!(OpType::Other("X".into()).as_str(), "X");
        assert_eq!(CursorStatus::NoCursor.to_string(), "none");
        let v = rmpv::ext::to_value(WriteConcern::Applied).unwrap();
        assert_eq!(v, rmpv::Value::from("APPLIED"));
        let back: WriteConcern = rmpv::ext::from_value(v).unwrap();
        assert_eq!(back, WriteConcern::Applied);
        assert!(rmpv::ext::from_value::<ChangeType>(rmpv::Value::from(3)).is_err());
    }
}
