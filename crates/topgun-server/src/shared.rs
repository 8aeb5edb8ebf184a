//! The state every connection shares.

use crate::auth::JwtVerifier;
use crate::commit::Committer;
use crate::config::Limits;
use crate::fanout::{ConnId, Hub};
use crate::merkle_index::MerkleIndex;
use crate::rules::AccessRules;
use crate::store::ServerStore;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use topgun_core::wire::Codec;
use topgun_core::Hlc;

/// What the connections of one server share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn ServerStore>,
    pub(crate) merkle: Arc<MerkleIndex>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) committer: Committer,
    /// The server's clock: folds in every accepted client timestamp
    /// (strict drift check) and stamps `SYNC_RESP_ROOT`.
    pub(crate) hlc: Hlc,
    /// `None`: auth disabled.
    pub(crate) jwt: Option<JwtVerifier>,
    pub(crate) rules: AccessRules,
    pub(crate) limits: Limits,
    pub(crate) codec: Codec,
    next_conn: AtomicU64,
    open_connections: AtomicUsize,
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // one constructor, called once
    pub(crate) fn new(
        store: Arc<dyn ServerStore>,
        merkle: Arc<MerkleIndex>,
        hub: Arc<Hub>,
        committer: Committer,
        hlc: Hlc,
        jwt: Option<JwtVerifier>,
        rules: AccessRules,
        limits: Limits,
    ) -> Self {
        let codec = Codec::new().with_max_frame_len(limits.max_frame_len);
        Self {
            store,
            merkle,
            hub,
            committer,
            hlc,
            jwt,
            rules,
            limits,
            codec,
            next_conn: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
        }
    }

    /// A new connection id; counts the connection as open.
    pub(crate) fn open_connection(&self) -> ConnId {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection as closed.
    pub(crate) fn close_connection(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}
