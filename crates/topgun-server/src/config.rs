//! Server configuration: where data lives, who may connect, who may read
//! and write which map, and the limits that keep one client from hurting
//! the others.

use crate::error::ServerError;
use crate::rules::AccessRules;
use std::fmt;
#[cfg(feature = "redb")]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use topgun_storage::Store;

/// The environment variable [`AuthMode::jwt_from_env`] reads the JWT
/// secret from.
pub const JWT_SECRET_ENV: &str = "TOPGUN_JWT_SECRET";

/// Everything [`crate::run`] needs besides the listener and the shutdown
/// signal. Build it with [`ServerConfig::new`] and set the public fields.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where records are stored.
    pub store: StoreConfig,
    /// Whether clients must authenticate, and how.
    pub auth: AuthMode,
    /// Per-map read and write rules (ignored when auth is disabled).
    pub rules: AccessRules,
    /// Frame, rate, queue and time limits.
    pub limits: Limits,
    /// The node id of the server's hybrid logical clock (it stamps
    /// `SYNC_RESP_ROOT.timestamp`; client writes keep their own
    /// timestamps). Must be non-empty and must not contain `:`.
    pub node_id: String,
    /// How far ahead of the server's wall clock a client timestamp may lie,
    /// in ms; ops beyond it get `OP_REJECTED` and are not applied.
    pub max_drift_ms: u64,
    /// A directory of static files served over HTTP at every path other
    /// than `/ws` and `/health` (a web app next to its sync server);
    /// `None` serves none.
    pub web_root: Option<PathBuf>,
    /// Commit lanes of a new data directory (`StoreConfig::DataDir`): the
    /// keys are spread over this many redb files (0 counts as 1), each
    /// committed by its own writer thread, so writes use more cores. A
    /// data directory keeps the number it was made with (see
    /// `store::data_dir_lanes`). Other stores ignore it.
    pub lanes: usize,
    /// Told once the server has opened its store and built its Merkle
    /// trees, just before it serves (what `topgun serve` waits for before
    /// it prints its listening line); `None` tells nobody.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ServerConfig {
    /// A configuration with the given store, auth disabled, no access
    /// rules, default [`Limits`], node id `topgun-server` and 60 s max
    /// drift.
    pub fn new(store: StoreConfig) -> Self {
        Self {
            store,
            auth: AuthMode::Disabled,
            rules: AccessRules::allow_all(),
            limits: Limits::default(),
            node_id: "topgun-server".to_owned(),
            max_drift_ms: topgun_core::hlc::DEFAULT_MAX_DRIFT_MS,
            web_root: None,
            lanes: default_lanes(),
            ready: None,
        }
    }
}

/// The default [`ServerConfig::lanes`]: one per two cores this process may
/// run on (a lane's writer thread beside the workers that decode, ack and
/// fan out), at least one, at most [`MAX_DEFAULT_LANES`].
pub(crate) fn default_lanes() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / 2).clamp(1, MAX_DEFAULT_LANES)
}

/// The most lanes [`default_lanes`] picks.
const MAX_DEFAULT_LANES: usize = 4;

/// Where the server keeps its records.
#[non_exhaustive]
pub enum StoreConfig {
    /// redb files in this directory (created if missing): `topgun.redb`,
    /// and `topgun-1.redb`, … for more commit lanes ([`ServerConfig::lanes`]),
    /// with a file `lanes` that says how many.
    /// The file is opened when the server starts and closed when it stops.
    #[cfg(feature = "redb")]
    DataDir(PathBuf),
    /// A store the caller opened (e.g. a `MemoryStore` in tests). The
    /// caller closes it after [`crate::run`] returns.
    Store(Arc<dyn Store>),
    /// A PostgreSQL database that several server nodes may share (feature
    /// `postgres`); see [`crate::store::PostgresStore`].
    #[cfg(feature = "postgres")]
    Postgres(crate::store::PostgresOptions),
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "redb")]
            StoreConfig::DataDir(dir) => f.debug_tuple("DataDir").field(dir).finish(),
            StoreConfig::Store(store) => f.debug_tuple("Store").field(store).finish(),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(options) => f.debug_tuple("Postgres").field(options).finish(),
        }
    }
}

