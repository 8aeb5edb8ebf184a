//! Several clients on one shared data directory, in one process (the
//! redb file lock excludes a second open here as it does across
//! processes): a leader and followers over the directory's real Unix
//! socket, and a follower taking over when the leader goes. The CLI's
//! tests do the same with separate processes.
#![cfg(all(feature = "redb", unix))]
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use topgun_client::events::RecvError;
use topgun_client::query::Query;
use topgun_client::shared_dir::SOCKET_FILE;
use topgun_client::{Origin, Role, TopGunClient, WorkingSetLimits};
use topgun_core::hlc::ManualClock;

async fn open(dir: &Path) -> TopGunClient {
    TopGunClient::builder()
        .shared_dir(dir)
        .build()
        .await
        .unwrap()
}

/// Waits (on role changes, at most 10 s) until one of `clients` leads;
/// returns its index.
async fn a_leader_among(clients: &[&TopGunClient]) -> usize {
    let mut roles: Vec<_> = clients.iter().map(|c| c.watch_role()).collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(i) = roles
                .iter_mut()
                .position(|r| *r.borrow_and_update() == Role::Leader)
            {
                return i;
            }
            let changes = roles.iter_mut().map(|r| Box::pin(r.changed()));
            let _ = futures_util::future::select_all(changes).await;
        }
    })
    .await
    .expect("a leader within 10 s")
}

#[tokio::test]
async fn a_follower_reads_writes_and_hears_every_change_through_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path()).await;
    let follower = open(dir.path()).await;
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(follower.role(), Role::Follower);
    assert_ne!(leader.node_id(), follower.node_id());

    let on_leader = leader.get_json_map("notes").unwrap();
    let on_follower = follower.get_json_map("notes").unwrap();
    let mut leader_events = on_leader.subscribe();
    let mut follower_events = on_follower.subscribe();
    let mut live = on_follower.live_query(Query::default()).await.unwrap();

    // A follower's write: durable at the leader when it returns, its event
    // already published in both processes, exactly once.
    on_follower
        .put("k1", serde_json::json!({"v": 1}))
        .await
        .unwrap();
    assert_eq!(live.results().unwrap().len(), 1);
    assert_eq!(
        on_leader.get("k1").await.unwrap(),
        Some(serde_json::json!({"v": 1}))
    );
    assert_eq!(leader.pending_ops().await.unwrap(), 1);
    let e = follower_events.recv().await.unwrap();
    assert_eq!((&*e.key, e.origin), ("k1", Origin::Local));
    let e = leader_events.recv().await.unwrap();
    assert_eq!(&*e.key, "k1");
    assert!(follower_events.try_recv().is_none(), "published once");

    // The leader's write reaches the follower's cache, events and live query.
    assert_eq!(
        on_follower.get("k1").await.unwrap(),
        Some(serde_json::json!({"v": 1}))
    );
    on_leader
        .put("k1", serde_json::json!({"v": 2}))
        .await
        .unwrap();
    let e = follower_events.recv().await.unwrap();
    assert_eq!(e.new_value, Some(serde_json::json!({"v": 2})));
    assert_eq!(e.old_value, Some(serde_json::json!({"v": 1})));
    assert_eq!(
        on_follower.get("k1").await.unwrap(),
        Some(serde_json::json!({"v": 2}))
    );
    let change = live.next().await.unwrap();
    assert_eq!(change.key, "k1");

    // Removes, clears, scans, queries and counters through the socket.
    on_follower.put("k2", serde_json::json!(2)).await.unwrap();
    assert_eq!(on_follower.keys().await.unwrap(), ["k1", "k2"]);
    on_follower.remove("k1").await.unwrap();
    assert_eq!(on_leader.get("k1").await.unwrap(), None);
    on_follower.clear().await.unwrap();
    assert_eq!(on_leader.keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        follower.store_stats().await.unwrap(),
        leader.store_stats().await.unwrap()
    );
    assert_eq!(follower.map_names().await.unwrap(), ["notes"]);
}

#[tokio::test]
async fn a_follower_takes_over_when_the_leader_closes_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path()).await;
    let follower = open(dir.path()).await;
    let other = open(dir.path()).await;
    let notes = follower.get_json_map("notes").unwrap();
    notes.put("a", serde_json::json!(1)).await.unwrap();

    leader.close().await;
    drop(leader);
    // The next write waits for a leader and lands.
    notes.put("b", serde_json::json!(2)).await.unwrap();
    let (new_leader, still_following) = match a_leader_among(&[&follower, &other]).await {
        0 => (&follower, &other),
        _ => (&other, &follower),
    };
    assert_eq!(still_following.role(), Role::Follower);
    // Its calls wait for the new leader.
    let other_notes = still_following.get_json_map("notes").unwrap();
    other_notes.put("c", serde_json::json!(3)).await.unwrap();
    assert_eq!(
        new_leader
            .get_json_map("notes")
            .unwrap()
            .keys()
            .await
            .unwrap(),
        ["a", "b", "c"]
    );
    assert_eq!(
        new_leader.pending_ops().await.unwrap(),
        3,
        "each write once"
    );
    assert!(dir.path().join(SOCKET_FILE).exists());
}

#[tokio::test]
async fn a_socket_left_by_a_dead_leader_does_not_stop_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on, as a killed leader leaves it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET_FILE)).unwrap());
    let first = open(dir.path()).await;
    assert_eq!(first.role(), Role::Leader);
    let second = open(dir.path()).await;
    assert_eq!(second.role(), Role::Follower);
    second
        .get_json_map("m")
        .unwrap()
        .put("k", serde_json::json!(true))
        .await
        .unwrap();
    assert_eq!(first.pending_ops().await.unwrap(), 1);
}

