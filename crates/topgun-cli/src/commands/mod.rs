//! One module per command group. Each client command takes the shared
//! [`Context`] and its parsed arguments, writes its result to stdout and
//! returns a [`CliError`] on failure; `serve` runs the server instead.

pub(crate) mod kv;
pub(crate) mod query;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod watch;

use crate::error::CliError;
use crate::remote::Remote;
use serde_json::Value;
use topgun_client::{IMap, TopGunClient};

/// What every client command gets: the open client and the global options.
#[derive(Debug)]
pub(crate) struct Context {
    /// The client on the data directory's store.
    pub(crate) client: TopGunClient,
    /// `--verbose`: report op ids and paging on stderr.
    pub(crate) verbose: bool,
    /// `--server`: the server the client syncs with.
    pub(crate) remote: Option<Remote>,
}

impl Context {
    /// The JSON view of map `name`.
    ///
    /// # Errors
    /// An empty or overlong map name.
    pub(crate) fn map(&self, name: &str) -> Result<IMap<Value>, CliError> {
        Ok(self.client.get_json_map(name)?)
    }

    /// Prints `message` on stderr when `--verbose` is on.
    pub(crate) fn note(&self, message: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{message}");
        }
    }

    /// With `--server`, waits until the client is `ONLINE` with nothing
    /// pending: before a read, so it sees the server's data; after a
    /// write, so the write reached the server before the command exits.
    /// Without `--server`, returns at once.
    ///
    /// # Errors
    /// [`CliError::NotSynced`] after `--timeout`, [`CliError::AuthFailed`]
    /// if the server refused the token.
    pub(crate) async fn synced(&self) -> Result<(), CliError> {
        match &self.remote {
            Some(remote) => remote.wait_synced(&self.client, None).await,
            None => Ok(()),
        }
    }
}
