//! The TopGun sync server: keeps maps of last-writer-wins records durably
//! and syncs them with any client that speaks TopGun's wire protocol —
//! this project's client and TopGun's own TypeScript client alike.
//!
//! - **Transport**: WebSocket at `/ws`, one MessagePack message per binary
//!   frame; `GET /health` answers 200 with a small JSON body.
//! - **Writes** (`OP_BATCH`, `CLIENT_OP`) keep the client's HLC timestamps
//!   (never re-stamped) and merge by LWW; each batch is applied durably
//!   (in one transaction per commit lane of the store) before its
//!   `OP_ACK`, whose `lastId` echoes the client's id of the batch's last
//!   op. Removes are stored as tombstones.
//! - **Delta sync**: an in-memory Merkle tree per map (built from the store
//!   at startup) answers `SYNC_INIT` and `MERKLE_REQ_BUCKET`; leaves carry
//!   tombstones.
//! - **Realtime**: a `QUERY_SUB` subscribes a connection to its map; every
//!   committed change reaches the other subscribers as `SERVER_EVENT`s
//!   (coalesced into `SERVER_BATCH_EVENT`s) and `QUERY_UPDATE`s.
//! - **Queries**: `QUERY_SUB` is answered by `topgun-query`, the engine the
//!   client runs locally: predicates, `where`, `sort`, `limit`, `cursor`,
//!   `fields` projection and `groupBy` with aggregations; its live
//!   ENTER / UPDATE / LEAVE follow writes and TTL expiries.
//! - **Auth and limits**: JWT (HS256) auth with per-map rules
//!   ([`AccessRules`]), and per-connection [`Limits`] that are answered on
//!   the wire (413, 400, 501) or end only the offending connection; the
//!   op rate is flow control (a connection over it is read more slowly,
//!   never refused).
//!
//! A server on an in-memory store until Ctrl-C or SIGTERM (a real one
//! uses `StoreConfig::DataDir`, redb files, with feature `redb`):
//!
//! ```no_run
//! # async fn example() -> Result<(), topgun_server::ServerError> {
//! use std::sync::Arc;
//! use topgun_server::{run, shutdown_signal, AuthMode, ServerConfig, StoreConfig};
//! use topgun_storage::MemoryStore;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.expect("bind");
//! let mut config = ServerConfig::new(StoreConfig::Store(Arc::new(MemoryStore::new())));
//! config.auth = AuthMode::jwt_from_env()?; // TOPGUN_JWT_SECRET
//! run(listener, config, shutdown_signal()).await
//! # }
//! ```
//!
//! This crate depends on `topgun-core` and `topgun-storage` only; it must
//! not depend on the client crate.
#![warn(missing_docs)]

mod auth;
mod commit;
mod config;
mod connection;
mod error;
mod fanout;
mod follow;
mod handler;
mod limits;
mod merkle_index;
mod query;
mod records;
mod rules;
mod server;
mod shared;
pub mod store;

pub use auth::Principal;
pub use config::{AuthMode, Limits, ServerConfig, StoreConfig, JWT_SECRET_ENV};
pub use error::ServerError;
pub use rules::AccessRules;
pub use server::{run, shutdown_signal};
pub use store::DATA_FILE_NAME;