#[tokio::test]
async fn a_follower_write_stamped_before_a_newer_leader_write_is_restamped_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let leader_clock = Arc::new(ManualClock::new(1_000_000));
    let leader = TopGunClient::builder()
        .shared_dir(dir.path())
        .clock(leader_clock.clone())
        .build()
        .await
        .unwrap();
    let follower = TopGunClient::builder()
        .shared_dir(dir.path())
        .clock(Arc::new(ManualClock::new(1_000_000)))
        .build()
        .await
        .unwrap();
    let on_leader = leader.get_json_map("m").unwrap();
    let on_follower = follower.get_json_map("m").unwrap();
    on_follower.put("k", serde_json::json!(1)).await.unwrap();
    assert_eq!(
        on_follower.get("k").await.unwrap(),
        Some(serde_json::json!(1))
    );
    // The leader's clock runs a second ahead (within the drift bound); on
    // this single-threaded runtime the follower writes before its copy
    // hears of the leader's write, so its stamp is older than the leader's
    // record: the leader refuses it as stale and the follower stamps it
    // again, after that record.
    leader_clock.advance(1_000);
    on_leader.put("k", serde_json::json!(2)).await.unwrap();
    on_follower.put("k", serde_json::json!(3)).await.unwrap();
    assert_eq!(
        on_leader.get("k").await.unwrap(),
        Some(serde_json::json!(3))
    );
    assert_eq!(
        on_follower.get("k").await.unwrap(),
        Some(serde_json::json!(3))
    );
    assert_eq!(leader.pending_ops().await.unwrap(), 3, "each write once");
    let stored = leader.store().get("m", "k").await.unwrap().unwrap();
    assert_eq!(stored.timestamp.node_id, follower.node_id());
    assert!(stored.timestamp.millis >= 1_001_000);
}

// One thread: the clear publishes all its changes before the connection's
// task runs.
#[tokio::test]
async fn a_follower_that_fell_behind_reconnects_its_live_query_reads_again_and_subscribers_are_told(
) {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path()).await;
    let follower = open(dir.path()).await;
    let on_leader = leader.get_map::<u32>("m").unwrap();
    let mut live = follower
        .get_map::<u32>("m")
        .unwrap()
        .live_query(Query::default())
        .await
        .unwrap();
    let mut elsewhere = follower.get_map::<u32>("n").unwrap().subscribe();
    // More than the 8,192 changes the feed holds for a follower.
    const KEYS: u32 = 8_500;
    let writers: Vec<_> = (0..50)
        .map(|w| {
            let map = on_leader.clone();
            tokio::spawn(async move {
                for i in (w..KEYS).step_by(50) {
                    map.put(&format!("k{i:05}"), i).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let within = Duration::from_secs(30);
    tokio::time::timeout(within, async {
        while live.results().unwrap().len() < KEYS as usize {
            let _ = live.next().await;
        }
    })
    .await
    .expect("every row entered");
    // One clear publishes more changes at once than the feed holds for a
    // follower: its connection is dropped, it reconnects, forgets its
    // cache and its live query reads its result again.
    on_leader.clear().await.unwrap();
    tokio::time::timeout(within, async {
        while !live.results().unwrap().is_empty() {
            let _ = live.next().await;
        }
    })
    .await
    .expect("every row left");
    // Its subscribers, of every map, are told that changes went missing.
    let told = tokio::time::timeout(within, elsewhere.recv()).await;
    assert!(matches!(told, Ok(Err(RecvError::Missed))), "{told:?}");
    assert_eq!(follower.role(), Role::Follower);
    assert_eq!(
        follower
            .get_map::<u32>("m")
            .unwrap()
            .get("k00001")
            .await
            .unwrap(),
        None
    );
}

/// A follower's query over a map too big for its working set reads the
/// leader's store in the store's own order (bucket by bucket) through the
/// directory's protocol, page by page, and answers as the leader does.
#[tokio::test]
async fn a_follower_queries_a_big_map_in_the_leaders_store_order() {
    let dir = tempfile::tempdir().unwrap();
    let small = WorkingSetLimits {
        max_entries: 100,
        ..WorkingSetLimits::default()
    };
    let open_small = || {
        TopGunClient::builder()
            .shared_dir(dir.path())
            .working_set(small)
            .build()
    };
    let leader = open_small().await.unwrap();
    let follower = open_small().await.unwrap();
    assert_eq!(follower.role(), Role::Follower);
    let on_leader = leader.get_json_map("big").unwrap();
    let writes = (0..3_000).map(|i| {
        let map = on_leader.clone();
        async move {
            map.put(&format!("k{i:05}"), serde_json::json!({"n": i % 7}))
                .await
        }
    });
    for result in futures_util::future::join_all(writes).await {
        result.unwrap();
    }
    let query: Query = serde_json::from_value(serde_json::json!({
        "where": {"n": 3},
        "sort": [{"field": "n", "direction": "asc"}]
    }))
    .unwrap();
    let on_follower = follower.get_json_map("big").unwrap();
    let theirs = on_follower.query(&query).await.unwrap();
    let ours = on_leader.query(&query).await.unwrap();
    assert_eq!(theirs.results.len(), 3_000 / 7 + 1);
    assert_eq!(theirs.results, ours.results);
    assert_eq!(on_follower.count(&query).await.unwrap(), 429);
}
