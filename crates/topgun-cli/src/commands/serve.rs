//! `serve`: runs the TopGun sync server (crate `topgun-server`) until
//! Ctrl-C or SIGTERM.

use crate::error::CliError;
use std::path::{Path, PathBuf};
use topgun_server::store::PostgresOptions;
use topgun_server::{AccessRules, AuthMode, ServerConfig, StoreConfig};

pub(crate) const SERVE_EXAMPLES: &str = "\
Serves the WebSocket sync protocol at ws://ADDR/ws (and GET /health) on the
data directory given by the global --data (the server's records live in
DIR/topgun.redb, DIR/topgun-1.redb, … one file per commit lane, and DIR/lanes
says how many: back up the whole directory; a client and a server cannot
share one data dir), or, with
--store postgres://USER@HOST:PORT/DB (or TOPGUN_STORE), on a PostgreSQL
database that several `topgun serve` nodes share: each node fans out the
others' writes to its own clients, and a client may reconnect to any node.

Once its store is open and it serves, it prints one line on stderr, e.g.
  topgun server listening on ws://127.0.0.1:8080/ws (data: ./server-data, auth: off)
with the actual port when --addr ends in :0. Logs follow on stderr (RUST_LOG
filters them, default `info`). Ctrl-C or SIGTERM shuts it down gracefully:
in-flight batches are applied and acknowledged, the store is closed, exit 0.

Auth: --jwt-secret SECRET (or TOPGUN_JWT_SECRET) requires clients to send a
JWT signed with HS256 by SECRET (`sub` = user id, optional `roles`); --no-auth
lets anyone read and write everything (development). One of them is required.

--rules FILE: per-map access rules (TOML, first matching rule decides, no
match = denied); ignored with --no-auth:
  [[rule]]
  map = \"public_*\"
  read = [\"*\"]
  write = [\"role:admin\", \"user:alice\"]

Examples:
  topgun serve --no-auth --data ./server-data
  topgun serve --no-auth --store postgres://topgun@127.0.0.1:5432/topgun
  topgun serve --no-auth --data ./server-data --web ./target/web   (the browser demo)
  TOPGUN_JWT_SECRET=s3cret topgun serve --addr 0.0.0.0:8080 --rules rules.toml
  RUST_LOG=debug topgun serve --no-auth --addr 127.0.0.1:0";

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed when
    /// listening).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Require clients to authenticate with a JWT signed (HS256) with this
    /// secret. Default: the TOPGUN_JWT_SECRET environment variable.
    #[arg(long, value_name = "SECRET", conflicts_with = "no_auth")]
    jwt_secret: Option<String>,
    /// Let every client read and write every map without a token
    /// (development only).
    #[arg(long)]
    no_auth: bool,
    /// Per-map read and write rules (TOML); ignored with --no-auth.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Keep the records in this PostgreSQL database,
    /// postgres://USER@HOST:PORT/DB (a password may follow USER after a
    /// colon), instead of the data directory; several nodes may share it.
    #[arg(long, value_name = "URL", env = "TOPGUN_STORE")]
    store: Option<String>,
    /// Also serve the static files of this directory over HTTP at every
    /// other path (a web app next to /ws, e.g. the browser demo).
    #[arg(long, value_name = "DIR")]
    web: Option<PathBuf>,
    /// Commit lanes of a new data directory: its keys are spread over this
    /// many redb files, each written by its own thread (default: one per
    /// two cores, at most 4). A data directory keeps the lanes it was made
    /// with.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=64),
        conflicts_with = "store"
    )]
    lanes: Option<u16>,
}

impl ServeArgs {
    /// `--jwt-secret`, else `--no-auth`, else `TOPGUN_JWT_SECRET`.
    fn auth(&self) -> Result<AuthMode, CliError> {
        if let Some(secret) = &self.jwt_secret {
            if secret.is_empty() {
                return Err(CliError::NoAuthChoice);
            }
            return Ok(AuthMode::Jwt {
                secret: secret.clone().into_bytes(),
            });
        }
        if self.no_auth {
            return Ok(AuthMode::Disabled);
        }
        AuthMode::jwt_from_env().map_err(|_| CliError::NoAuthChoice)
    }
}

/// `serve [--addr ADDR] [--jwt-secret S | --no-auth] [--rules FILE]` on
/// the data directory `data`.
pub(crate) async fn serve(data: &Path, args: ServeArgs) -> Result<(), CliError> {
    let auth = args.auth()?;
    let rules = match &args.rules {
        Some(path) => {
            let rules = AccessRules::load(path)?;
            if matches!(auth, AuthMode::Disabled) {
                eprintln!(
                    "warning: --rules {} is ignored with --no-auth",
                    path.display()
                );
            }
            rules
        }
        None => AccessRules::allow_all(),
    };
    let auth_name = match auth {
        AuthMode::Disabled => "off",
        _ => "jwt",
    };
    // Before anything can announce us: from here on SIGINT/SIGTERM shut
    // down gracefully.
    let shutdown = topgun_server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .map_err(|source| CliError::Bind {
            addr: args.addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| CliError::Bind {
        addr: args.addr.clone(),
        source,
    })?;
    let (store, shown) = match &args.store {
        Some(url) => (store_of_url(url)?, redact(url)),
        None => (
            StoreConfig::DataDir(data.to_owned()),
            data.display().to_string(),
        ),
    };
    let mut config = ServerConfig::new(store);
    if let Some(lanes) = args.lanes {
        config.lanes = usize::from(lanes);
    }
    config.auth = auth;
    config.rules = rules;
    config.web_root = args.web.clone();
    let (ready, serving) = tokio::sync::oneshot::channel();
    config.ready = Some(ready);
    let web = args.web.clone();
    // Once the store is open: a script that goes on at this line finds
    // the data directory held.
    tokio::spawn(async move {
        if serving.await.is_ok() {
            // Scripts and tests parse this line: keep its format.
            eprintln!(
                "topgun server listening on ws://{local}/ws (data: {shown}, auth: {auth_name})"
            );
            if let Some(web) = web {
                eprintln!("serving {} at http://{local}/", web.display());
            }
        }
    });
    topgun_server::run(listener, config, shutdown).await?;
    Ok(())
}

/// The store of a `--store` URL: only PostgreSQL URLs are known.
fn store_of_url(url: &str) -> Result<StoreConfig, CliError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(StoreConfig::Postgres(PostgresOptions::new(url)))
    } else {
        Err(CliError::StoreUrl { url: redact(url) })
    }
}

/// `url` without its password (in the user part or as a `password=`
/// parameter) and without any other parameter, to print.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsed URL>".to_owned();
    };
    let (rest, params) = match rest.split_once('?') {
        Some((rest, _)) => (rest, "?…"),
        None => (rest, ""),
    };
    match rest.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{params}")
        }
        _ => format!("{scheme}://{rest}{params}"),
    }
}

/// Logs to stderr: `RUST_LOG` filters them (default `info`).
pub(crate) fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (none happens) would be harmless: ignore it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_never_printed() {
        assert_eq!(redact("postgres://u@h:5/d"), "postgres://u@h:5/d");
        assert_eq!(
            redact("postgres://u:s3cret@h:5/d"),
            "postgres://u:***@h:5/d"
        );
        assert_eq!(redact("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
        assert_eq!(
            redact("postgres://u@h/d?password=s3cret"),
            "postgres://u@h/d?…"
        );
        assert!(!redact("host=h password=s3cret").contains("s3cret"));
    }
}
