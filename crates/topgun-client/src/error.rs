//! The client error type.

use topgun_storage::StorageError;

/// Errors of the client. Each variant says what was wrong; when one is
/// returned from a write, nothing of that write was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A map name or key was not acceptable (empty, or longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes).
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        /// `"map name"` or `"key"`.
        what: &'static str,
        /// The rejected name (truncated to 64 characters).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The value could not be serialised to MessagePack (e.g. a map with
    /// non-string keys that the serializer refuses).
    #[error("could not encode the value for {map}/{key}: {source}")]
    Encode {
        /// Map written.
        map: String,
        /// Key written.
        key: String,
        /// The encoder's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// A stored value could not be decoded as the map's value type: the map
    /// holds values of another shape than the `V` it was opened with.
    #[error("could not decode the value of {map}/{key} as the requested type: {source}")]
    Decode {
        /// Map read.
        map: String,
        /// Key read.
        key: String,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The encoded value is larger than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN)
    /// bytes: it could not travel to a server in one frame. Nothing was
    /// written.
    #[error("the value for {map}/{key} is {len} bytes encoded; the limit is {max}")]
    ValueTooLarge {
        /// Map written.
        map: String,
        /// Key written.
        key: String,
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The storage backend failed; the operation did not take effect.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The store is over its byte budget and nothing more could be pruned
    /// (only unsynced data remains). Sync, raise the budget, or delete data.
    #[error("storage quota exceeded: {used} bytes used of a {budget} byte budget, and nothing synced is left to prune")]
    QuotaExceeded {
        /// Bytes in use.
        used: u64,
        /// The configured budget.
        budget: u64,
    },
    /// A query was invalid.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// The node id is not usable (empty or contains `:`).
    #[error(transparent)]
    Clock(#[from] topgun_core::HlcError),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// Sync with a server needs a runtime: `build` was not called on a
    /// tokio runtime and none was given with `TopGunClientBuilder::runtime`.
    #[error(
        "syncing with a server needs a runtime; build the client inside a tokio runtime \
         or give one with TopGunClientBuilder::runtime"
    )]
    NoRuntime,
}

pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), ClientError> {
    let why = if value.is_empty() {
        "it must not be empty"
    } else if value.len() > crate::MAX_NAME_LEN {
        "it is longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidName {
        what,
        value: value.chars().take(64).collect(),
        why,
    })
}
