//! The CLI's error type and its exit codes.

use std::io;
use std::path::PathBuf;
use std::time::Duration;
use topgun_client::query::QueryError;
use topgun_client::ClientError;
use topgun_server::ServerError;

/// `get` found nothing.
pub(crate) const EXIT_NOT_FOUND: u8 = 1;
/// Bad input: bad JSON, an invalid query, an unusable map name or key.
/// (clap uses the same code for usage errors.)
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// The store could not be opened, read or written; stdout failed; the
/// server could not bind its address or open its store.
pub(crate) const EXIT_STORAGE: u8 = 3;
/// With `--server`: not synced in time, or the server refused the token.
/// The local data is saved; pending ops go up on the next sync.
pub(crate) const EXIT_NOT_SYNCED: u8 = 4;

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
    /// A line of `import` is not a `{"key":…,"value":…}` object.
    #[error("stdin line {line}: expected {{\"key\":…,\"value\":…}}: {why}")]
    BadInputLine {
        /// Its number, from 1.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// Reading stdin failed.
    #[error("cannot read stdin: {0}")]
    Stdin(#[source] io::Error),
    /// Writing to stdout failed. A closed pipe ends the command quietly.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
    /// A command that only makes sense with a server got none.
    #[error("`{command}` needs a server: pass --server ws://HOST:PORT/ws or set TOPGUN_SERVER")]
    NoServer {
        /// The command.
        command: &'static str,
    },
    /// `serve` was not told how clients authenticate.
    #[error(
        "choose how clients authenticate: --jwt-secret SECRET (or the TOPGUN_JWT_SECRET \
         environment variable) for JWT auth, or --no-auth for development"
    )]
    NoAuthChoice,
    /// `serve --store` with a URL of no known store.
    #[error("unsupported store URL {url}: expected postgres://USER@HOST:PORT/DB")]
    StoreUrl {
        /// The URL, password hidden.
        url: String,
    },
    /// The sync did not finish within `--timeout`.
    #[error(
        "not synced with {url} after {} s (state {state}, {pending} pending ops){}; \
         the local data is saved and pending ops go up on the next sync",
        waited.as_secs_f32(),
        last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
    )]
    NotSynced {
        /// The server.
        url: String,
        /// How long the command waited.
        waited: Duration,
        /// The connection state at the end (`CONNECTING`, `SYNCING`, …).
        state: &'static str,
        /// Local ops not yet acknowledged.
        pending: u64,
        /// Why the last connection closed, if it did.
        last_error: Option<String>,
    },
    /// The server refused the token (or required one and none was given).
    #[error(
        "authentication with {url} failed: {reason} (pass a valid token with --token or \
         TOPGUN_TOKEN); the local data is saved and pending ops go up on the next sync"
    )]
    AuthFailed {
        /// The server.
        url: String,
        /// The server's reason.
        reason: String,
    },
    /// `serve` could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The server could not start (store, access rules) or failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound { .. } => EXIT_NOT_FOUND,
            Self::InvalidKey { .. }
            | Self::BadInputLine { .. }
            | Self::InvalidQuery(_)
            | Self::Client(ClientError::InvalidName { .. })
            | Self::NoServer { .. }
            | Self::NoAuthChoice
            | Self::StoreUrl { .. }
            | Self::Server(
                ServerError::RulesFile { .. }
                | ServerError::RulesSyntax { .. }
                | ServerError::RulesGrantee { .. },
            ) => EXIT_BAD_INPUT,
            Self::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Self::NotSynced { .. } | Self::AuthFailed { .. } => EXIT_NOT_SYNCED,
            Self::CreateDataDir { .. }
            | Self::OpenData { .. }
            | Self::Client(_)
            | Self::Stdout(_)
            | Self::Stdin(_)
            | Self::Bind { .. }
            | Self::Server(_)
            | Self::Runtime(_) => EXIT_STORAGE,
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
        let late = CliError::NotSynced {
            url: "ws://h/ws".into(),
            waited: Duration::from_secs(10),
            state: "CONNECTING",
            pending: 3,
            last_error: Some("connection refused".into()),
        };
        assert_eq!(late.exit_code(), EXIT_NOT_SYNCED);
        let text = late.to_string();
        assert!(
            text.contains("CONNECTING") && text.contains("3 pending") && text.contains("refused"),
            "{text}"
        );
        assert_eq!(CliError::NoAuthChoice.exit_code(), EXIT_BAD_INPUT);
        assert_eq!(
            CliError::Server(ServerError::MissingJwtSecret).exit_code(),
            EXIT_STORAGE
        );
    }
}
