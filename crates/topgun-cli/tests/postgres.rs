//! Several `topgun serve` nodes on one PostgreSQL, with real processes:
//! clients on different nodes converge to a plain LWW model (tombstones
//! included), a node started after the writes serves them all, and a
//! node killed mid-push loses nothing and applies nothing twice. Needs
//! `TOPGUN_TEST_POSTGRES` (`cargo xtask ci` sets it); says SKIPPED
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use common::data::{assert_same_records, read_store, write_pending_puts, Records};
use common::pg::{count, fresh_database, node, push_until_stored};
use common::{expect, topgun, topgun_cmd};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// `import MAP` of `{"key":…,"value":…}` lines, offline.
fn import(dir: &Path, map: &str, entries: &[(String, String)]) {
    let mut child = topgun_cmd()
        .arg("--data")
        .arg(dir)
        .args(["import", map])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (key, value) in entries {
        writeln!(stdin, "{}", serde_json::json!({"key": key, "value": value})).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "import into {dir:?}");
}

fn sync(dir: &Path, url: &str, map: &str) {
    let out = topgun(dir, Some(url), &["--timeout", "30", "sync", "--map", map]);
    expect(&out, 0, &format!("sync {dir:?} through {url}"));
}

/// Every record must equal the model's, and no record may be missing.
fn assert_model(got: &Records, model: &Records, what: &str) {
    assert_eq!(got.len(), model.len(), "{what}: keys");
    assert_same_records(got, model, what);
}

#[test]
fn clients_on_three_nodes_converge_to_last_writer_wins() {
    let Some(db) = fresh_database("clients_on_three_nodes_converge") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let unused = tmp.path().join("unused");
    let nodes = [node(&unused, &db), node(&unused, &db)];
    let clients: Vec<_> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();

    // Two rounds of offline writes over overlapping keys, interleaved
    // between the clients, with removes.
    for round in 0..2 {
        for (i, dir) in clients.iter().enumerate() {
            let first = i * 5 + round * 3;
            let entries: Vec<(String, String)> = (first..first + 12)
                .map(|k| (format!("k{k:02}"), format!("{i}/{round}")))
                .collect();
            import(dir, "m", &entries);
            let gone = format!("k{:02}", first + 2 + round);
            expect(&topgun(dir, None, &["remove", "m", &gone]), 0, "remove");
        }
    }
    // The model: per key, the newest of the clients' own records.
    let mut model = Records::new();
    for dir in &clients {
        for (key, record) in read_store(&dir.join("topgun.redb"), "m").0 {
            let newer = model
                .get(&key)
                .is_none_or(|old| record.timestamp > old.timestamp);
            if newer {
                model.insert(key, record);
            }
        }
    }
    assert!(
        model.values().any(|r| r.value.is_none()),
        "the model has tombstones"
    );

    // a and b sync through different nodes at once; c, offline so far,
    // comes later; then a and b pull what c brought.
    let urls = [nodes[0].url.clone(), nodes[1].url.clone()];
    std::thread::scope(|s| {
        s.spawn(|| sync(&clients[0], &urls[0], "m"));
        s.spawn(|| sync(&clients[1], &urls[1], "m"));
    });
    sync(&clients[2], &nodes[1].url, "m");
    sync(&clients[0], &nodes[0].url, "m");
    sync(&clients[1], &nodes[1].url, "m");
    for (dir, name) in clients.iter().zip(["a", "b", "c"]) {
        let (records, stats) = read_store(&dir.join("topgun.redb"), "m");
        assert_model(&records, &model, &format!("client {name}"));
        assert_eq!(stats.pending_ops, 0, "client {name}");
    }

    // Every node, including one started after the writes, serves the
    // model to a fresh client through its Merkle tree.
    let late = node(&unused, &db);
    for (i, server) in nodes.iter().chain([&late]).enumerate() {
        let fresh = tmp.path().join(format!("fresh{i}"));
        sync(&fresh, &server.url, "m");
        let (records, _) = read_store(&fresh.join("topgun.redb"), "m");
        assert_model(&records, &model, &format!("node {i}"));
    }
}

#[test]
fn a_node_killed_mid_push_loses_nothing_and_applies_nothing_twice() {
    let Some(db) = fresh_database("a_node_killed_mid_push") else {
        return;
    };
    const OPS: usize = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let unused = tmp.path().join("unused");
    let (first, second) = (node(&unused, &db), node(&unused, &db));
    let client = tmp.path().join("client");
    let written = write_pending_puts(&client, "big", OPS);

    // Kill the node once some ops are durable.
    let (mut push, stored) = push_until_stored(&client, &first.url, &db);
    first.crash();
    push.kill().unwrap();
    push.wait().unwrap();
    eprintln!("node killed with {stored} of {OPS} ops stored");

    // The client goes on through the other node.
    sync(&client, &second.url, "big");
    let (records, stats) = read_store(&client.join("topgun.redb"), "big");
    assert_eq!(stats.pending_ops, 0);
    assert_model(&records, &written, "client");
    let fresh = tmp.path().join("fresh");
    sync(&fresh, &second.url, "big");
    assert_model(
        &read_store(&fresh.join("topgun.redb"), "big").0,
        &written,
        "server",
    );
    // Each op was applied once: one change per op, none repeated.
    assert_eq!(
        count(
            &db,
            "SELECT sum(cardinality(keys))::int8 FROM topgun_changes"
        ),
        OPS as i64
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT 1 FROM topgun_changes,
                 unnest(map_names, keys, millis, counters, node_ids) AS u(m, k, ms, c, n)
             GROUP BY m, k, ms, c, n HAVING count(*) > 1) AS twice"
        ),
        0
    );
}
