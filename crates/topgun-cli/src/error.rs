//! The CLI's error type and its exit codes.

use std::io;
use std::path::PathBuf;
use topgun_client::query::QueryError;
use topgun_client::ClientError;

/// `get` found nothing.
pub(crate) const EXIT_NOT_FOUND: u8 = 1;
/// Bad input: bad JSON, an invalid query, an unusable map name or key.
/// (clap uses the same code for usage errors.)
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// The store could not be opened, read or written; stdout failed.
pub(crate) const EXIT_STORAGE: u8 = 3;

/// Why a command failed. [`CliError::exit_code`] says how the process
/// ends; the `Display` text is what the user reads on stderr.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The key is absent, removed, or expired.
    #[error("key {key:?} not found in map {map:?}")]
    NotFound {
        /// The map read.
        map: String,
        /// The key read.
        key: String,
    },
    /// A key that no map can hold (empty or overlong), given to a read
    /// that does not check keys itself.
    #[error(
        "invalid key {key:?}: a key must be 1 to {} bytes long",
        topgun_client::MAX_NAME_LEN
    )]
    InvalidKey {
        /// The key, truncated to 64 characters.
        key: String,
    },
    /// The data directory does not exist and could not be created (or is
    /// a file).
    #[error("cannot create the data directory {}: {source}", path.display())]
    CreateDataDir {
        /// The directory.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: io::Error,
    },
    /// The data file could not be opened (locked by another process, not
    /// a TopGun file, written by a newer version, …).
    #[error("cannot open the data file {}: {source}", path.display())]
    OpenData {
        /// The redb file.
        path: PathBuf,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The query does not compile: an unknown operator, a wrong operand,
    /// a bad regex, …; the message says where in the query.
    #[error("invalid query: {0}")]
    InvalidQuery(#[source] QueryError),
    /// A client operation failed: bad input (an invalid name) or storage.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing to stdout failed. A closed pipe ends the command quietly.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound { .. } => EXIT_NOT_FOUND,
            Self::InvalidKey { .. }
            | Self::InvalidQuery(_)
            | Self::Client(ClientError::InvalidName { .. }) => EXIT_BAD_INPUT,
            Self::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Self::CreateDataDir { .. }
            | Self::OpenData { .. }
            | Self::Client(_)
            | Self::Stdout(_) => EXIT_STORAGE,
        }
    }

    /// Whether the error ends the command without a message: the reader of
    /// stdout went away (`topgun list m | head -1`), which is not a failure.
    pub(crate) fn is_quiet(&self) -> bool {
        matches!(self, Self::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let not_found = CliError::NotFound {
            map: "m".into(),
            key: "k".into(),
        };
        assert_eq!(not_found.exit_code(), EXIT_NOT_FOUND);
        let pipe = CliError::Stdout(io::ErrorKind::BrokenPipe.into());
        assert!(pipe.is_quiet());
        assert_eq!(pipe.exit_code(), 0);
        let full = CliError::Stdout(io::ErrorKind::StorageFull.into());
        assert!(!full.is_quiet());
        assert_eq!(full.exit_code(), EXIT_STORAGE);
        assert_eq!(
            CliError::Client(ClientError::Closed).exit_code(),
            EXIT_STORAGE
        );
    }
}
