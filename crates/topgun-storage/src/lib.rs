//! Storage for TopGun: the [`Store`] trait every backend implements, the
//! records it keeps, and the backends — [`MemoryStore`] (always built),
//! `RedbStore` (feature `redb`, native only) and `IndexedDbStore`
//! (feature `indexeddb`, wasm32 only).
//!
//! A store holds three things, as in TopGun's client:
//! - **records** (`key_value_store`): the current [`StoreRecord`] of every
//!   `(map, key)`, tombstones included, with a `dirty` flag while a local
//!   write is not yet acknowledged by a server;
//! - the **operation log** (`operation_log`): every local write as an
//!   [`OpLogEntry`] with an increasing id, until it is synced;
//! - **meta** (`meta_store`): small key → value settings such as sync
//!   checkpoints, the node id and the schema version.
//!
//! Values are opaque bytes here (the client encodes them with MessagePack);
//! the store never interprets them. This crate depends only on
//! `topgun-core`; it must not depend on sync, client or server crates.
//!
//! Features:
//! - `redb`: `RedbStore`, a durable single-file store with group commit
//!   (native targets only; enabling it on wasm is a compile error);
//! - `indexeddb`: `IndexedDbStore`, the store in the browser's IndexedDB
//!   (wasm32 only; enabling it on a native target is a compile error);
//! - `testing`: `conformance`, the test suite every [`Store`] must pass,
//!   with a macro that instantiates it for a backend; `hooked`, a store
//!   wrapper that runs a test's hook around every call.
#![warn(missing_docs)]

#[cfg(all(feature = "indexeddb", not(target_family = "wasm")))]
compile_error!(
    "feature `indexeddb` needs the wasm32 target (a browser); \
     on native targets use RedbStore (feature `redb`)"
);

#[cfg(all(feature = "redb", target_family = "wasm"))]
compile_error!(
    "feature `redb` needs a native target (threads and files); \
     on wasm use MemoryStore"
);

mod cursor;
mod error;
mod memory;
mod model;
mod paged;
mod store;
mod validate;

#[cfg(all(feature = "redb", not(target_family = "wasm")))]
mod redb;

#[cfg(all(feature = "indexeddb", target_family = "wasm"))]
mod indexeddb;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod hooked;

pub use cursor::ScanCursor;
pub use error::StorageError;
pub use memory::MemoryStore;
#[cfg(all(feature = "redb", not(target_family = "wasm")))]
pub use redb::{Durability, RedbStore, RedbStoreBuilder, SUPPORTED_SCHEMA_VERSION};

#[cfg(all(feature = "indexeddb", target_family = "wasm"))]
pub use indexeddb::{IndexedDbStore, DEFAULT_DATABASE_NAME, INDEXEDDB_SCHEMA_VERSION};

pub use model::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, OpType, PruneSums,
    StoreRecord, StoreStats,
};
pub use paged::Paged;
pub use store::Store;

/// `Send + Sync` on native targets; nothing on wasm, where IndexedDB
/// handles are neither.
#[cfg(not(target_family = "wasm"))]
pub trait SendSync: Send + Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + Sync + ?Sized> SendSync for T {}
/// `Send + Sync` on native targets; nothing on wasm, where IndexedDB
/// handles are neither.
#[cfg(target_family = "wasm")]
pub trait SendSync {}
#[cfg(target_family = "wasm")]
impl<T: ?Sized> SendSync for T {}
