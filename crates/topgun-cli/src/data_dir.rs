//! The data directory: where the store file lives and how it is opened.

use crate::error::CliError;
use std::path::Path;
use topgun_client::{TopGunClient, DATA_FILE};

/// Where and what to sync (`--server`).
#[derive(Debug, Clone)]
pub(crate) struct SyncTarget {
    /// The server's WebSocket URL.
    pub(crate) url: String,
    /// The token sent in `AUTH`.
    pub(crate) token: Option<String>,
    /// Maps to sync besides those already in the store.
    pub(crate) maps: Vec<String>,
}

/// Creates `dir` if missing and opens the client on `dir/topgun.redb`
/// (created if missing), shared with other processes on the directory:
/// the first holds the file (and syncs), later ones go through it. With
/// `sync`, the client starts connecting to the server in the background
/// (it needs the tokio runtime).
///
/// # Errors
/// [`CliError::CreateDataDir`] if the directory cannot be created;
/// [`CliError::OpenData`] if the file cannot be opened (e.g. it is not a
/// TopGun file, or the process holding it does not answer).
pub(crate) async fn open(dir: &Path, sync: Option<SyncTarget>) -> Result<TopGunClient, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::CreateDataDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DATA_FILE);
    let mut builder = TopGunClient::builder().shared_dir(dir);
    if let Some(target) = sync {
        builder = builder.server_url(target.url).sync_maps(target.maps);
        if let Some(token) = target.token {
            builder = builder.token(token);
        }
    }
    builder
        .build()
        .await
        .map_err(|source| CliError::OpenData { path, source })
}
