//! Several `topgun` processes on one data directory: the first holds it
//! (the leader), the others go through it over its socket; when the leader
//! is killed a follower takes over. Real processes, a real server.
// Sharing a data directory needs Unix domain sockets.
#![cfg(unix)]
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{expect, topgun, topgun_cmd, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A long-running `topgun` process with its stderr (and stdout) as lines.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    rx
}

impl Proc {
    /// `topgun -v --data DIR [--server URL] ARGS…` with piped stdio.
    fn spawn(dir: &Path, server: Option<&str>, args: &[&str]) -> Proc {
        let mut cmd = topgun_cmd();
        cmd.arg("-v")
            .arg("--data")
            .arg(dir)
            .args(["--timeout", "60"]);
        if let Some(url) = server {
            cmd.args(["--server", url]);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Proc {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// The role line `-v` prints once the data directory is open.
    fn role(&self) -> String {
        let line = self.stderr.recv_timeout(WAIT).expect("no role line");
        line.rsplit(": ").next().unwrap().to_owned()
    }

    /// The next `op N` line (a durable write), skipping other messages.
    fn next_ack(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stderr.recv_timeout(left).ok()?;
            if let Some(id) = line.strip_prefix("op ") {
                return Some(id.parse().unwrap());
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits for exit code 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "exit {status}; stderr {rest:#?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn import_line(key: &str, value: u64) -> String {
    format!("{{\"key\":\"{key}\",\"value\":{value}}}")
}

/// `list MAP` of `dir` as key → value.
fn list(dir: &Path, server: Option<&str>, map: &str) -> BTreeMap<String, serde_json::Value> {
    let out = expect(&topgun(dir, server, &["list", map]), 0, "list");
    out.lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                row["key"].as_str().unwrap().to_owned(),
                row["value"].clone(),
            )
        })
        .collect()
}

#[test]
fn puts_from_separate_processes_reach_a_watch_holding_the_directory_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let watch = Proc::spawn(dir.path(), None, &["watch", "notes"]);
    assert_eq!(watch.role(), "leader");
    for n in 0..100u64 {
        let key = format!("k{}", n % 10);
        let out = topgun(dir.path(), None, &["put", "notes", &key, &n.to_string()]);
        expect(&out, 0, "put through the watch");
    }
    let status = expect(&topgun(dir.path(), None, &["status"]), 0, "status");
    assert!(status.contains("\"role\":\"follower\""), "{status}");
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..100 {
        let line = watch.stdout.recv_timeout(WAIT).expect("a change line");
        let change: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.entry(change["key"].as_str().unwrap().to_owned())
            .or_default()
            .push(change["value"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 10);
    for (key, values) in &seen {
        let digit: u64 = key[1..].parse().unwrap();
        let expected: Vec<u64> = (0..10).map(|i| i * 10 + digit).collect();
        assert_eq!(values, &expected, "{key}: every write, in order");
    }
    assert!(watch.stdout.try_recv().is_err(), "no change twice");
}

#[test]
fn a_follower_takes_over_within_a_second_of_the_leader_being_killed() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_dir.path(), "127.0.0.1:0", &["--no-auth"]);
    let url = server.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let leader = Proc::spawn(dir.path(), Some(&url), &["watch", "notes"]);
    assert_eq!(leader.role(), "leader");
    let mut writers: Vec<Proc> = (0..4)
        .map(|_| Proc::spawn(dir.path(), Some(&url), &["import", "notes"]))
        .collect();
    for w in &writers {
        assert_eq!(w.role(), "follower");
    }
    // key → value of every acknowledged write.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut round = |writers: &mut [Proc], n: u64, timeout: Duration| -> Vec<Instant> {
        let mut at = Vec::new();
        for (i, w) in writers.iter_mut().enumerate() {
            let key = format!("w{i}-{n}");
            w.send(&import_line(&key, n));
            if w.next_ack(timeout).is_some() {
                acked.insert(key, n);
                at.push(Instant::now());
            }
        }
        at
    };
    for n in 0..20 {
        assert_eq!(round(&mut writers, n, WAIT).len(), 4);
    }
    let killed = Instant::now();
    drop(leader); // SIGKILL
    let first_after = round(&mut writers, 20, WAIT);
    assert_eq!(first_after.len(), 4, "every writer goes on");
    let takeover = first_after[0].duration_since(killed);
    assert!(
        takeover < Duration::from_secs(1),
        "a new leader answered after {takeover:?}"
    );
    for n in 21..40 {
        assert_eq!(round(&mut writers, n, WAIT).len(), 4);
    }
    for w in writers {
        w.finish(); // each waits until the server acknowledged everything
    }
    let fresh = tempfile::tempdir().unwrap();
    let on_server = list(fresh.path(), Some(&url), "notes");
    let expected: BTreeMap<String, serde_json::Value> = acked
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    assert_eq!(on_server, expected, "every acknowledged write, once");
    let local = list(dir.path(), None, "notes");
    assert_eq!(local, expected);
    let status = expect(&topgun(dir.path(), None, &["status"]), 0, "status");
    assert!(status.contains("\"pendingOps\":0"), "{status}");
}

#[test]
fn of_eight_processes_starting_at_once_exactly_one_leads() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs: Vec<Proc> = (0..8)
        .map(|_| Proc::spawn(dir.path(), None, &["import", "m"]))
        .collect();
    let roles: Vec<String> = procs.iter().map(Proc::role).collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(roles.iter().filter(|r| *r == "follower").count(), 7);
    for n in 0..10u64 {
        for (i, p) in procs.iter_mut().enumerate() {
            p.send(&import_line(&format!("p{i}-{n}"), n));
            assert!(p.next_ack(WAIT).is_some(), "process {i} write {n}");
        }
    }
    for p in procs {
        p.finish();
    }
    let keys: BTreeSet<String> = list(dir.path(), None, "m").into_keys().collect();
    assert_eq!(keys.len(), 80, "{keys:?}");
}

#[test]
fn a_directory_a_server_holds_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path(), "127.0.0.1:0", &["--no-auth"]);
    let out = topgun(dir.path(), None, &["get", "m", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("already open in another process"),
        "{stderr}"
    );
}

#[test]
fn a_write_with_server_through_a_leader_without_one_reaches_the_server() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_dir.path(), "127.0.0.1:0", &["--no-auth"]);
    let dir = tempfile::tempdir().unwrap();
    // The leader has no server.
    let watch = Proc::spawn(dir.path(), None, &["watch", "notes"]);
    assert_eq!(watch.role(), "leader");
    let out = topgun(dir.path(), Some(&server.url), &["put", "notes", "k", "7"]);
    expect(&out, 0, "put with --server through the leader");
    let fresh = tempfile::tempdir().unwrap();
    let got = topgun(fresh.path(), Some(&server.url), &["get", "notes", "k"]);
    assert_eq!(expect(&got, 0, "get from the server"), "7\n");
}
