//! Server nodes sharing one PostgreSQL: the change feed (other nodes'
//! records and a node's own stamps, in commit order, never skipped,
//! retention), fan-out across nodes and Merkle
//! trees that agree. Needs `TOPGUN_TEST_POSTGRES` (`cargo xtask ci` sets
//! it); says SKIPPED otherwise.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

mod common;

use common::{pg, put, remove, ts, TestServer, WAIT};
use std::sync::Arc;
use std::time::Duration;
use topgun_core::wire::{Message, SyncInit};
use topgun_core::Timestamp;
use topgun_server::store::{FeedRead, PostgresOptions, PostgresStore, ServerStore};
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::StoreRecord;

fn rec(key: &str, millis: u64) -> StoreRecord {
    StoreRecord {
        map_name: "m".into(),
        key: key.into(),
        value: Some(vec![1]),
        timestamp: Timestamp::new(millis, 0, "n"),
        ttl_ms: None,
        dirty: false,
    }
}

async fn node(url: &str) -> PostgresStore {
    PostgresStore::connect(PostgresOptions::new(url))
        .await
        .unwrap()
}

/// Reads `store`'s feed from `at` until it has returned `want` keys;
/// returns them in feed order, other nodes' first, then its own.
async fn read_until(store: &PostgresStore, mut at: u64, want: usize) -> (Vec<String>, Vec<String>) {
    let feed = store.feed().unwrap();
    let (mut keys, mut mine) = (Vec::new(), Vec::new());
    tokio::time::timeout(WAIT, async {
        while keys.len() + mine.len() < want {
            match feed.read(at, 100).await.unwrap() {
                FeedRead::Changes { records, own, next } => {
                    keys.extend(records.into_iter().map(|r| r.key));
                    mine.extend(own.into_iter().map(|(_, stamp)| stamp.key));
                    at = next;
                }
                FeedRead::Behind { .. } => panic!("unexpectedly behind"),
            }
            feed.wait().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("feed returned only {keys:?} and {mine:?}"));
    (keys, mine)
}

#[tokio::test]
async fn the_feed_lists_other_nodes_records_not_a_nodes_own() {
    let Some(url) = pg::fresh_database("feed").await else {
        return;
    };
    let (a, b) = (node(&url).await, node(&url).await);
    let start = b.feed().unwrap().position().await.unwrap();
    a.merge(vec![rec("from-a", 1)]).await.unwrap();
    b.merge(vec![rec("from-b", 1)]).await.unwrap();
    a.merge(vec![rec("from-a2", 1)]).await.unwrap();
    // b's own change is skipped: it saw its commit succeed.
    let (others, own) = read_until(&b, start, 2).await;
    assert_eq!(others, ["from-a", "from-a2"]);
    assert!(own.is_empty(), "{own:?}");
    // A change that lost LWW is no change.
    let at = b.feed().unwrap().position().await.unwrap();
    assert_eq!(a.merge(vec![rec("from-a", 1)]).await.unwrap(), [false]);
    a.merge(vec![rec("last", 1)]).await.unwrap();
    assert_eq!(read_until(&b, at, 1).await.0, ["last"]);
}

/// The classic gap: writer 1 draws its sequence number and is delayed
/// before committing; writer 2 commits meanwhile. A reader polling all
/// along must still see writer 1's change once it commits.
#[tokio::test]
async fn a_delayed_writer_is_never_skipped() {
    let Some(url) = pg::fresh_database("gap").await else {
        return;
    };
    let (slow, fast, reader) = (node(&url).await, node(&url).await, node(&url).await);
    // Delay the writer of key "slow" after its change row has its number.
    let admin = pg::connect(&url).await;
    admin
        .batch_execute(
            "CREATE FUNCTION topgun_test_delay() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
             CREATE TRIGGER topgun_test_delay AFTER INSERT ON topgun_changes
               FOR EACH ROW WHEN ('slow' = ANY(NEW.keys)) EXECUTE FUNCTION topgun_test_delay();",
        )
        .await
        .unwrap();
    let start = reader.feed().unwrap().position().await.unwrap();
    let slow = Arc::new(slow);
    let slow_write = tokio::spawn({
        let slow = slow.clone();
        async move { slow.merge(vec![rec("slow", 1)]).await.unwrap() }
    });
    // Writer 1 has drawn its number (sequences are not transactional).
    tokio::time::timeout(WAIT, async {
        loop {
            let row = admin
                .query_one("SELECT is_called FROM topgun_change_seq", &[])
                .await
                .unwrap();
            if row.get::<_, bool>(0) {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let fast_write = tokio::spawn(async move { fast.merge(vec![rec("fast", 1)]).await.unwrap() });
    // Poll the feed while both are in flight, then to the end.
    let feed = reader.feed().unwrap();
    let mut at = start;
    let mut seen = Vec::new();
    loop {
        let done = slow_write.is_finished() && fast_write.is_finished();
        if let FeedRead::Changes { records, next, .. } = feed.read(at, 100).await.unwrap() {
            seen.extend(records.into_iter().map(|r| r.key));
            at = next;
        }
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    seen.sort();
    assert_eq!(seen, ["fast", "slow"]);
}

#[tokio::test]
async fn a_reader_behind_the_retention_is_told_to_rebuild() {
    let Some(url) = pg::fresh_database("retention").await else {
        return;
    };
    let mut options = PostgresOptions::new(&url);
    options.retention = Duration::ZERO;
    let pruning = PostgresStore::connect(options).await.unwrap();
    let reader = node(&url).await;
    let start = reader.feed().unwrap().position().await.unwrap();
    pruning.merge(vec![rec("k", 1)]).await.unwrap();
    // The retention task prunes within a second or so.
    let position = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match reader.feed().unwrap().read(start, 100).await.unwrap() {
                FeedRead::Behind { position } => return position,
                FeedRead::Changes { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the change was pruned");
    assert!(position > start);
    // From the new position the feed reads normally again.
    assert!(matches!(
        reader.feed().unwrap().read(position, 100).await.unwrap(),
        FeedRead::Changes { .. }
    ));
}

async fn start_node(url: &str) -> TestServer {
    let config = ServerConfig::new(StoreConfig::Postgres(PostgresOptions::new(url)));
    TestServer::start(config).await
}

async fn root_hash(client: &mut common::Client, map: &str) -> u32 {
    client
        .send(&Message::SyncInit(SyncInit {
            map_name: map.into(),
            root_hash: None,
            bucket_hashes: None,
            last_sync_timestamp: None,
        }))
        .await;
    match client
        .recv_until(|m| matches!(m, Message::SyncRespRoot(_)))
        .await
    {
        Message::SyncRespRoot(root) => root.root_hash,
        _ => unreachable!(),
    }
}

/// A write on one node reaches the subscribers of another as a
/// `SERVER_EVENT`; every node's Merkle tree agrees, including a node
/// started after the writes.
#[tokio::test]
async fn writes_fan_out_across_nodes_and_trees_agree() {
    let Some(url) = pg::fresh_database("nodes").await else {
        return;
    };
    let (one, two) = (start_node(&url).await, start_node(&url).await);
    let mut listener = one.connect().await;
    listener.subscribe("q", "todos").await;
    let mut writer = two.connect().await;
    writer
        .write(vec![put("1", "todos", "t1", "milk", ts(1, "w"))])
        .await;
    let event = listener
        .recv_until(|m| matches!(m, Message::ServerEvent(_) | Message::ServerBatchEvent(_)))
        .await;
    let text = format!("{event:?}");
    assert!(text.contains("t1") && text.contains("milk"), "{text}");
    writer
        .write(vec![remove("2", "todos", "t1", ts(2, "w"))])
        .await;
    let event = listener
        .recv_until(|m| matches!(m, Message::ServerEvent(_) | Message::ServerBatchEvent(_)))
        .await;
    assert!(format!("{event:?}").contains("Remove"), "{event:?}");

    let three = start_node(&url).await;
    let mut late = three.connect().await;
    let want = root_hash(&mut writer, "todos").await;
    assert_ne!(want, 0);
    assert_eq!(root_hash(&mut listener, "todos").await, want);
    assert_eq!(root_hash(&mut late, "todos").await, want);
    for server in [one, two, three] {
        server.stop().await.unwrap();
    }
}

/// Nodes starting together migrate the schema once; a database from a
/// newer version, a missing database, an unknown user and a malformed URL
/// are clear errors.
#[tokio::test]
async fn startup_migrates_once_and_refuses_what_it_cannot_use() {
    let Some(url) = pg::fresh_database("startup").await else {
        return;
    };
    let nodes = futures_util::future::join_all(
        (0..4).map(|_| PostgresStore::connect(PostgresOptions::new(&url))),
    )
    .await;
    assert!(nodes.iter().all(Result::is_ok), "{nodes:?}");
    let admin = pg::connect(&url).await;
    let versions: i64 = admin
        .query_one("SELECT count(*) FROM topgun_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);

    admin
        .execute("UPDATE topgun_schema SET version = 99", &[])
        .await
        .unwrap();
    let error = PostgresStore::connect(PostgresOptions::new(&url))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("99"), "{error}");

    let missing = format!("{}_missing", url);
    let error = PostgresStore::connect(PostgresOptions::new(&missing))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    let stranger = url.replacen("postgres@", "nobody_here@", 1);
    let error = PostgresStore::connect(PostgresOptions::new(&stranger))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nobody_here"), "{error}");
    let error = PostgresStore::connect(PostgresOptions::new("postgres://[nope"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("URL"), "{error}");
}

/// A commit of this node whose confirmation it never saw (the connection
/// dropped during COMMIT) comes back from the feed: the node's tree and
/// subscribers take it. Simulated by writing a record and a change row in
/// the node's name behind its back.
#[tokio::test]
async fn a_node_takes_its_own_commit_whose_confirmation_was_lost() {
    let Some(url) = pg::fresh_database("unconfirmed").await else {
        return;
    };
    let server = start_node(&url).await;
    let mut client = server.connect().await;
    client.subscribe("q", "m").await;
    client
        .write(vec![put("1", "m", "seen", "v", ts(1, "w"))])
        .await;
    let admin = pg::connect(&url).await;
    let origin: String = admin
        .query_one("SELECT origin FROM topgun_changes LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let lost = ts(2, "w");
    let millis = lost.millis as i64;
    let value = {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &rmpv::Value::from("ghost")).unwrap();
        bytes
    };
    admin
        .execute(
            "INSERT INTO topgun_records VALUES ('m', 'lost', $1, $2, 0, 'w', NULL)",
            &[&value, &millis],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO topgun_changes (seq, origin, map_names, keys, millis, counters, node_ids)
             VALUES (nextval('topgun_change_seq'), $1, '{m}', '{lost}', ARRAY[$2::int8], '{0}', '{w}')",
            &[&origin, &millis],
        )
        .await
        .unwrap();
    // The next poll of the feed finds it.
    let event = client
        .recv_until(|m| matches!(m, Message::ServerEvent(_) | Message::ServerBatchEvent(_)))
        .await;
    assert!(format!("{event:?}").contains("ghost"), "{event:?}");
    let mut want = topgun_core::MerkleTree::new();
    want.update("seen", &ts(1, "w"));
    want.update("lost", &lost);
    assert_eq!(root_hash(&mut client, "m").await, want.root_hash());
    server.stop().await.unwrap();
}
