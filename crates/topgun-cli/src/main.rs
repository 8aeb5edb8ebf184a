//! `topgun`: a command-line client for TopGun for Rust.
//!
//! It reads and writes the maps of a local data directory through
//! `topgun-client` (a redb file, `DIR/topgun.redb`), so scripts can put,
//! get, list and query JSON values and inspect the store. Each invocation
//! opens the store, runs one command and closes it; every write is durable
//! when the command exits.
//!
//! Layout: this file parses arguments (clap) and maps errors to exit codes;
//! [`commands`] holds one module per command group; [`output`] writes JSON
//! lines to stdout; [`data_dir`] opens the store. Commands that talk to a
//! server (`serve`, `sync`, `watch`) will join as further modules and
//! [`Command`] variants; connection options belong in [`GlobalArgs`].
//!
//! This crate depends on `topgun-client` only (never on the server crate
//! directly).

mod args;
mod commands;
mod data_dir;
mod error;
mod output;

use clap::{Parser, Subcommand};
use commands::Context;
use error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str = "\
Command-line client for TopGun for Rust: put, get, list and query JSON values \
in a local-first data directory.";

const LONG_ABOUT: &str = "\
Command-line client for TopGun for Rust: put, get, list and query JSON values \
in a local-first data directory.

Data lives in one redb file, DIR/topgun.redb, where DIR is --data, else the \
TOPGUN_DATA environment variable, else ./topgun-data. DIR is created if \
missing. Only one process can have the file open at a time.

Output is JSON: `get` prints one value, `list` and `query` print JSON lines \
{\"key\":…,\"value\":…}, `status` prints one object. Messages and errors go \
to stderr.";

const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when stdout is closed early, e.g. `topgun list m | head -1`)
  1  not found (`get` of a key that is absent, removed or expired)
  2  usage error or bad input: unknown option, bad JSON, invalid query,
     empty or overlong map name or key
  3  storage error: the data directory or file could not be opened, read or
     written, or stdout could not be written

Examples:
  topgun --data ./db put users alice '{\"name\":\"Alice\",\"age\":30}'
  topgun --data ./db get users alice
  topgun --data ./db query users --where '{\"age\":{\"$gte\":18}}' --sort age:desc --limit 10
  TOPGUN_DATA=./db topgun status";

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
    /// missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "TOPGUN_DATA",
        default_value = "./topgun-data",
        global = true
    )]
    data: PathBuf,
    /// Report more on stderr: the op id of each write, and whether a
    /// limited query left more results out.
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
    /// Filter, sort and limit a map's entries; print them as JSON lines.
    #[command(after_help = commands::query::QUERY_EXAMPLES)]
    Query(commands::query::QueryArgs),
    /// Print the client's state and the store's counters as one JSON object.
    #[command(after_help = commands::status::STATUS_EXAMPLES)]
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with code 2, `--help` and `--version` with 0.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !err.is_quiet() {
                eprintln!("error: {err}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    // Every command so far works on the local store. Commands that do not
    // (a future `serve`) branch off here, before the store is opened.
    let client = data_dir::open(&cli.global.data).await?;
    let ctx = Context {
        client,
        verbose: cli.global.verbose,
    };
    match cli.command {
        Command::Put(args) => commands::kv::put(&ctx, args).await,
        Command::Get(args) => commands::kv::get(&ctx, args).await,
        Command::Remove(args) => commands::kv::remove(&ctx, args).await,
        Command::Clear(args) => commands::kv::clear(&ctx, args).await,
        Command::List(args) => commands::kv::list(&ctx, args).await,
        Command::Query(args) => commands::query::query(&ctx, args).await,
        Command::Status => commands::status::status(&ctx).await,
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
