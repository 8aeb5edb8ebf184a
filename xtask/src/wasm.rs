//! The browser build in CI: a wasm32 toolchain, wasm-bindgen's test
//! runner and headless Chromium, each installed when missing; then the
//! wasm-ready crates are checked and the browser tests run in Chromium.
//!
//! The toolchain is rustup's `wasm32-unknown-unknown` target where it is
//! installed (a developer's laptop), else Debian's `rustc-web` compiling
//! std from source (`-Zbuild-std`): rustup cannot add targets on the CI
//! machines. `wasm-bindgen-cli` must match the `wasm-bindgen` crate in
//! `Cargo.lock`; it is built once into `target/wasm-tools`.

use crate::apt;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

/// Debian's wasm toolchain: packages and the paths they provide.
const DEBIAN_TOOLCHAIN: &[(&str, &str)] = &[
    ("rustc-web", "/usr/bin/rustc"),
    ("cargo-web", "/usr/bin/cargo"),
    ("rust-web-src", "/usr/lib/rustlib/src/rust"),
    ("lld-22", "/usr/bin/wasm-ld-22"),
];

/// Headless Chromium and its WebDriver.
const BROWSER: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
];

/// A prepared wasm32 toolchain.
#[derive(Debug)]
pub(crate) struct Wasm {
    root: PathBuf,
    /// rustup's target is installed: no build-std.
    rustup: bool,
    tools: PathBuf,
}

impl Wasm {
    /// Installs what is missing and returns the toolchain.
    pub(crate) fn prepare(root: &Path) -> Result<Self, String> {
        let rustup = rustup_has_target();
        let mut wanted: Vec<(&str, &str)> = BROWSER.to_vec();
        if !rustup {
            wanted.extend_from_slice(DEBIAN_TOOLCHAIN);
        }
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(_, path)| !Path::new(path).exists())
            .map(|(package, _)| *package)
            .collect();
        if !missing.is_empty() {
            apt::install(&missing)?;
        }
        let wasm = Self {
            root: root.to_owned(),
            rustup,
            tools: root.join("target/wasm-tools"),
        };
        wasm.install_bindgen()?;
        Ok(wasm)
    }

    /// `cargo <subcommand>` for wasm32, run from the workspace root.
    pub(crate) fn cargo(&self, subcommand: &str) -> Command {
        let mut cmd = if self.rustup {
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        } else {
            let mut cmd = Command::new("/usr/bin/cargo");
            cmd.env("RUSTC_BOOTSTRAP", "1")
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTDOC", "/usr/bin/rustdoc")
                // rustc-web ships no rust-lld.
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld-22")
                // rustup's environment would point Debian's cargo at
                // rustup's rustc.
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO");
            cmd
        };
        cmd.current_dir(&self.root).arg(subcommand);
        if !self.rustup {
            cmd.arg("-Zbuild-std=std,panic_abort");
        }
        cmd.args(["--target", TARGET])
            // A target dir of its own: the toolchains' artefacts do not mix.
            .env("CARGO_TARGET_DIR", self.root.join("target/wasm"))
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                self.tools.join("bin/wasm-bindgen-test-runner"),
            )
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            // A cold page load of a debug build takes a while on 2 cores.
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120");
        cmd
    }

    /// Builds the browser demo into `target/web`: `topgun-wasm` in release
    /// for wasm32, turned into an ES module with its TypeScript types by
    /// `wasm-bindgen --target web` (`target/web/pkg`), and the demo page
    /// (`crates/topgun-wasm/demo`) beside it.
    pub(crate) fn build_web(&self) -> Result<PathBuf, String> {
        let mut cmd = self.cargo("build");
        cmd.args(["--release", "-p", "topgun-wasm"]);
        crate::run("wasm build topgun-wasm (release)", cmd)?;
        let web = self.root.join("target/web");
        let wasm = self
            .root
            .join("target/wasm/wasm32-unknown-unknown/release/topgun_wasm.wasm");
        let mut bindgen = Command::new(self.tools.join("bin/wasm-bindgen"));
        bindgen
            .args(["--target", "web", "--out-dir"])
            .arg(web.join("pkg"))
            .arg(&wasm);
        crate::run("wasm-bindgen --target web", bindgen)?;
        let demo = self.root.join("crates/topgun-wasm/demo");
        let entries =
            std::fs::read_dir(&demo).map_err(|e| format!("reading {}: {e}", demo.display()))?;
        for entry in entries.filter_map(Result::ok) {
            std::fs::copy(entry.path(), web.join(entry.file_name()))
                .map_err(|e| format!("copying {}: {e}", entry.path().display()))?;
        }
        Ok(web)
    }

    /// Builds `wasm-bindgen-cli` at the version of `Cargo.lock` into
    /// `target/wasm-tools`, unless it is there already.
    fn install_bindgen(&self) -> Result<(), String> {
        let version = locked_version(&self.root, "wasm-bindgen")?;
        let bindgen = self.tools.join("bin/wasm-bindgen");
        let installed = Command::new(&bindgen)
            .arg("--version")
            .output()
            .is_ok_and(|out| {
                String::from_utf8_lossy(&out.stdout).trim() == format!("wasm-bindgen {version}")
            });
        if installed {
            return Ok(());
        }
        eprintln!("==> wasm: building wasm-bindgen-cli {version} (a few minutes, once)");
        // Not `--locked`: its lockfile pins a crate version the registry
        // may no longer serve.
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &version,
            "--root",
        ])
        .arg(&self.tools);
        crate::run("wasm-bindgen-cli", cmd)
    }
}

