//! The `topgun` binary end to end: each test runs the built binary against
//! its own temporary data directory and checks stdout, stderr and the exit
//! code, as a script would.
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary, with no `TOPGUN_DATA` inherited from the environment.
fn topgun_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_topgun"));
    cmd.env_remove("TOPGUN_DATA");
    cmd
}

/// Runs `topgun --data DIR ARGS…`.
fn topgun(dir: &Path, args: &[&str]) -> Output {
    topgun_cmd()
        .arg("--data")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = topgun(dir, args);
    assert!(
        out.status.success(),
        "topgun {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = topgun(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "topgun {args:?}: stdout {:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    String::from_utf8(out.stderr).unwrap()
}

/// Parses JSON lines.
fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn keys(stdout: &str) -> Vec<String> {
    lines(stdout)
        .into_iter()
        .map(|row| row["key"].as_str().unwrap().to_owned())
        .collect()
}

/// A data dir with users of various ages.
fn people(dir: &Path) {
    for (key, name, age) in [
        ("carol", "Carol", 41),
        ("alice", "Alice", 30),
        ("dave", "Dave", 17),
        ("bob", "Bob", 25),
    ] {
        let value = json!({"name": name, "age": age}).to_string();
        ok(dir, &["put", "users", key, &value]);
    }
}

#[test]
fn put_get_round_trips_nested_json_and_persists() {
    let tmp = tempfile::tempdir().unwrap();
    // The data dir is created if missing.
    let dir = tmp.path().join("new/db");
    let value = json!({"name": "Alice", "age": 30, "tags": ["a", {"deep": [1.5, null, true]}]});
    let out = ok(&dir, &["put", "users", "alice", &value.to_string()]);
    assert_eq!(out, "", "put prints nothing");
    assert!(dir.join("topgun.redb").is_file());

    // A later invocation reads it back: one compact line.
    let got = ok(&dir, &["get", "users", "alice"]);
    assert_eq!(got.lines().count(), 1);
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), value);

    // Scalars, including a negative number that looks like an option.
    ok(&dir, &["put", "n", "k", "-5"]);
    assert_eq!(ok(&dir, &["get", "n", "k"]), "-5\n");
    ok(&dir, &["put", "n", "s", "\"text\""]);
    assert_eq!(ok(&dir, &["get", "n", "s"]), "\"text\"\n");

    // --verbose reports the role and the op id on stderr only.
    let out = topgun(&dir, &["-v", "put", "n", "k", "1"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].ends_with(": leader"), "{stderr}");
    assert!(lines[1].starts_with("op "), "{stderr}");
}

#[test]
fn missing_and_removed_keys_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = fails(dir, &["get", "users", "nobody"], 1);
    assert!(err.contains("not found") && err.contains("nobody"), "{err}");

    ok(dir, &["put", "users", "alice", "{}"]);
    ok(dir, &["remove", "users", "alice"]);
    fails(dir, &["get", "users", "alice"], 1);
}

#[test]
fn ttl_expires_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["put", "s", "k", "1", "--ttl-ms", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fails(dir, &["get", "s", "k"], 1);
    assert_eq!(ok(dir, &["list", "s"]), "");
}

#[test]
fn list_prints_json_lines_in_key_order_and_clear_empties_the_map() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    people(dir);
    ok(dir, &["put", "other", "x", "1"]);
    let out = ok(dir, &["list", "users"]);
    assert_eq!(keys(&out), ["alice", "bob", "carol", "dave"]);
    assert_eq!(
        lines(&out)[0],
        json!({"key": "alice", "value": {"name": "Alice", "age": 30}})
    );

    ok(dir, &["clear", "users"]);
    assert_eq!(ok(dir, &["list", "users"]), "");
    fails(dir, &["get", "users", "alice"], 1);
    assert_eq!(
        ok(dir, &["get", "other", "x"]),
        "1\n",
        "other maps untouched"
    );
}

