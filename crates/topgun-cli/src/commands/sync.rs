//! `sync`: push local changes, pull the server's, exit once both are done.

use super::Context;
use crate::error::CliError;
use std::io::IsTerminal;

pub(crate) const SYNC_EXAMPLES: &str = "\
Connects to --server, pushes every pending local write, pulls the given maps
(default: every map in the local store) and exits 0 once the client is
ONLINE with nothing pending. Otherwise it exits 4 after --timeout (default
10 s) with the state and the number of pending ops, or at once if the server
refuses the token; the local data stays as it is and the next sync goes on
where this one stopped. On a terminal a spinner shows the traffic.

Examples:
  topgun --data ./alice --server ws://127.0.0.1:8080/ws sync
  topgun --data ./bob --server ws://127.0.0.1:8080/ws sync --map todos --map users
  TOPGUN_SERVER=ws://sync.example:8080/ws TOPGUN_TOKEN=$JWT topgun sync --timeout 60";

/// Arguments of `sync`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// A map to pull besides those already in the local store; repeat for
    /// more.
    #[arg(long = "map", value_name = "MAP")]
    pub(crate) maps: Vec<String>,
}

/// `sync [--map MAP]…`.
pub(crate) async fn sync(ctx: &Context, args: SyncArgs) -> Result<(), CliError> {
    let Some(remote) = &ctx.remote else {
        return Err(CliError::NoServer { command: "sync" });
    };
    for map in &args.maps {
        ctx.map(map)?;
    }
    let before = ctx.client.pending_ops().await?;
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| crate::remote::spinner(remote.url()));
    let result = remote.wait_synced(&ctx.client, bar.as_ref()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
        if result.is_ok() {
            let traffic = ctx.client.traffic();
            eprintln!(
                "synced with {}: {before} ops pushed, {} received",
                remote.url(),
                indicatif::HumanBytes(traffic.bytes_received)
            );
        }
    }
    result
}
