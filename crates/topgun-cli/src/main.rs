//! `topgun`: the command line of TopGun for Rust.
//!
//! As a client it reads and writes the maps of a local data directory
//! through `topgun-client` (a redb file, `DIR/topgun.redb`), so scripts can
//! put, get, list and query JSON values and inspect the store; with
//! `--server` the same commands sync with a TopGun server first (reads) or
//! afterwards (writes), and `sync` and `watch` talk to the server
//! directly. Each invocation opens the store, runs one command and closes
//! it; every write is durable when the command exits. `serve` runs the
//! sync server of `topgun-server` instead.
//!
//! Layout: this file parses arguments (clap), picks the runtime and maps
//! errors to exit codes; [`commands`] holds one module per command group;
//! [`remote`] waits for sync and reports sync events; [`output`] writes
//! JSON lines to stdout; [`data_dir`] opens the store.
//!
//! This binary is the top of the layer stack: it depends on the client
//! and, for `serve` only, on the server crate; neither depends on it.

/// jemalloc instead of the system allocator: a pull or a push allocates
/// and frees millions of small records, often on another thread than the
/// one that allocated them (see `docs/decisions.md`; its settings are in
/// `.cargo/config.toml`). Not on MSVC, where jemalloc does not build.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod args;
mod commands;
mod data_dir;
mod error;
mod output;
mod remote;

use clap::{Parser, Subcommand};
use commands::Context;
use error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "\
Command line of TopGun for Rust: put, get, list and query JSON values in a \
local-first data directory, sync it with a server, or run the server.";

const LONG_ABOUT: &str = "\
Command line of TopGun for Rust: put, get, list and query JSON values in a \
local-first data directory, sync it with a server, or run the server.

Data lives in one redb file, DIR/topgun.redb, where DIR is --data, else the \
TOPGUN_DATA environment variable, else ./topgun-data. DIR is created if \
missing. Several processes can use one DIR at once (on Unix): the first to open it \
holds the file (the leader; it syncs when it has --server) and listens on \
DIR/topgun.sock; the others send their reads and writes through it and see \
its changes. When the leader exits, another process takes over. Only the \
leader syncs: a process that goes through it uses the leader's server and \
connection; if the leader has none, it starts syncing with this process's \
--server.

Without --server every command works on local data only. With --server URL \
(or TOPGUN_SERVER) the client syncs with that server: reads (get, list, \
query, status) first wait until synced, writes (put, remove, clear) wait \
until the server acknowledged them, both at most --timeout seconds.

Output is JSON: `get` prints one value, `list` and `query` print JSON lines \
{\"key\":…,\"value\":…}, `status` prints one object, `watch` one line per \
change. Messages and errors go to stderr.";

const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when stdout is closed early, e.g. `topgun list m | head -1`)
  1  not found (`get` of a key that is absent, removed or expired)
  2  usage error or bad input: unknown option, bad JSON (an argument or an
     `import` line), invalid query,
     empty or overlong map name or key, `sync` without --server, `serve`
     without --jwt-secret/--no-auth, a bad --rules file
  3  storage error: the data directory or file could not be opened, read or
     written, or stdout could not be written; `serve` could not listen
  4  not synced (with --server): not ONLINE with nothing pending within
     --timeout, or the server refused the token. The local data is saved
     and pending writes go up on the next sync.

Examples:
  topgun --data ./db put users alice '{\"name\":\"Alice\",\"age\":30}'
  topgun --data ./db get users alice
  topgun --data ./db query users --where '{\"age\":{\"$gte\":18}}' --sort age:desc --limit 10
  TOPGUN_DATA=./db topgun status

Quickstart with a server (three terminals):
  topgun serve --no-auth --data ./server-data
  topgun --data ./alice --server ws://127.0.0.1:8080/ws put todos t1 '{\"title\":\"milk\"}'
  topgun --data ./bob --server ws://127.0.0.1:8080/ws get todos t1
  topgun --data ./bob --server ws://127.0.0.1:8080/ws watch todos
Offline first, then sync:
  topgun --data ./alice put todos t2 '{\"title\":\"eggs\"}'
  topgun --data ./alice --server ws://127.0.0.1:8080/ws sync";

