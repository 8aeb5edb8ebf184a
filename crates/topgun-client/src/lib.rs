//! TopGun for Rust: the local-first client.
//!
//! [`TopGunClient`] is the facade applications use. [`IMap`]s answer
//! `put`, `get`, `remove`, `clear`, `entries` and queries from local storage
//! at once, online or not. Every mutation is stamped with a hybrid logical
//! clock and stored together with its operation-log entry in one atomic
//! write; a bounded LRU working set keeps hot records in RAM in front of the
//! store. Storage backends are chosen by cargo feature (`redb` for a durable
//! file, which several processes can share through
//! [`TopGunClientBuilder::shared_dir`]; `indexeddb` for the browser build
//! on wasm32, with the browser's WebSocket; an in-memory store always).
//!
//! This crate depends on `topgun-core`, `topgun-storage` and `topgun-sync`;
//! it must not depend on the server (its tests use one).
#![warn(missing_docs)]

mod builder;
mod client;
mod complete;
mod error;
pub mod events;
mod hub;
mod keep;
mod keylock;
mod live;
mod live_query;
mod local;
mod map;
pub use topgun_query as query;
mod quota;
mod role;
#[cfg(all(feature = "redb", unix))]
pub mod shared_dir;
#[cfg(all(feature = "indexeddb", target_family = "wasm"))]
mod tabs;
mod working_set;

pub use builder::TopGunClientBuilder;
#[cfg(all(feature = "redb", not(target_family = "wasm")))]
pub use builder::DEFAULT_REDB_CACHE_BYTES;
pub use client::{StoreReader, TopGunClient};
pub use error::ClientError;
pub use events::{MapEvent, Origin, Subscription};
pub use live_query::{LiveChange, LiveQueryError, LiveQueryHandle, QueryPage};
pub use map::{EntryStream, IMap, SyncState};
pub use quota::ClientEvent;
pub use role::Role;
pub use topgun_sync::TrafficSnapshot;
pub use topgun_sync::{BoxFuture, ConnectionState, Runtime, SyncConfig, SyncEvent, TokenProvider};
pub use working_set::{WorkingSetLimits, WorkingSetStats};
#[cfg(all(feature = "indexeddb", target_family = "wasm"))]
pub use {topgun_storage::IndexedDbStore, topgun_sync::BrowserRuntime};

/// Largest accepted value, encoded, in bytes (1 MiB): every write must fit
/// one sync frame (TopGun servers cap frames at 2 MiB).
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Name of the redb file in a data directory given to
/// [`TopGunClientBuilder::shared_dir`].
pub const DATA_FILE: &str = "topgun.redb";

/// Longest accepted map name or key, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
