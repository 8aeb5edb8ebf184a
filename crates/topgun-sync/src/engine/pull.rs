//! Pull: the Merkle walk that brings a map's server state down.

use std::collections::BTreeSet;

/// Where one map's pull is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum PullPhase {
    /// Not started on this connection.
    #[default]
    Idle,
    /// `SYNC_INIT` sent, waiting for `SYNC_RESP_ROOT`.
    AwaitRoot,
    /// Walking: the bucket paths asked for and not yet answered.
    Walking(BTreeSet<String>),
    /// The map matches the server (or every differing leaf was merged).
    Done,
}

impl PullPhase {
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, PullPhase::Done)
    }
}

/// Whether `c` is a single lower-case hex digit (a bucket name).
pub(crate) fn is_bucket_name(c: &str) -> bool {
    c.len() == 1
        && c.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