#[test]
fn list_into_a_closed_pipe_exits_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // More than a pipe buffer holds, so the writer must meet the closed end.
    let big = Value::String("x".repeat(100_000)).to_string();
    ok(dir, &["put", "m", "a", &big]);
    ok(dir, &["put", "m", "b", &big]);
    let mut child = topgun_cmd()
        .arg("--data")
        .arg(dir)
        .args(["list", "m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is dropped here, like `| head -c 16`.
    let out = child.wait_with_output().unwrap();
    assert_eq!(&first[..8], b"{\"key\":\"");
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn query_filters_sorts_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    people(dir);

    let adults = ok(
        dir,
        &["query", "users", "--where", r#"{"age":{"$gte":18}}"#],
    );
    assert_eq!(keys(&adults), ["alice", "bob", "carol"], "key order");

    let pred = r#"{"op":"or","children":[{"op":"lt","attribute":"age","value":20},{"op":"like","attribute":"name","value":"c%"}]}"#;
    assert_eq!(
        keys(&ok(dir, &["query", "users", "--predicate", pred])),
        ["carol", "dave"]
    );

    let sorted = ok(dir, &["query", "users", "--sort", "age:desc"]);
    assert_eq!(keys(&sorted), ["carol", "alice", "bob", "dave"]);
    assert_eq!(
        lines(&sorted)[0],
        json!({"key": "carol", "value": {"name": "Carol", "age": 41}})
    );

    let top = ok(
        dir,
        &[
            "query",
            "users",
            "--where",
            r#"{"age":{"$gte":18}}"#,
            "--predicate",
            r#"{"op":"neq","attribute":"name","value":"Carol"}"#,
            "--sort",
            "age:asc",
            "--limit",
            "1",
        ],
    );
    assert_eq!(keys(&top), ["bob"]);
}

#[test]
fn bad_input_exits_2_and_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let err = fails(dir, &["put", "m", "k", "{\"a\":"], 2);
    assert!(
        err.contains("<JSON>") && err.contains("line 1 column"),
        "{err}"
    );
    let err = fails(dir, &["query", "m", "--where", "{oops}"], 2);
    assert!(err.contains("--where") && err.contains("column"), "{err}");
    let err = fails(dir, &["query", "m", "--where", "[1]"], 2);
    assert!(err.contains("object"), "{err}");
    let err = fails(
        dir,
        &["query", "m", "--predicate", r#"{"attribute":"a"}"#],
        2,
    );
    assert!(err.contains("--predicate") && err.contains("op"), "{err}");
    let err = fails(dir, &["query", "m", "--sort", "age:down"], 2);
    assert!(err.contains("--sort") && err.contains("down"), "{err}");

    let near = r#"{"op":"near","attribute":"age","value":1}"#;
    let err = fails(dir, &["query", "m", "--predicate", near], 2);
    assert!(
        err.contains("invalid query") && err.contains("near"),
        "{err}"
    );
    let err = fails(dir, &["query", "m", "--where", r#"{"age":{"$gt":[]}}"#], 2);
    assert!(
        err.contains("invalid query") && err.contains("age"),
        "{err}"
    );

    fails(dir, &["put", "m", "", "1"], 2);
    let err = fails(dir, &["get", "m", ""], 2);
    assert!(err.contains("invalid key"), "{err}");
    fails(dir, &["list", ""], 2);
    fails(dir, &["frobnicate"], 2);
    // Nothing bad was written.
    assert_eq!(ok(dir, &["list", "m"]), "");
}

#[test]
fn a_data_dir_that_cannot_be_opened_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = fails(&file, &["status"], 3);
    assert!(
        err.contains("data directory") && err.contains("not-a-dir"),
        "{err}"
    );

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("topgun.redb"), "not a database").unwrap();
    let err = fails(&foreign, &["get", "m", "k"], 3);
    assert!(err.contains("cannot open the data file"), "{err}");
}

#[test]
fn status_reports_state_counts_and_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["put", "users", "alice", "1"]);
    ok(dir, &["put", "users", "bob", "2"]);
    ok(dir, &["remove", "users", "bob"]);
    ok(dir, &["put", "tasks", "t1", "{}"]);

    let out = ok(dir, &["status"]);
    assert_eq!(out.lines().count(), 1);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["state"], "OFFLINE");
    assert_eq!(status["pendingOps"], 4, "{status}");
    assert_eq!(status["records"], 3, "tombstones count: {status}");
    assert_eq!(status["dirtyRecords"], 3);
    assert!(status["bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["maps"], json!(["tasks", "users"]));
    let node_id = status["nodeId"].as_str().unwrap().to_owned();
    assert!(!node_id.is_empty());

    // The node id belongs to the data dir: it survives restarts.
    let again: Value = serde_json::from_str(&ok(dir, &["status"])).unwrap();
    assert_eq!(again["nodeId"], node_id.as_str());
}

#[test]
fn data_dir_comes_from_topgun_data() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        topgun_cmd()
            .env("TOPGUN_DATA", tmp.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["put", "m", "k", "true"]).status.success());
    assert!(tmp.path().join("topgun.redb").is_file());
    assert_eq!(run(&["get", "m", "k"]).stdout, b"true\n");
    // --data wins over the environment.
    let other = tmp.path().join("other");
    let out = run(&["--data", other.to_str().unwrap(), "get", "m", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(other.join("topgun.redb").is_file());
}

#[test]
fn help_teaches_every_command() {
    let out = topgun_cmd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "put",
        "get",
        "remove",
        "clear",
        "list",
        "query",
        "status",
        "topgun.redb",
        "TOPGUN_DATA",
        "./topgun-data",
        "Exit codes",
        "serve",
        "sync",
        "watch",
        "--server",
        "--token",
        "--timeout",
        "TOPGUN_SERVER",
        "4  not synced",
        "topgun serve --no-auth --data ./server-data",
        "topgun --data ./alice --server ws://127.0.0.1:8080/ws put todos t1 '{\"title\":\"milk\"}'",
        "topgun --data ./bob --server ws://127.0.0.1:8080/ws get todos t1",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
    for (command, example) in [
        ("put", "topgun --data ./db put users alice"),
        ("get", "topgun --data ./db get users alice"),
        ("remove", "topgun --data ./db remove users alice"),
        ("clear", "topgun --data ./db clear users"),
        ("list", "topgun --data ./db list users"),
        ("query", "--sort age:desc"),
        ("status", "topgun --data ./db status"),
        ("serve", "topgun serve --no-auth --data ./server-data"),
        ("serve", "--jwt-secret"),
        ("sync", "--server ws://127.0.0.1:8080/ws sync"),
        ("watch", "\"origin\""),
        ("watch", "--server"),
    ] {
        let out = topgun_cmd().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(example), "{command} --help:\n{help}");
    }
}
