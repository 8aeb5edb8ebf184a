//! One module per command group. Each command takes the shared
//! [`Context`] and its parsed arguments, writes its result to stdout and
//! returns a [`CliError`] on failure.

pub(crate) mod kv;
pub(crate) mod query;
pub(crate) mod status;

use crate::error::CliError;
use serde_json::Value;
use topgun_client::{IMap, TopGunClient};

/// What every command gets: the open client and the global options.
#[derive(Debug)]
pub(crate) struct Context {
    /// The client on the data directory's store.
    pub(crate) client: TopGunClient,
    /// `--verbose`: report op ids and paging on stderr.
    pub(crate) verbose: bool,
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
}
