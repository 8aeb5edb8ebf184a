//! Key-value commands: `put`, `get`, `remove`, `clear`, `list`.

use super::Context;
use crate::args;
use crate::error::CliError;
use crate::output::Output;
use serde_json::Value;
use topgun_client::ClientError;

pub(crate) const PUT_EXAMPLES: &str = "\
Prints nothing on success; with -v, the op id of the write on stderr.
A map name or key that starts with `-` goes after `--`.
With --server it exits once the server acknowledged the write (exit code 4
after --timeout: the write is saved locally and goes up on the next sync).

Examples:
  topgun --data ./db put users alice '{\"name\":\"Alice\",\"age\":30}'
  topgun --data ./db put counters visits 42
  topgun --data ./db put sessions s1 '{\"user\":\"alice\"}' --ttl-ms 60000
  topgun --data ./db --server ws://127.0.0.1:8080/ws put users alice '{\"age\":31}'";

pub(crate) const GET_EXAMPLES: &str = "\
Prints the value as compact JSON on one line (strings keep their quotes; pipe
through `jq -r` for raw text). An absent, removed or expired key prints a
message on stderr and exits with code 1. With --server it first pulls the map
from the server (at most --timeout seconds).

Examples:
  topgun --data ./db get users alice
  topgun --data ./db get users alice | jq .age
  topgun --data ./db --server ws://127.0.0.1:8080/ws get users alice";

pub(crate) const REMOVE_EXAMPLES: &str = "\
Examples:
  topgun --data ./db remove users alice";

pub(crate) const CLEAR_EXAMPLES: &str = "\
Examples:
  topgun --data ./db clear users";

pub(crate) const LIST_EXAMPLES: &str = "\
Prints one line per entry, {\"key\":…,\"value\":…}, read from the store page by
page (the map is never held in memory whole).

Examples:
  topgun --data ./db list users
  topgun --data ./db list users | jq -r .key";

pub(crate) const IMPORT_EXAMPLES: &str = "\
Reads one JSON object per line from stdin, {\"key\":…,\"value\":…} (the lines
`list` prints), and writes each value under its key, in order, each durable
before the next line is read. Empty lines are skipped. A line that is not
such an object stops the import with exit code 2, naming the line; the lines
before it are written. With -v, prints the op id of each write on stderr.
With --server it exits once the server acknowledged the writes.

Examples:
  topgun --data ./old list users | topgun --data ./new import users
  printf '%s\\n' '{\"key\":\"k1\",\"value\":1}' | topgun --data ./db import counters";

/// Arguments of `put`.
#[derive(Debug, clap::Args)]
pub(crate) struct PutArgs {
    /// Map name.
    pub(crate) map: String,
    /// Key.
    key: String,
    /// The value: any JSON (object, array, string in quotes, number, true,
    /// false, null).
    #[arg(value_name = "JSON", value_parser = args::json_value, allow_hyphen_values = true)]
    value: Value,
    /// Expire the value N milliseconds after the write (it then reads as
    /// absent).
    #[arg(long, value_name = "N")]
    ttl_ms: Option<u64>,
}

/// Arguments of `get` and `remove`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// Map name.
    pub(crate) map: String,
    /// Key.
    key: String,
}

/// Arguments of `clear` and `list`.
#[derive(Debug, clap::Args)]
pub(crate) struct MapArgs {
    /// Map name.
    pub(crate) map: String,
}

/// `put MAP KEY JSON [--ttl-ms N]`.
pub(crate) async fn put(ctx: &Context, args: PutArgs) -> Result<(), CliError> {
    let map = ctx.map(&args.map)?;
    let op = match args.ttl_ms {
        Some(ttl) => map.put_with_ttl(&args.key, args.value, ttl).await?,
        None => map.put(&args.key, args.value).await?,
    };
    ctx.note(format_args!("op {op}"));
    ctx.synced().await
}

/// `get MAP KEY`.
pub(crate) async fn get(ctx: &Context, args: KeyArgs) -> Result<(), CliError> {
    let map = ctx.map(&args.map)?;
    // `IMap::get` answers `None` for a key no write could use; reject it
    // as `put` and `remove` do.
    if args.key.is_empty() || args.key.len() > topgun_client::MAX_NAME_LEN {
        return Err(CliError::InvalidKey {
            key: args.key.chars().take(64).collect(),
        });
    }
    ctx.synced().await?;
    let Some(value) = map.get(&args.key).await? else {
        return Err(CliError::NotFound {
            map: args.map,
            key: args.key,
        });
    };
    let mut out = Output::stdout();
    out.json_line(&value)?;
    out.finish()
}

/// `remove MAP KEY`.
pub(crate) async fn remove(ctx: &Context, args: KeyArgs) -> Result<(), CliError> {
    let op = ctx.map(&args.map)?.remove(&args.key).await?;
    ctx.note(format_args!("op {op}"));
    ctx.synced().await
}

/// `clear MAP`. With `--server` it syncs first, so the keys the server
/// has are cleared too, and again after, so the removals reach it.
pub(crate) async fn clear(ctx: &Context, args: MapArgs) -> Result<(), CliError> {
    let map = ctx.map(&args.map)?;
    ctx.synced().await?;
    let op = map.clear().await?;
    ctx.note(format_args!("op {op}"));
    ctx.synced().await
}

/// One line of `import`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    key: String,
    value: Value,
}

/// `import MAP`: JSON lines from stdin, written in order.
pub(crate) async fn import(ctx: &Context, args: MapArgs) -> Result<(), CliError> {
    use tokio::io::AsyncBufReadExt;
    let map = ctx.map(&args.map)?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0u64;
    while let Some(line) = lines.next_line().await.map_err(CliError::Stdin)? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let entry: ImportLine =
            serde_json::from_str(&line).map_err(|e| CliError::BadInputLine {
                line: number,
                why: e.to_string(),
            })?;
        let op = map.put(&entry.key, entry.value).await?;
        ctx.note(format_args!("op {op}"));
    }
    ctx.synced().await
}

/// `list MAP`: streams the entries in key order.
pub(crate) async fn list(ctx: &Context, args: MapArgs) -> Result<(), CliError> {
    let map = ctx.map(&args.map)?;
    ctx.synced().await?;
    let mut entries = map.entries();
    let mut out = Output::stdout();
    while let Some(entry) = entries.next().await {
        match entry {
            Ok((key, value)) => out.row(&key, &value)?,
            // One value that is not JSON-shaped (written by another program
            // with another type) does not hide the rest of the map.
            Err(e @ ClientError::Decode { .. }) => eprintln!("warning: skipped: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    out.finish()
}