/// The `topgun` command line.
#[derive(Debug, Parser)]
#[command(
    name = "topgun",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts (before or after the command name).
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// Data directory; the data file is DIR/topgun.redb (DIR is created if
    /// missing). For `serve`, the server's data directory (one redb file
    /// per commit lane).
    #[arg(
        long,
        value_name = "DIR",
        env = "TOPGUN_DATA",
        default_value = "./topgun-data",
        global = true
    )]
    data: PathBuf,
    /// Sync with the TopGun server at this WebSocket URL, e.g.
    /// ws://127.0.0.1:8080/ws.
    #[arg(long, value_name = "URL", env = "TOPGUN_SERVER", global = true)]
    server: Option<String>,
    /// Token (a JWT) to authenticate with the server.
    #[arg(
        long,
        value_name = "T",
        env = "TOPGUN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// With --server: wait at most SECS for the sync (exit code 4 after).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = args::seconds, global = true)]
    timeout: f64,
    /// Report more on stderr: the data directory's role (leader or
    /// follower), the op id of each write, whether a limited query left
    /// more results out, sync disconnections.
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write a JSON value under a key.
    #[command(after_help = commands::kv::PUT_EXAMPLES)]
    Put(commands::kv::PutArgs),
    /// Print the JSON value of a key (exit code 1 if absent).
    #[command(after_help = commands::kv::GET_EXAMPLES)]
    Get(commands::kv::KeyArgs),
    /// Remove a key (records a removal even if the key is absent).
    #[command(after_help = commands::kv::REMOVE_EXAMPLES)]
    Remove(commands::kv::KeyArgs),
    /// Remove every key of a map.
    #[command(after_help = commands::kv::CLEAR_EXAMPLES)]
    Clear(commands::kv::MapArgs),
    /// Print every entry of a map as JSON lines, in key order.
    #[command(after_help = commands::kv::LIST_EXAMPLES)]
    List(commands::kv::MapArgs),
    /// Write JSON lines {"key":…,"value":…} from stdin into a map, in order.
    #[command(after_help = commands::kv::IMPORT_EXAMPLES)]
    Import(commands::kv::MapArgs),
    /// Filter, sort and limit a map's entries; print them as JSON lines.
    #[command(after_help = commands::query::QUERY_EXAMPLES)]
    Query(commands::query::QueryArgs),
    /// Print the client's state and the store's counters as one JSON object.
    #[command(after_help = commands::status::STATUS_EXAMPLES)]
    Status,
    /// Push local changes to --server and pull its changes, then exit.
    #[command(after_help = commands::sync::SYNC_EXAMPLES)]
    Sync(commands::sync::SyncArgs),
    /// Print a map's changes as JSON lines until interrupted (with --server).
    #[command(after_help = commands::watch::WATCH_EXAMPLES)]
    Watch(commands::watch::WatchArgs),
    /// Run the sync server on --data until Ctrl-C or SIGTERM.
    #[command(after_help = commands::serve::SERVE_EXAMPLES)]
    Serve(commands::serve::ServeArgs),
}

impl Command {
    /// Maps the command reads or writes, to sync from the start.
    fn maps(&self) -> Vec<String> {
        match self {
            Command::Put(a) => vec![a.map.clone()],
            Command::Get(a) | Command::Remove(a) => vec![a.map.clone()],
            Command::Clear(a) | Command::List(a) | Command::Import(a) => vec![a.map.clone()],
            Command::Query(a) => vec![a.map.clone()],
            Command::Sync(a) => a.maps.clone(),
            Command::Watch(a) => vec![a.map.clone()],
            Command::Status | Command::Serve(_) => Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with code 2, `--help` and `--version` with 0.
    let cli = Cli::parse();
    let result = runtime(&cli.command)
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !err.is_quiet() {
                eprintln!("error: {err}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// The server gets every core; a client command one thread.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { global, command } = cli;
    if let Command::Serve(args) = command {
        commands::serve::init_logging();
        return commands::serve::serve(&global.data, args).await;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        commands::serve::init_logging();
    }
    if matches!(command, Command::Sync(_)) && global.server.is_none() {
        return Err(CliError::NoServer { command: "sync" });
    }
    let target = global.server.clone().map(|url| data_dir::SyncTarget {
        url,
        token: global.token.clone(),
        maps: command.maps(),
    });
    let client = data_dir::open(&global.data, target).await?;
    if global.verbose {
        eprintln!("{}: {}", global.data.display(), client.role().as_str());
    }
    // Before anything yields, so no sync event is missed.
    let remote = global.server.map(|url| {
        let timeout = Duration::from_secs_f64(global.timeout);
        remote::Remote::start(&client, url, timeout, global.verbose)
    });
    let ctx = Context {
        client,
        verbose: global.verbose,
        remote,
    };
    match command {
        Command::Put(args) => commands::kv::put(&ctx, args).await,
        Command::Get(args) => commands::kv::get(&ctx, args).await,
        Command::Remove(args) => commands::kv::remove(&ctx, args).await,
        Command::Clear(args) => commands::kv::clear(&ctx, args).await,
        Command::List(args) => commands::kv::list(&ctx, args).await,
        Command::Import(args) => commands::kv::import(&ctx, args).await,
        Command::Query(args) => commands::query::query(&ctx, args).await,
        Command::Status => commands::status::status(&ctx).await,
        Command::Sync(args) => commands::sync::sync(&ctx, args).await,
        Command::Watch(args) => commands::watch::watch(&ctx, args).await,
        Command::Serve(_) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
