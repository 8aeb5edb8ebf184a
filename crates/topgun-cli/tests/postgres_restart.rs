//! PostgreSQL restarted under load: a node and its client recover by
//! themselves and nothing acknowledged is lost. A test binary of its own,
//! so that no other test runs while the database restarts. Needs
//! `TOPGUN_TEST_POSTGRES` and `TOPGUN_TEST_POSTGRES_RESTART` (a script
//! that restarts that server; `cargo xtask ci` sets both); says SKIPPED
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use common::data::{assert_same_records, read_store, write_pending_puts};
use common::pg::{count, fresh_database, node, push_until_stored};
use common::{expect, topgun};
use std::process::Command;

const RESTART_ENV: &str = "TOPGUN_TEST_POSTGRES_RESTART";

#[test]
fn a_database_restart_under_load_loses_nothing() {
    let Ok(restart) = std::env::var(RESTART_ENV) else {
        eprintln!("SKIPPED a_database_restart_under_load: set {RESTART_ENV} (cargo xtask ci does)");
        return;
    };
    let Some(db) = fresh_database("a_database_restart_under_load") else {
        return;
    };
    const OPS: usize = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let server = node(&tmp.path().join("unused"), &db);
    let client = tmp.path().join("client");
    let written = write_pending_puts(&client, "big", OPS);

    let (push, stored) = push_until_stored(&client, &server.url, &db);
    let restarted = Command::new(&restart).output().unwrap();
    assert!(
        restarted.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    eprintln!("database restarted with {stored} of {OPS} ops stored");

    // The same sync finishes by itself once the node reaches the database
    // again.
    let out = push.wait_with_output().unwrap();
    expect(&out, 0, "the sync across the restart");
    let (records, stats) = read_store(&client.join("topgun.redb"), "big");
    assert_eq!(stats.pending_ops, 0);
    assert_eq!(records.len(), OPS);
    assert_same_records(&records, &written, "client");
    assert_eq!(
        count(&db, "SELECT count(*) FROM topgun_records"),
        OPS as i64
    );
    // The node serves all of it (its Merkle tree caught up with commits
    // whose confirmation the restart cut off).
    let fresh = tmp.path().join("fresh");
    let out = topgun(
        &fresh,
        Some(&server.url),
        &["--timeout", "30", "sync", "--map", "big"],
    );
    expect(&out, 0, "fresh sync");
    let (served, _) = read_store(&fresh.join("topgun.redb"), "big");
    assert_eq!(served.len(), OPS);
    assert_same_records(&served, &written, "served");
}
