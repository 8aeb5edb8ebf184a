//! `topgun serve`, `sync`, `watch` and `--server` end to end: real
//! processes of the built binary, real sockets on 127.0.0.1 (port 0, the
//! port read from the server's listening line), temporary data dirs.
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::data::{assert_same_records, read_server_dir, read_store, write_pending_puts};
use common::{expect, text, topgun, topgun_cmd, Server};

#[test]
fn two_clients_sync_through_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"), "127.0.0.1:0", &["--no-auth"]);
    let url = server.url.as_str();
    let alice = tmp.path().join("alice");
    let bob = tmp.path().join("bob");

    // Alice writes offline; `status` shows it pending.
    let milk = json!({"title": "milk"});
    let out = topgun(&alice, None, &["put", "todos", "t1", &milk.to_string()]);
    expect(&out, 0, "offline put");
    let status: Value =
        serde_json::from_str(&expect(&topgun(&alice, None, &["status"]), 0, "status")).unwrap();
    assert_eq!(status["pendingOps"], 1);

    // `sync` pushes it.
    expect(&topgun(&alice, Some(url), &["sync"]), 0, "alice sync");
    let status: Value = serde_json::from_str(&expect(
        &topgun(&alice, Some(url), &["status"]),
        0,
        "status online",
    ))
    .unwrap();
    assert_eq!(status["pendingOps"], 0, "{status}");
    assert_eq!(status["state"], "ONLINE");

    // Bob, on a fresh data dir, reads it through the server.
    let got = expect(
        &topgun(&bob, Some(url), &["get", "todos", "t1"]),
        0,
        "bob get",
    );
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), milk);

    // Bob removes it; the removal reached the server when `remove` exits.
    expect(
        &topgun(&bob, Some(url), &["remove", "todos", "t1"]),
        0,
        "bob remove",
    );
    expect(&topgun(&alice, Some(url), &["sync"]), 0, "alice sync again");
    let out = topgun(&alice, None, &["get", "todos", "t1"]);
    expect(&out, 1, "alice get after bob's remove");

    server.stop();
}

/// Reads stdout lines of a child on a thread.
fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn watch_prints_remote_changes_as_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"), "127.0.0.1:0", &["--no-auth"]);
    let mut watch = topgun_cmd()
        .arg("--data")
        .arg(tmp.path().join("watcher"))
        .args(["--server", &server.url, "watch", "todos"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(watch.stdout.take().unwrap());

    let writer = tmp.path().join("writer");
    let value = json!({"title": "bread", "n": 2});
    let out = topgun(
        &writer,
        Some(&server.url),
        &["put", "todos", "t9", &value.to_string()],
    );
    expect(&out, 0, "put");
    let line = lines
        .recv_timeout(Duration::from_secs(8))
        .expect("watch printed nothing");
    let change: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(change["key"], "t9", "{line}");
    assert_eq!(change["value"], value);
    assert_eq!(change["oldValue"], Value::Null);
    assert_eq!(change["origin"], "remote");
    // millis:counter:nodeId, the writer's node id.
    let status: Value =
        serde_json::from_str(&expect(&topgun(&writer, None, &["status"]), 0, "status")).unwrap();
    let timestamp = change["timestamp"].as_str().unwrap();
    let parts: Vec<&str> = timestamp.splitn(3, ':').collect();
    assert!(parts[0].parse::<u64>().is_ok() && parts[1].parse::<u32>().is_ok());
    assert_eq!(parts[2], status["nodeId"].as_str().unwrap());

    watch.kill().unwrap();
    watch.wait().unwrap();
    server.stop();
}

#[test]
fn jwt_servers_refuse_clients_without_a_token_and_serve_needs_an_auth_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--jwt-secret", "s3cret"],
    );
    let client = tmp.path().join("client");
    let started = Instant::now();
    let out = topgun(&client, Some(&server.url), &["put", "m", "k", "1"]);
    expect(&out, 4, "put without a token");
    let err = text(&out.stderr);
    assert!(err.contains("authentication"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an auth failure ends the wait at once"
    );
    // The write is kept locally, pending.
    let status: Value =
        serde_json::from_str(&expect(&topgun(&client, None, &["status"]), 0, "status")).unwrap();
    assert_eq!(status["pendingOps"], 1);
    server.stop();

    // Neither --jwt-secret nor --no-auth (nor TOPGUN_JWT_SECRET).
    let out = topgun_cmd()
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    expect(&out, 2, "serve without auth choice");
    let err = text(&out.stderr);
    assert!(
        err.contains("--jwt-secret") && err.contains("--no-auth"),
        "{err}"
    );
    // Both is a usage error too.
    let out = topgun_cmd()
        .args(["serve", "--no-auth", "--jwt-secret", "x"])
        .output()
        .unwrap();
    expect(&out, 2, "serve with both");
    // `sync` without a server.
    let out = topgun(&client, None, &["sync"]);
    expect(&out, 2, "sync without --server");
    assert!(text(&out.stderr).contains("--server"));
}

#[test]
fn an_unreachable_server_times_out_with_exit_4_and_keeps_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind, read it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let dir = tmp.path();
    let out = topgun(dir, Some(&url), &["--timeout", "0.5", "put", "m", "k", "7"]);
    expect(&out, 4, "put to nowhere");
    let err = text(&out.stderr);
    assert!(
        err.contains("not synced") && err.contains("1 pending"),
        "{err}"
    );
    assert_eq!(
        expect(&topgun(dir, None, &["get", "m", "k"]), 0, "get"),
        "7\n"
    );
}

// ---------------------------------------------------------------------
// The crash test.

const CRASH_MAP: &str = "crash";
const CRASH_OPS: usize = 5_000;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("topgun.redb"), to.join("topgun.redb")).unwrap();
}

