//! The storage error type.

/// Errors of a storage backend. Every variant says what went wrong and what
/// the caller can do; backend errors carry the backend's error as `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The caller passed something the store cannot accept (an empty map
    /// name or key, a `Clear` op to `write_local`, …). Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// The database file was written by a newer version of this library.
    /// Upgrade the library; the file was left untouched.
    #[error("storage schema version {found} is newer than the supported version {supported}; upgrade topgun")]
    SchemaTooNew {
        /// Version found in the file.
        found: u32,
        /// Newest version this build understands.
        supported: u32,
    },
    /// Stored bytes could not be decoded: the file is corrupt or was
    /// written by an incompatible program.
    #[error("corrupt data in {what}: {source}")]
    Corrupt {
        /// Which table or value.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record could not be encoded for storage.
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// A conditional write was refused: the stored record is already as
    /// new as the write (`current`). `Store::write_local_checked` answers
    /// this, and a store that forwards writes to another process (see
    /// `topgun-client`'s shared data directory); the writer restamps after
    /// `current` and tries again.
    #[error("the stored record (written at {current}) is newer than the write")]
    Stale {
        /// The stored record's timestamp.
        current: topgun_core::Timestamp,
    },
    /// The database file is open in another process (or elsewhere in
    /// this one), which holds its lock. Nothing was read or written.
    #[error("the database file {path} is already open in another process")]
    Locked {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The backend has no room left: the browser's storage quota for the
    /// origin is used up (`QuotaExceededError`). Nothing was written; free
    /// space (a client prunes synced records) and try again.
    #[error("{backend} storage is full: {source}")]
    Full {
        /// Backend name, e.g. `indexeddb`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store was closed, or its writer stopped after a fatal error;
    /// reopen it.
    #[error("the store is closed")]
    Closed,
    /// The backend failed (I/O error, disk full, a corrupt or foreign file,
    /// …). The operation did not take effect.
    #[error("{backend} storage failed while {during}: {source}")]
    Backend {
        /// Backend name, e.g. `redb`.
        backend: &'static str,
        /// What the store was doing.
        during: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
