//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask ci` runs everything CI runs, in order, stopping at the
//!   first failure: format check, clippy with warnings denied, every test
//!   (unit, integration, doc), the docs with warnings denied, and the
//!   browser build: the wasm-ready crates checked for wasm32 and the
//!   IndexedDB store tested in headless Chromium ([`wasm`]).
//! - `cargo xtask bench` runs the benchmarks in release mode; each prints a
//!   table and writes its figures under `target/bench/`.
//!
//! Both start a throwaway PostgreSQL ([`postgres`]) for the tests and the
//! benchmark that need one, and install what is missing from Debian's
//! packages ([`apt`]).
//!
//! This crate has no dependencies so that it builds in a second.

mod apt;
mod postgres;
mod wasm;

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Feature flags that the native CI build turns on, so that every backend
/// is compiled, linted and tested.
const NATIVE_FEATURES: &str = "topgun-storage/redb,topgun-client/redb,topgun-server/postgres";

/// Benchmarks: (package, bench target, features).
const BENCHES: &[(&str, &str, &str)] = &[
    ("topgun-storage", "storage", "redb"),
    ("topgun-client", "client", "redb"),
    ("topgun-client", "sync", "redb"),
    ("topgun-client", "shared_dir", "redb"),
    ("topgun-server", "server", "redb"),
    ("topgun-server", "postgres", "postgres"),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("demo") => demo(),
        Some("help" | "-h" | "--help") | None => {
            eprintln!("{}", HELP);
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci [STEP…]    run the CI steps (all by default): fmt, clippy, test, doc, wasm
  bench [NAME…] run the benchmarks (all by default): storage, client, sync,
                shared_dir, server, postgres, browser
  demo          build the browser demo (a shared todo list) and serve it
                with a sync server at http://127.0.0.1:8080/";

fn root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A port of 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a port: {e}"))
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(step: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {step}: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: could not start {cmd:?}: {e}"))?;
    eprintln!(
        "<== {step}: {status} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("step {step} failed ({status})"))
    }
}

/// [`run`], failing also when the compiler warned about this workspace's
/// code.
fn run_denying_warnings(step: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {step}: {cmd:?}");
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("{step}: could not start {cmd:?}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    eprintln!(
        "<== {step}: {} in {:.1}s",
        out.status,
        start.elapsed().as_secs_f64()
    );
    let warnings = stderr
        .lines()
        .filter(|line| line.starts_with("crates/") && line.contains(": warning: "))
        .count();
    if !out.status.success() {
        Err(format!("step {step} failed ({})", out.status))
    } else if warnings > 0 {
        Err(format!(
            "step {step}: {warnings} warnings in the workspace's code"
        ))
    } else {
        Ok(())
    }
}

fn ci(steps: &[String]) -> Result<(), String> {
    const ALL: &[&str] = &["fmt", "clippy", "test", "doc", "wasm"];
    let chosen: Vec<&str> = if steps.is_empty() {
        ALL.to_vec()
    } else {
        steps.iter().map(String::as_str).collect()
    };
    if let Some(bad) = chosen.iter().find(|s| !ALL.contains(s)) {
        return Err(format!("unknown ci step {bad:?}; steps are {ALL:?}"));
    }
    let start = Instant::now();
    for step in chosen {
        let mut cmd = cargo();
        match step {
            "fmt" => {
                cmd.args(["fmt", "--all", "--", "--check"]);
            }
            "clippy" => {
                cmd.args([
                    "clippy",
                    "--locked",
                    "--workspace",
                    "--all-targets",
                    "--features",
                ]);
                cmd.args([NATIVE_FEATURES, "--", "-D", "warnings"]);
            }
            "test" => {
                // Not `--all-targets`: that would run the benchmarks (they are
                // `harness = false` programs) unoptimised.
                cmd.args([
                    "test",
                    "--locked",
                    "--workspace",
                    "--lib",
                    "--bins",
                    "--tests",
                    "--examples",
                ]);
                cmd.args(["--features", NATIVE_FEATURES]);
                let pg = postgres::Postgres::start(&root())?;
                cmd.env(postgres::URL_ENV, &pg.url)
                    .env(postgres::RESTART_ENV, &pg.restart_script);
                run("test", cmd)?;
                drop(pg);
                // Doctests are a target of their own.
                cmd = cargo();
                cmd.args([
                    "test",
                    "--locked",
                    "--workspace",
                    "--doc",
                    "--features",
                    NATIVE_FEATURES,
                ]);
                run("doctest", cmd)?;
                continue;
            }
            "wasm" => {
                wasm_steps()?;
                continue;
            }
            "doc" => {
                cmd.args([
                    "doc",
                    "--locked",
                    "--workspace",
                    "--no-deps",
                    "--features",
                    NATIVE_FEATURES,
                ]);
                cmd.env("RUSTDOCFLAGS", "-D warnings");
            }
            _ => unreachable!("validated above"),
        }
        run(step, cmd)?;
    }
    eprintln!("ci passed in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Crates that must build for `wasm32-unknown-unknown` (the browser build
/// stands on them), with the features that exist there.
const WASM_CRATES: &[&str] = &[
    "topgun-core",
    "topgun-storage",
    "topgun-query",
    "topgun-sync",
    "topgun-client",
    "topgun-wasm",
];

/// The browser build: checks the wasm-ready crates for
/// `wasm32-unknown-unknown`, then runs the browser tests (the `Store`
/// conformance suite on IndexedDB) in headless Chromium.
fn wasm_steps() -> Result<(), String> {
    let wasm = wasm::Wasm::prepare(&root())?;
    let mut cmd = wasm.cargo("check");
    cmd.arg("--no-default-features");
    for krate in WASM_CRATES {
        cmd.args(["-p", krate]);
    }
    // The native clippy step never sees wasm-only code: deny its
    // warnings here (not with RUSTFLAGS, which would rebuild std).
    cmd.args([
        "--features",
        "topgun-client/indexeddb",
        "--message-format",
        "short",
    ]);
    run_denying_warnings("wasm check", cmd)?;
    let mut cmd = wasm.cargo("test");
    cmd.args([
        "-p",
        "topgun-storage",
        "--features",
        "indexeddb",
        "--test",
        "indexeddb",
    ]);
    run("wasm test: IndexedDB store (headless Chromium)", cmd)?;
    // The JS API, with a real server for the sync test.
    let server = wasm::TestServer::start(&root(), None)?;
    let mut cmd = wasm.cargo("test");
    cmd.args(["-p", "topgun-wasm", "--test", "browser"])
        .env("TOPGUN_TEST_SERVER", &server.url);
    run("wasm test: JS API and sync (headless Chromium)", cmd)?;
    drop(server);
    // The demo page in tabs and profiles of a real browser.
    let web = wasm.build_web()?;
    let server = wasm::TestServer::start(&root(), Some(&web))?;
    wasm::end_to_end(&root(), &server)
}

/// The browser bench: TopGun's JS API beside raw IndexedDB and Dexie in
/// headless Chromium (`crates/topgun-wasm/bench`), into
/// `target/bench/browser.json`; with `TOPGUN_BENCH_BASELINE` set to another
/// build's package, that build too, with each scenario's ratio to it.
fn browser_bench() -> Result<(), String> {
    let wasm = wasm::Wasm::prepare(&root())?;
    let web = wasm.build_web()?;
    let dir = root().join("crates/topgun-wasm/bench");
    if !dir.join("node_modules/esbuild").exists() {
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        run("npm ci (browser bench)", npm)?;
    }
    let mut node = Command::new("node");
    node.current_dir(&dir)
        .arg("run.mjs")
        .arg("--pkg")
        .arg(web.join("pkg"))
        .arg("--out")
        .arg(root().join("target/bench/browser.json"));
    // Another build's package (a copy of `target/web/pkg`), run beside
    // this one in the same page.
    if let Some(baseline) = std::env::var_os("TOPGUN_BENCH_BASELINE") {
        node.arg("--baseline").arg(baseline);
    }
    run("bench browser", node)
}

/// `cargo xtask demo`: builds the browser demo and serves it with a sync
/// server at http://127.0.0.1:8080/ until Ctrl-C.
fn demo() -> Result<(), String> {
    let wasm = wasm::Wasm::prepare(&root())?;
    let web = wasm.build_web()?;
    let mut build = cargo();
    build.args(["build", "--locked", "--release", "-p", "topgun-cli"]);
    run("build topgun (release)", build)?;
    eprintln!("==> demo: open http://127.0.0.1:8080/ in several tabs and browsers");
    let mut serve = Command::new(root().join("target/release/topgun"));
    serve
        .args(["serve", "--no-auth", "--addr", "127.0.0.1:8080", "--data"])
        .arg(root().join("target/demo-data"))
        .arg("--web")
        .arg(web);
    run("demo", serve)
}

fn bench(names: &[String]) -> Result<(), String> {
    let mut known: Vec<&str> = BENCHES.iter().map(|b| b.1).collect();
    known.push("browser");
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(format!("unknown bench {bad:?}; benches are {known:?}"));
    }
    for (package, target, features) in BENCHES {
        if !names.is_empty() && !names.iter().any(|n| n == target) {
            continue;
        }
        let mut cmd = cargo();
        cmd.args([
            "bench",
            "--locked",
            "-p",
            package,
            "--bench",
            target,
            "--features",
            features,
        ]);
        // The PostgreSQL bench gets a throwaway server of its own.
        let pg = if *features == "postgres" {
            let pg = postgres::Postgres::start(&root())?;
            cmd.env(postgres::URL_ENV, &pg.url);
            Some(pg)
        } else {
            None
        };
        run(&format!("bench {target}"), cmd)?;
        drop(pg);
    }
    if names.is_empty() || names.iter().any(|n| n == "browser") {
        browser_bench()?;
    }
    eprintln!(
        "figures written under {}",
        root().join("target/bench").display()
    );
    Ok(())
}
