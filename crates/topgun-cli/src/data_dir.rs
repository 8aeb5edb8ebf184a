//! The data directory: where the store file lives and how it is opened.

use crate::error::CliError;
use std::path::Path;
use topgun_client::TopGunClient;

/// Name of the redb file inside the data directory.
pub(crate) const DATA_FILE: &str = "topgun.redb";

/// Creates `dir` if missing and opens the client on `dir/topgun.redb`
/// (created if missing).
///
/// # Errors
/// [`CliError::CreateDataDir`] if the directory cannot be created;
/// [`CliError::OpenData`] if the file cannot be opened (e.g. another
/// process has it open, or it is not a TopGun file).
pub(crate) async fn open(dir: &Path) -> Result<TopGunClient, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::CreateDataDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DATA_FILE);
    TopGunClient::builder()
        .redb_path(&path)
        .build()
        .await
        .map_err(|source| CliError::OpenData { path, source })
}
