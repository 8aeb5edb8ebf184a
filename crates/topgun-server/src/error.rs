//! The server's error type.

use std::path::PathBuf;
use topgun_core::HlcError;
use topgun_storage::StorageError;

/// Why the server could not start, or stopped with an error.
///
/// Errors of single connections or frames are never `ServerError`s: they
/// are answered on the wire (`ERROR`, `OP_REJECTED`, `AUTH_FAIL`) and
/// logged, and the server keeps running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be created. Check the path and its
    /// permissions.
    #[error("could not create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory's commit lanes do not add up: a lane file is
    /// missing, there are more than its `lanes` file says, or a first start
    /// was cut short before any record was stored (the message says which
    /// and what to do). Nothing was changed.
    #[error("the data directory {path} is not whole: {reason}")]
    DataDirLanes {
        /// The directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The data directory's `lanes` file could not be read or written.
    #[error("could not read or write {path}: {source}")]
    LanesFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened (a missing or read-only directory, a
    /// file written by a newer version, a file already open in another
    /// process, …).
    #[error("could not open the store at {path}: {source}")]
    OpenStore {
        /// The store file.
        path: PathBuf,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// The PostgreSQL store could not be opened: a malformed URL, a server
    /// that cannot be reached, a missing database, wrong credentials, a
    /// schema from a newer version (the message says which).
    #[cfg(feature = "postgres")]
    #[error("could not open the PostgreSQL store: {source}")]
    Postgres {
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// Reading the store at startup, to build the Merkle trees, failed.
    #[error("could not load the store's records at startup: {source}")]
    LoadStore {
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// Closing the store at shutdown failed; the next start recovers it.
    #[error("could not close the store cleanly: {source}")]
    CloseStore {
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// The access rules file could not be read.
    #[error("could not read the access rules file {path}: {source}")]
    RulesFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The access rules are not valid TOML of the expected shape (see
    /// [`crate::AccessRules`]).
    #[error("invalid access rules: {source}")]
    RulesSyntax {
        /// The TOML error, with its line and column.
        #[source]
        source: toml::de::Error,
    },
    /// A grantee in the access rules is none of `"*"`, `"user:<id>"`,
    /// `"role:<name>"`.
    #[error("invalid grantee {grantee:?} in access rule {rule} (expected \"*\", \"user:<id>\" or \"role:<name>\")")]
    RulesGrantee {
        /// The rule's position in the file, from 1.
        rule: usize,
        /// The grantee as written.
        grantee: String,
    },
    /// JWT auth is on but no secret was given (set `TOPGUN_JWT_SECRET` or
    /// pass one), or the secret is empty.
    #[error("JWT auth is on but no secret is configured (set TOPGUN_JWT_SECRET)")]
    MissingJwtSecret,
    /// The configured node id cannot be used for the server's clock (it is
    /// empty or contains `:`).
    #[error("invalid server node id: {source}")]
    NodeId {
        /// The clock's error.
        #[source]
        source: HlcError,
    },
    /// The listener failed (its address could not be read, or accepting
    /// connections failed for good).
    #[error("the listener failed: {source}")]
    Listener {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
