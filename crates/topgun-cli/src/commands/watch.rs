//! `watch`: print a map's changes as JSON lines until interrupted.

use super::Context;
use crate::error::CliError;
use crate::output::Output;
use serde::Serialize;
use serde_json::Value;
use topgun_client::events::RecvError;
use topgun_client::{MapEvent, Origin};

pub(crate) const WATCH_EXAMPLES: &str = "\
Prints one JSON line per change of MAP, flushed at once, until Ctrl-C or
SIGTERM (exit 0):
  {\"key\":\"t1\",\"value\":{\"title\":\"milk\"},\"oldValue\":null,\"origin\":\"remote\",\"timestamp\":\"1718000000000:0:node\"}
value is null for a removal, oldValue null when the key was absent; origin is
\"remote\" for changes from the server, timestamp the change's HLC
(millis:counter:nodeId). If the reader falls behind, dropped changes are
reported as {\"lagged\":N} and the stream goes on. If changes made by
another process on the same data directory were lost on their way here (this
process fell behind the one sharing them, or that one went away), that is
reported as {\"missed\":true} and the stream goes on.

With --server, changes made elsewhere stream in (on connect, the server's
records this data dir lacks arrive as remote changes too). With or without
it, changes made by other processes on the same data directory (e.g. `put`
in another terminal) stream in as local changes.
It exits 4 if the server refuses the token.

Examples:
  topgun --data ./carol --server ws://127.0.0.1:8080/ws watch todos
  topgun --data ./carol --server ws://127.0.0.1:8080/ws watch todos | jq -c 'select(.value == null)'";

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// Map name.
    pub(crate) map: String,
}

/// One line of `watch`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Change<'a> {
    key: &'a str,
    value: &'a Option<Value>,
    old_value: &'a Option<Value>,
    origin: &'static str,
    timestamp: String,
}

impl<'a> Change<'a> {
    fn new(event: &'a MapEvent<Value>) -> Self {
        Self {
            key: &event.key,
            value: &event.new_value,
            old_value: &event.old_value,
            origin: match event.origin {
                Origin::Local => "local",
                Origin::Remote => "remote",
            },
            timestamp: event.timestamp.to_string(),
        }
    }
}

/// `{"lagged":N}`.
#[derive(Debug, Serialize)]
struct Lagged {
    lagged: u64,
}

/// `{"missed":true}`.
#[derive(Debug, Serialize)]
struct Missed {
    missed: bool,
}

/// `watch MAP`.
pub(crate) async fn watch(ctx: &Context, args: WatchArgs) -> Result<(), CliError> {
    let mut changes = ctx.map(&args.map)?.subscribe();
    let stop = topgun_server::shutdown_signal();
    tokio::pin!(stop);
    let mut out = Output::stdout();
    loop {
        let received = tokio::select! {
            () = &mut stop => return out.finish(),
            reason = auth_failed(ctx) => {
                out.finish()?;
                let url = ctx.remote.as_ref().map(|r| r.url().to_owned()).unwrap_or_default();
                return Err(CliError::AuthFailed { url, reason });
            }
            received = changes.recv() => received,
        };
        match received {
            Ok(event) => out.json_line(&Change::new(&event))?,
            Err(RecvError::Lagged(n)) => out.json_line(&Lagged { lagged: n })?,
            Err(RecvError::Missed) => out.json_line(&Missed { missed: true })?,
            Err(e @ RecvError::Decode { .. }) => {
                eprintln!("warning: skipped: {e}");
                continue;
            }
            Err(_) => return out.finish(),
        }
        out.flush()?;
    }
}

async fn auth_failed(ctx: &Context) -> String {
    match &ctx.remote {
        Some(remote) => remote.auth_failed().await,
        None => std::future::pending().await,
    }
}