/// Type-checks the JS API's TypeScript types, then runs the browser
/// end-to-end tests (`tests/browser-e2e`, Playwright on headless Chromium)
/// against the demo served by `server`; the screenshot of the converged
/// page lands in `target/e2e/`.
pub(crate) fn end_to_end(root: &Path, server: &TestServer) -> Result<(), String> {
    let dir = root.join("tests/browser-e2e");
    let installed = ["playwright-core", "typescript"]
        .iter()
        .all(|package| dir.join("node_modules").join(package).exists());
    if !installed {
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        crate::run("npm ci (tests/browser-e2e)", npm)?;
    }
    // The generated TypeScript types, as an app written in TypeScript
    // uses them (`api-types.ts`, strict).
    let mut tsc = Command::new("node");
    tsc.current_dir(&dir)
        .args(["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"]);
    crate::run("TypeScript check of the JS API's types", tsc)?;
    let out = root.join("target/e2e");
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut node = Command::new("node");
    node.current_dir(&dir)
        .arg("e2e.mjs")
        .env("TOPGUN_E2E_URL", &server.page)
        .env("TOPGUN_E2E_OUT", &out)
        .env("CHROMIUM", BROWSER[0].1);
    crate::run("browser end-to-end (Playwright, headless Chromium)", node)
}

/// Whether rustup's `wasm32-unknown-unknown` target is installed.
fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
}

/// The version of `package` in `Cargo.lock`.
fn locked_version(root: &Path, package: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == name {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
            {
                return Ok(version.to_owned());
            }
        }
    }
    Err(format!("{package} is not in Cargo.lock"))
}

/// A `topgun serve` process for the browser tests, on a free port of
/// 127.0.0.1 with a fresh data directory; killed when dropped.
#[derive(Debug)]
pub(crate) struct TestServer {
    /// The WebSocket endpoint.
    pub(crate) url: String,
    /// The web root's URL (with a web root).
    pub(crate) page: String,
    child: std::process::Child,
    data: PathBuf,
}

impl TestServer {
    /// Builds the `topgun` binary and starts it (serving `web` as static
    /// files, if given); returns once it accepts connections.
    pub(crate) fn start(root: &Path, web: Option<&Path>) -> Result<Self, String> {
        let mut build = crate::cargo();
        build.args(["build", "--locked", "-p", "topgun-cli"]);
        crate::run("build topgun", build)?;
        let port = crate::free_port()?;
        let data = root.join(format!("target/wasm-e2e-data-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        let mut serve = Command::new(root.join("target/debug/topgun"));
        serve
            .args(["serve", "--no-auth", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(&data);
        if let Some(web) = web {
            serve.arg("--web").arg(web);
        }
        let child = serve
            .spawn()
            .map_err(|e| format!("starting topgun serve: {e}"))?;
        let server = Self {
            url: format!("ws://127.0.0.1:{port}/ws"),
            page: format!("http://127.0.0.1:{port}/"),
            child,
            data,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("topgun serve did not listen within 30 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("==> wasm: topgun serve at {}", server.url);
        Ok(server)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
