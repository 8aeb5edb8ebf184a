//! The harness of the CLI's process tests: the built `topgun` binary with a
//! clean environment, and `topgun serve` processes on 127.0.0.1.
// Each test file uses a part of the harness.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod data;
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary, with none of its environment variables inherited.
pub fn topgun_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_topgun"));
    for var in [
        "TOPGUN_DATA",
        "TOPGUN_SERVER",
        "TOPGUN_TOKEN",
        "TOPGUN_JWT_SECRET",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `topgun --data DIR [--server URL] ARGS…`, run to completion.
pub fn topgun(dir: &Path, server: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = topgun_cmd();
    cmd.arg("--data").arg(dir);
    if let Some(url) = server {
        cmd.args(["--server", url]);
    }
    cmd.args(args).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code; returns stdout.
pub fn expect(out: &Output, code: i32, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A `topgun serve` process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub url: String,
    /// The server's stderr, after the listening line.
    log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `topgun serve --data DIR --addr ADDR ARGS…` and waits for its
    /// listening line.
    pub fn start(data: &Path, addr: &str, args: &[&str]) -> Server {
        let mut child = topgun_cmd()
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--addr", addr])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        // Keeps draining stderr so the server never blocks on logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Nobody reads any more; keep draining.
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let (addr, url) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log.recv_timeout(left).expect("no listening line");
            if let Some(url) = parse_listening(&line) {
                let addr = url
                    .trim_start_matches("ws://")
                    .trim_end_matches("/ws")
                    .to_owned();
                break (addr, url);
            }
        };
        Server {
            child,
            addr,
            url,
            log,
        }
    }

    /// SIGKILL, like a crash or a power cut.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a graceful exit (code 0).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let log: Vec<String> = self.log.try_iter().collect();
        assert!(status.success(), "server exit {status}; log: {log:#?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already gone after `crash`/`stop`; an error is fine then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ws://ADDR/ws` from `topgun server listening on ws://ADDR/ws (data: …, auth: …)`.
pub fn parse_listening(line: &str) -> Option<String> {
    let rest = line.strip_prefix("topgun server listening on ")?;
    let (url, tail) = rest.split_once(' ')?;
    assert!(tail.starts_with("(data: ") && tail.contains(", auth: "));
    Some(url.to_owned())
}