fn random_below(n: u64) -> u64 {
    std::hash::RandomState::new().build_hasher().finish() % n
}

/// Times a full `topgun sync` of the template's ops, and one with nothing
/// left to push (connecting, waiting for the server's auth answer, the
/// pull): between the two the ops are pushed. Machines differ, so the
/// crash test aims its kills with this.
fn push_window(dir: &Path, template: &Path) -> std::ops::Range<u64> {
    let client = dir.join("client");
    copy_dir(template, &client);
    let server = Server::start(&dir.join("server"), "127.0.0.1:0", &["--no-auth"]);
    let timed_sync = || {
        let started = Instant::now();
        let out = topgun(&client, Some(&server.url), &["sync"]);
        expect(&out, 0, "calibration sync");
        u64::try_from(started.elapsed().as_millis()).unwrap()
    };
    let full = timed_sync();
    let idle = timed_sync();
    server.stop();
    idle..full.max(idle + 50)
}

/// Runs `topgun sync` until it exits 0 (at most `tries` times).
fn sync_until_done(client: &Path, url: &str, tries: usize) {
    for attempt in 1..=tries {
        let out = topgun(client, Some(url), &["--timeout", "20", "sync"]);
        if out.status.success() {
            return;
        }
        assert!(
            attempt < tries,
            "sync never converged: {}",
            text(&out.stderr)
        );
    }
}

/// "The server is killed (SIGKILL) mid-push and restarted: no acked op is
/// lost, no op applied twice, the client converges." With one, two and
/// three commit lanes (redb files committed apart).
#[test]
fn a_server_killed_mid_push_loses_no_acked_op_and_the_client_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let written = write_pending_puts(&template, CRASH_MAP, CRASH_OPS);
    let push = push_window(&tmp.path().join("calibration"), &template);
    eprintln!("a full sync pushes between {push:?} ms after it starts");

    for round in 0..3 {
        let round_dir = tmp.path().join(format!("round{round}"));
        let client_dir = round_dir.join("client");
        let server_dir = round_dir.join("server");
        copy_dir(&template, &client_dir);

        // One commit lane in round 0, two in round 1, three in round 2.
        let lanes = (round + 1).to_string();
        let server = Server::start(
            &server_dir,
            "127.0.0.1:0",
            &["--no-auth", "--lanes", &lanes],
        );
        let addr = server.addr.clone();
        let mut sync = topgun_cmd()
            .arg("--data")
            .arg(&client_dir)
            .args(["--server", &server.url, "--timeout", "30", "sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Early, middle and late in the push (batches commit late in it).
        let percent = 35 + 20 * round + random_below(20);
        let delay = push.start + (push.end - push.start) * percent / 100;
        std::thread::sleep(Duration::from_millis(delay));
        server.crash();

        // What the killed server made durable is exactly what the client
        // wrote, nothing else.
        let durable = read_server_dir(&server_dir, CRASH_MAP);
        assert_same_records(&durable, &written, "after the crash");
        eprintln!(
            "round {round}: server killed {delay} ms after the sync started, \
             {} of {CRASH_OPS} ops durable",
            durable.len()
        );

        let restarted = if round == 1 {
            // The client crashes too; then every op it holds as acked
            // (clean record) must be durable on the server.
            sync.kill().unwrap();
            sync.wait().unwrap();
            let (client_now, stats) = read_store(&client_dir.join("topgun.redb"), CRASH_MAP);
            let acked: Vec<&String> = client_now
                .values()
                .filter(|r| !r.dirty)
                .map(|r| &r.key)
                .collect();
            assert_eq!(
                stats.pending_ops as usize,
                client_now.values().filter(|r| r.dirty).count()
            );
            for key in &acked {
                assert!(durable.contains_key(*key), "acked op {key} was lost");
            }
            eprintln!("round {round}: {} ops acked before the crash", acked.len());
            // A new server process on the same data dir, any port.
            let restarted = Server::start(&server_dir, "127.0.0.1:0", &["--no-auth"]);
            sync_until_done(&client_dir, &restarted.url, 3);
            restarted
        } else {
            // Same data dir, same port: the running `sync` reconnects.
            let restarted = Server::start(&server_dir, &addr, &["--no-auth"]);
            let out = sync.wait_with_output().unwrap();
            if !out.status.success() {
                eprintln!(
                    "round {round}: the interrupted sync gave up: {}",
                    text(&out.stderr)
                );
                sync_until_done(&client_dir, &restarted.url, 3);
            }
            restarted
        };
        restarted.stop();

        // Converged: the server has every op exactly as written.
        let server_final = read_server_dir(&server_dir, CRASH_MAP);
        assert_eq!(server_final.len(), CRASH_OPS, "round {round}");
        assert_same_records(&server_final, &written, "after convergence");
        let (client_final, stats) = read_store(&client_dir.join("topgun.redb"), CRASH_MAP);
        assert_eq!(stats.pending_ops, 0, "round {round}: client still pending");
        assert_eq!(stats.dirty_records, 0);
        assert_same_records(&client_final, &written, "client after convergence");
    }
}

/// `serve --web DIR` serves DIR's files over HTTP beside `/ws` and
/// `/health` (the browser demo's page next to its sync server).
#[test]
fn serve_web_serves_static_files_beside_the_sync_endpoint() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<h1>todos</h1>").unwrap();
    let web_dir = web.path().to_str().unwrap();
    let server =
        common::Server::start(data.path(), "127.0.0.1:0", &["--no-auth", "--web", web_dir]);
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(page.ends_with("<h1>todos</h1>"), "{page}");
    assert!(get("/missing.js").starts_with("HTTP/1.1 404"));
    assert!(get("/health").starts_with("HTTP/1.1 200"));
}
