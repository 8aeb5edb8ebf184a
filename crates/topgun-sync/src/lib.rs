//! Sync for TopGun: the connectivity state machine and sync engine
//! ([`SyncEngine`], sans-I/O: inputs in, outputs out) and the native
//! WebSocket transport ([`transport::WsConnection`], feature
//! `native-transport`).
//!
//! The engine implements TopGun's protocol (`OP_BATCH`/`OP_ACK` push,
//! `SYNC_INIT`/`MERKLE_REQ_BUCKET` Merkle pull, `SERVER_EVENT` realtime,
//! `AUTH`, `PING`/`PONG`); the client's sync manager drives it with real
//! sockets, timers and storage. This crate depends on `topgun-core` only;
//! it must not depend on storage, the client or the server.
#![warn(missing_docs)]

pub mod backoff;
pub mod engine;
mod state;
#[cfg(all(feature = "native-transport", not(target_family = "wasm")))]
pub mod transport;

pub use engine::{
    subscription_id, Input, Output, PendingOp, SyncConfig, SyncEngine, SyncEvent, TimerKind,
};
pub use state::ConnectionState;
