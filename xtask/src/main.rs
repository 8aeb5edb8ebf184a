//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask ci` runs everything CI runs, in order, stopping at the
//!   first failure: format check, clippy with warnings denied, every test
//!   (unit, integration, doc), and the docs with warnings denied.
//! - `cargo xtask bench` runs the benchmarks in release mode; each prints a
//!   table and writes its figures under `target/bench/`.
//!
//! Both start a throwaway PostgreSQL ([`postgres`]) for the tests and the
//! benchmark that need one.
//!
//! This crate has no dependencies so that it builds in a second.

mod postgres;

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
                shared_dir, server, postgres";

fn root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<(), String> {
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
                wasm_check()?;
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
];

/// Type-checks the wasm-ready crates for `wasm32-unknown-unknown` with
/// Debian's `rustc-web` toolchain and `-Zbuild-std` (rustup cannot add
/// targets on these machines). `.ci/run` installs the toolchain; without
/// it this step fails and says how to get it.
fn wasm_check() -> Result<(), String> {
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo_web = PathBuf::from("/usr/bin/cargo");
    if !rustc.exists() || !cargo_web.exists() {
        return Err(
            "step wasm needs Debian's wasm toolchain: apt-get install -y --no-install-recommends \
             rustc-web cargo-web rust-web-src lld-22 (.ci/run does this)"
                .into(),
        );
    }
    let mut cmd = Command::new(cargo_web);
    cmd.current_dir(root());
    cmd.args([
        "check",
        "-Zbuild-std=std,panic_abort",
        "--target",
        "wasm32-unknown-unknown",
        "--no-default-features",
    ]);
    for krate in WASM_CRATES {
        cmd.args(["-p", krate]);
    }
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", rustc)
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld-22")
        // A separate target dir: the two toolchains' artefacts do not mix.
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        // rustup's environment would point Debian's cargo at rustup's rustc.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    run("wasm", cmd)
}

fn bench(names: &[String]) -> Result<(), String> {
    let known: Vec<&str> = BENCHES.iter().map(|b| b.1).collect();
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
    eprintln!(
        "figures written under {}",
        root().join("target/bench").display()
    );
    Ok(())
}
