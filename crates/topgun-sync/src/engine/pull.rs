//! Pull: the Merkle walk that brings a map's server state down.

use std::collections::{BTreeSet, VecDeque};

/// Where one map's pull is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum PullPhase {
    /// Not started on this connection.
    #[default]
    Idle,
    /// `SYNC_INIT` sent, waiting for `SYNC_RESP_ROOT`.
    AwaitRoot,
    /// Walking the tree down to the differing leaves.
    Walking(Walk),
    /// The map matches the server (or every differing leaf was merged).
    Done,
}

/// The bucket requests of one map's walk. At most
/// [`SyncConfig::pull_requests_in_flight`](super::SyncConfig) are sent and
/// unanswered at a time; the others wait in `queued`, so a server never
/// has more answers to buffer for us than that (TopGun-style servers drop
/// a connection whose outgoing queue overflows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Walk {
    /// Paths to walk and not yet answered: sent, or queued.
    pub(crate) waiting: BTreeSet<String>,
    /// Paths of `waiting` not yet sent, in the order found.
    pub(crate) queued: VecDeque<String>,
}

impl Walk {
    /// Requests sent and not yet answered. (A queued path answered
    /// early — a stray answer — left `waiting` already; it is skipped when
    /// its turn comes, and meanwhile makes this undercount, never panic.)
    pub(crate) fn in_flight(&self) -> usize {
        self.waiting.len().saturating_sub(self.queued.len())
    }
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
