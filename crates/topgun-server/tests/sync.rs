//! Merkle delta sync: roots, bucket walks, leaves with tombstones, and a
//! restart on the same redb data dir.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::BTreeMap;
use topgun_core::wire::{LeafRecord, MerkleReqBucket, Message, SyncInit};
use topgun_core::MerkleTree;

async fn root(c: &mut Client, map: &str) -> u32 {
    c.send(&Message::SyncInit(SyncInit {
        map_name: map.into(),
        root_hash: None,
        bucket_hashes: None,
        last_sync_timestamp: Some(0),
    }))
    .await;
    match c
        .recv_until(|m| matches!(m, Message::SyncRespRoot(_)))
        .await
    {
        Message::SyncRespRoot(r) => {
            assert_eq!(r.map_name, map);
            assert_eq!(r.timestamp.node_id, "topgun-server");
            r.root_hash
        }
        _ => unreachable!(),
    }
}

enum Node {
    Buckets(BTreeMap<String, u32>),
    Leaf(Vec<LeafRecord>),
}

async fn bucket(c: &mut Client, map: &str, path: &str) -> Node {
    c.send(&Message::MerkleReqBucket(MerkleReqBucket {
        map_name: map.into(),
        path: path.into(),
    }))
    .await;
    match c.recv().await {
        Message::SyncRespBuckets(b) if b.path == path => Node::Buckets(b.buckets),
        Message::SyncRespLeaf(l) if l.path == path => Node::Leaf(l.records),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn root_matches_a_client_tree_and_the_walk_reaches_only_the_differing_leaf() {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let mut local = MerkleTree::new();
    let mut ops = Vec::new();
    for i in 0..200u64 {
        let key = format!("key{i}");
        ops.push(put(i.to_string(), "m", &key, i, ts(i, "w")));
        local.update(&key, &ts(i, "w"));
    }
    ops.push(remove("200", "m", "key7", ts(500, "w")));
    local.update("key7", &ts(500, "w"));
    writer.write(ops).await;

    let mut reader = server.connect().await;
    assert_eq!(
        root(&mut reader, "m").await,
        local.root_hash(),
        "same formula as the client's tree"
    );

    // The client is behind on one key.
    local.update("key42", &ts(42, "stale"));
    assert_ne!(root(&mut reader, "m").await, local.root_hash());
    let mut frontier = vec![String::new()];
    let mut leaves = Vec::new();
    let mut requests = 0;
    while let Some(path) = frontier.pop() {
        requests += 1;
        match bucket(&mut reader, "m", &path).await {
            Node::Buckets(buckets) => {
                let mine = local.buckets(&path);
                for (digit, hash) in buckets {
                    let c = digit.chars().next().unwrap();
                    if mine.get(&c) != Some(&hash) {
                        frontier.push(format!("{path}{digit}"));
                    }
                }
            }
            Node::Leaf(records) => leaves.push((path, records)),
        }
    }
    assert_eq!(requests, 4, "root, two inner nodes, one leaf");
    assert_eq!(leaves.len(), 1);
    let (path, records) = &leaves[0];
    assert_eq!(*path, MerkleTree::path_of("key42"));
    let rec = records
        .iter()
        .find(|r| r.key == "key42")
        .expect("differing key in its leaf");
    assert_eq!(rec.record.timestamp, ts(42, "w"));
    assert_eq!(rec.record.value, Some(42.into()));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tombstones_are_served_in_leaves() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    c.write(vec![put("1", "m", "gone", "v", ts(1, "c"))]).await;
    c.write(vec![remove("2", "m", "gone", ts(2, "c"))]).await;
    let Node::Leaf(records) = bucket(&mut c, "m", &MerkleTree::path_of("gone")).await else {
        panic!("expected a leaf")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "gone");
    assert!(records[0].record.is_tombstone());
    assert_eq!(records[0].record.timestamp, ts(2, "c"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_bucket_request_is_answered_even_for_unknown_paths() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    assert_eq!(root(&mut c, "nothing").await, 0);
    assert!(matches!(bucket(&mut c, "nothing", "").await, Node::Buckets(b) if b.is_empty()));
    assert!(matches!(bucket(&mut c, "nothing", "ab").await, Node::Buckets(b) if b.is_empty()));
    assert!(matches!(bucket(&mut c, "nothing", "abc").await, Node::Leaf(r) if r.is_empty()));
    assert!(matches!(bucket(&mut c, "nothing", "zz").await, Node::Buckets(b) if b.is_empty()));
    assert!(matches!(bucket(&mut c, "nothing", "abcdef").await, Node::Leaf(r) if r.is_empty()));
    server.stop().await.unwrap();
}

/// Writes to a data dir made with `made` lanes, restarts the server on it
/// configured for `then` lanes: the dir keeps its lanes, its records and
/// its Merkle root.
#[cfg(feature = "redb")]
async fn restart_keeps_data_and_merkle_root(made: usize, then: usize) {
    let dir = tempfile::tempdir().unwrap();
    use topgun_server::{ServerConfig, StoreConfig};
    let config = |lanes| {
        let mut config = ServerConfig::new(StoreConfig::DataDir(dir.path().to_owned()));
        config.lanes = lanes;
        config
    };
    let server = TestServer::start(config(made)).await;
    let mut c = server.connect().await;
    let ops = (0..50u64)
        .map(|i| put(i.to_string(), "m", &format!("k{i}"), i, ts(i, "c")))
        .collect();
    c.write(ops).await;
    c.write(vec![remove("x", "m", "k3", ts(99, "c"))]).await;
    let before = root(&mut c, "m").await;
    assert_ne!(before, 0);
    drop(c);
    server.stop().await.unwrap();
    assert!(dir.path().join(topgun_server::DATA_FILE_NAME).exists());
    assert_eq!(
        topgun_server::store::data_dir_lanes(dir.path()).unwrap(),
        Some(made)
    );

    let server = TestServer::start(config(then)).await;
    let mut c = server.connect().await;
    assert_eq!(root(&mut c, "m").await, before);
    let Node::Leaf(records) = bucket(&mut c, "m", &MerkleTree::path_of("k3")).await else {
        panic!("expected a leaf")
    };
    assert!(records
        .iter()
        .any(|r| r.key == "k3" && r.record.is_tombstone()));
    for i in [0u64, 17, 49] {
        let key = format!("k{i}");
        let Node::Leaf(records) = bucket(&mut c, "m", &MerkleTree::path_of(&key)).await else {
            panic!("expected a leaf")
        };
        assert!(records.iter().any(|r| r.key == key), "{key}");
    }
    server.stop().await.unwrap();
    assert_eq!(
        topgun_server::store::data_dir_lanes(dir.path()).unwrap(),
        Some(made)
    );
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_data_and_merkle_root() {
    restart_keeps_data_and_merkle_root(1, 4).await;
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn a_data_dir_of_several_lanes_keeps_them_across_restarts() {
    restart_keeps_data_and_merkle_root(3, 1).await;
}