/// Whether clients must authenticate.
#[derive(Clone)]
#[non_exhaustive]
pub enum AuthMode {
    /// Development mode (`--no-auth`): no `AUTH_REQUIRED`, every client may
    /// read and write every map, access rules are ignored.
    Disabled,
    /// Clients must send `AUTH {token}` with a JWT signed with HS256 by this
    /// secret; `sub` is the user id and an optional `roles` claim (a list
    /// of strings) the user's roles. `exp` is checked when present.
    Jwt {
        /// The HMAC secret.
        secret: Vec<u8>,
    },
}

impl AuthMode {
    /// JWT auth with the secret from the `TOPGUN_JWT_SECRET` environment
    /// variable.
    ///
    /// # Errors
    /// [`ServerError::MissingJwtSecret`] if the variable is unset or empty.
    pub fn jwt_from_env() -> Result<Self, ServerError> {
        match std::env::var(JWT_SECRET_ENV) {
            Ok(secret) if !secret.is_empty() => Ok(AuthMode::Jwt {
                secret: secret.into_bytes(),
            }),
            _ => Err(ServerError::MissingJwtSecret),
        }
    }
}

impl fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthMode::Disabled => f.write_str("Disabled"),
            AuthMode::Jwt { .. } => f.write_str("Jwt { secret: <redacted> }"),
        }
    }
}

/// Limits per connection. Each has a clear answer on the wire when it is
/// hit; none of them stalls other clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Longest frame decoded, in bytes (default 2 MiB, as TopGun). A longer
    /// frame (up to `max_message_len`) is answered with `ERROR 413` and
    /// dropped; the connection stays open.
    pub max_frame_len: usize,
    /// Longest WebSocket message read at all (default 16 MiB). A longer one
    /// closes the connection (close code 1009) at the WebSocket layer,
    /// before it is buffered.
    pub max_message_len: usize,
    /// Sustained ops per second per connection (default 250 000, above
    /// what one client pushes). Each op of an `OP_BATCH`/`CLIENT_OP` costs
    /// one token, every other frame one. A frame that finds too few tokens
    /// is handled, and then the connection reads nothing until the bucket
    /// has refilled, so TCP slows the client down; no frame is lost and
    /// none needs resending. A pause lasts the frame's ops (and any debt)
    /// divided by the rate: keep the rate high enough that a client's
    /// largest batch takes well under its ping timeout (15 s for TopGun's
    /// clients and ours).
    pub ops_per_second: u32,
    /// Token bucket size: the burst allowed above the rate (default
    /// 500 000).
    pub ops_burst: u32,
    /// A connection without any incoming frame for this long is closed
    /// (default 60 s; TopGun's client pings every 5 s).
    pub idle_timeout: Duration,
    /// Items waiting to be written to one client (default 1024): a frame,
    /// or the events or query updates of one commit. A client whose queue
    /// is full is disconnected (close code 1008, "slow consumer") instead
    /// of slowing down the server.
    pub outbox_capacity: usize,
    /// Most entries in one `QUERY_RESP` (default 1000); `hasMore` tells the
    /// client there were more.
    pub max_query_results: usize,
    /// How long a graceful shutdown waits for connections to finish their
    /// in-flight batches and close (default 10 s).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: topgun_core::wire::DEFAULT_MAX_FRAME_LEN,
            max_message_len: 16 * 1024 * 1024,
            ops_per_second: 250_000,
            ops_burst: 500_000,
            idle_timeout: Duration::from_secs(60),
            outbox_capacity: 1024,
            max_query_results: 1000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
