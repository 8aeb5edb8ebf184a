//! Sync for TopGun: the connectivity state machine and sync engine
//! ([`SyncEngine`], sans-I/O: inputs in, outputs out), the one driver loop
//! that runs it ([`SyncDriver`]) over a small platform seam ([`Runtime`],
//! [`Connection`]) and the client's local data ([`Replica`]), and the
//! native runtime ([`TokioRuntime`], feature `native-transport`).
//!
//! The engine implements TopGun's protocol (`OP_BATCH`/`OP_ACK` push,
//! `SYNC_INIT`/`MERKLE_REQ_BUCKET` Merkle pull, `SERVER_EVENT` realtime,
//! `AUTH`, `PING`/`PONG`); [`ops`] maps op-log entries to wire ops. This
//! crate depends on `topgun-core` and `topgun-storage`; it must not depend
//! on the client or the server.
#![warn(missing_docs)]

pub mod backoff;
#[cfg(all(feature = "browser-transport", target_family = "wasm"))]
mod browser;
mod coalesce;
mod driver;
pub mod engine;
mod handle;
pub mod ops;
mod replica;
pub mod runtime;
mod state;
mod status;
#[cfg(all(feature = "native-transport", not(target_family = "wasm")))]
pub mod transport;

#[cfg(all(feature = "browser-transport", target_family = "wasm"))]
pub use browser::{js_message, BrowserRuntime};
pub use coalesce::coalesce;
pub use driver::{DriverSettings, SyncDriver};
pub use engine::{
    subscription_id, Input, Output, PendingOp, SyncConfig, SyncEngine, SyncEvent, TimerKind,
};
pub use handle::{SyncHandle, SyncNotifier};
pub use replica::{Applied, Replica, ReplicaError};
pub use runtime::{BoxFuture, Connection, Frame, MaybeSend, MaybeSync, Runtime, TokenProvider};
pub use state::ConnectionState;
pub use status::{SyncStatus, TrafficSnapshot};
#[cfg(all(feature = "native-transport", not(target_family = "wasm")))]
pub use transport::TokioRuntime;
