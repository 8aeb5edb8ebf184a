//! Sync between real clients and a real server on 127.0.0.1 (in-process,
//! port 0), over real WebSockets.

// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use topgun_client::{ConnectionState, SyncConfig, SyncEvent, TopGunClient};
use topgun_server::{AccessRules, AuthMode, ServerConfig, StoreConfig};
use topgun_storage::{MemoryStore, Store};

const WAIT: Duration = Duration::from_secs(20);

struct Server {
    url: String,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
}

impl Server {
    async fn start_with(
        store: Arc<dyn Store>,
        port: u16,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = ServerConfig::new(StoreConfig::Store(store.clone()));
        config.limits.ops_per_second = 1_000_000;
        config.limits.ops_burst = 2_000_000;
        configure(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = topgun_server::run(listener, config, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            url: format!("ws://127.0.0.1:{port}/ws"),
            port,
            stop: Some(stop),
            task,
            store,
        }
    }

    async fn start() -> Self {
        Self::start_with(Arc::new(MemoryStore::new()), 0, |_| {}).await
    }

    async fn stop(mut self) -> (Arc<dyn Store>, u16) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(WAIT, self.task).await;
        (self.store, self.port)
    }
}

fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff_initial_ms: 50,
        backoff_max_ms: 500,
        auth_grace_ms: 50,
        ..SyncConfig::default()
    }
}

async fn client(url: &str, maps: &[&str]) -> TopGunClient {
    TopGunClient::builder()
        .server_url(url)
        .sync_config(fast_sync())
        .sync_maps(maps.iter().copied())
        .build()
        .await
        .unwrap()
}

async fn synced(c: &TopGunClient) {
    assert!(
        c.wait_until_synced(WAIT).await.unwrap(),
        "client did not reach ONLINE with nothing pending: {:?}",
        c.state()
    );
}

type Dump = BTreeMap<String, (Option<serde_json::Value>, String)>;

/// Every record (tombstones included) of a map in a store, by key.
async fn dump(store: &dyn Store, map: &str) -> Dump {
    dump_pages(|after| async move { store.scan(map, after.as_deref(), 500).await }).await
}

/// Every record (tombstones included) of a map in a client's store.
async fn dump_client(client: &TopGunClient, map: &str) -> Dump {
    let store = client.store();
    let store = &store;
    dump_pages(|after| async move { store.scan(map, after.as_deref(), 500).await }).await
}

async fn dump_pages<F, Fut>(scan: F) -> Dump
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<
        Output = Result<Vec<topgun_storage::StoreRecord>, topgun_storage::StorageError>,
    >,
{
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = scan(after.clone()).await.unwrap();
        for r in &page {
            let v = r
                .value
                .as_ref()
                .map(|b| rmp_serde::from_slice::<serde_json::Value>(b).unwrap());
            out.insert(r.key.clone(), (v, r.timestamp.to_string()));
        }
        if page.len() < 500 {
            return out;
        }
        after = page.last().map(|r| r.key.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_reach_the_server_and_a_fresh_client() {
    // The server is not up yet: the client works offline.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let a = client(&url, &["todos"]).await;
    let todos = a.get_json_map("todos").unwrap();
    for i in 0..1_000 {
        todos
            .put(&format!("t{i:04}"), serde_json::json!({"n": i}))
            .await
            .unwrap();
    }
    for i in (0..1_000).step_by(10) {
        todos.remove(&format!("t{i:04}")).await.unwrap();
    }
    assert_eq!(a.pending_ops().await.unwrap(), 1_100);
    assert_ne!(a.state(), ConnectionState::Online);

    let server = Server::start_with(Arc::new(MemoryStore::new()), port, |_| {}).await;
    synced(&a).await;
    assert_eq!(a.pending_ops().await.unwrap(), 0);
    assert_eq!(
        todos.sync_state("t0001").await.unwrap(),
        Some(topgun_client::SyncState::Synced)
    );

    let b = client(&server.url, &["todos"]).await;
    synced(&b).await;
    let from_a = dump_client(&a, "todos").await;
    let from_b = dump_client(&b, "todos").await;
    let on_server = dump(server.store.as_ref(), "todos").await;
    assert_eq!(from_a.len(), 1_000);
    assert_eq!(
        from_b, from_a,
        "the fresh client pulled exactly the same records, tombstones included"
    );
    assert_eq!(on_server, from_a);
    let bt = b.get_json_map("todos").unwrap();
    assert_eq!(
        bt.get("t0001").await.unwrap(),
        Some(serde_json::json!({"n": 1}))
    );
    assert_eq!(bt.get("t0010").await.unwrap(), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_to_the_lww_model() {
    let server = Server::start().await;
    let a = client(&server.url, &["m"]).await;
    let b_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = TopGunClient::builder()
        .store(b_store.clone())
        .server_url(&server.url)
        .sync_config(fast_sync())
        .sync_maps(["m"])
        .build()
        .await
        .unwrap();
    synced(&a).await;
    synced(&b).await;
    let ma = a.get_map::<i64>("m").unwrap();
    let mut a_events = ma.subscribe();
    // b goes offline (its sync stops); both write overlapping keys.
    b.close().await;
    let b_offline = TopGunClient::builder()
        .store(b_store.clone())
        .node_id(b.node_id())
        .build()
        .await
        .unwrap();
    let mb_off = b_offline.get_map::<i64>("m").unwrap();
    for i in 0..50 {
        ma.put(&format!("k{}", i % 20), i).await.unwrap();
        mb_off
            .put(&format!("k{}", (i * 7) % 20), 1_000 + i)
            .await
            .unwrap();
        if i % 9 == 0 {
            ma.remove(&format!("k{}", (i * 3) % 20)).await.unwrap();
        }
    }
    // The model: for every key, the record with the greatest timestamp.
    let mut model = dump_client(&a, "m").await;
    for (k, v) in dump_client(&b_offline, "m").await {
        match model.get(&k) {
            Some(cur) if parse_ts(&cur.1) >= parse_ts(&v.1) => {}
            _ => {
                model.insert(k, v);
            }
        }
    }
    // b comes back online on the same store.
    let b2 = TopGunClient::builder()
        .store(b_store.clone())
        .server_url(&server.url)
        .sync_config(fast_sync())
        .build()
        .await
        .unwrap();
    let mut b_events = b2.get_map::<i64>("m").unwrap().subscribe();
    synced(&b2).await;
    synced(&a).await;
    // Whatever each pulled, the rest reaches it as realtime events: wait
    // on those, not on time.
    loop {
        let (da, db) = (dump_client(&a, "m").await, dump_client(&b2, "m").await);
        if da == model && db == model {
            break;
        }
        let event = tokio::time::timeout(WAIT, async {
            tokio::select! {
                e = a_events.recv() => e.is_ok(),
                e = b_events.recv() => e.is_ok(),
            }
        })
        .await;
        assert!(
            matches!(event, Ok(true)),
            "no convergence:\n a={da:?}\n b={db:?}\n model={model:?}"
        );
    }
    assert_eq!(dump(server.store.as_ref(), "m").await, model);
    drop(ma);
    server.stop().await;
}

fn parse_ts(s: &str) -> topgun_core::Timestamp {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_changes_reach_the_other_client_as_remote_events() {
    let server = Server::start().await;
    let a = client(&server.url, &["chat"]).await;
    let b = client(&server.url, &["chat"]).await;
    synced(&a).await;
    synced(&b).await;
    let mut events = b.get_map::<String>("chat").unwrap().subscribe();
    a.get_map::<String>("chat")
        .unwrap()
        .put("m1", "hello".into())
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.key.as_str(), e.new_value.as_deref(), e.origin),
        ("m1", Some("hello"), topgun_client::Origin::Remote)
    );
    a.get_map::<String>("chat")
        .unwrap()
        .remove("m1")
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.old_value.as_deref(), e.new_value), (Some("hello"), None));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_walks_only_the_differing_leaves() {
    let server = Server::start().await;
    let seed = client(&server.url, &["big"]).await;
    let m = seed.get_json_map("big").unwrap();
    for i in 0..10_000 {
        m.put(&format!("key-{i}"), serde_json::json!(i))
            .await
            .unwrap();
    }
    synced(&seed).await;
    // A second client pulls everything, then goes away.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = TopGunClient::builder()
        .store(store.clone())
        .server_url(&server.url)
        .sync_config(fast_sync())
        .sync_maps(["big"])
        .build()
        .await
        .unwrap();
    synced(&b).await;
    b.close().await;
    drop(b);
    // It misses 10 changes.
    for i in 0..10 {
        m.put(&format!("key-{}", i * 997), serde_json::json!("changed"))
            .await
            .unwrap();
    }
    synced(&seed).await;
    // Back online: the Merkle walk fetches only the changed leaves.
    let b = TopGunClient::builder()
        .store(store.clone())
        .server_url(&server.url)
        .sync_config(fast_sync())
        .sync_maps(["big"])
        .build()
        .await
        .unwrap();
    synced(&b).await;
    let bm = b.get_json_map("big").unwrap();
    for i in 0..10 {
        assert_eq!(
            bm.get(&format!("key-{}", i * 997)).await.unwrap(),
            Some(serde_json::json!("changed"))
        );
    }
    let t = b.traffic();
    // SYNC_RESP_ROOT + at most 10 paths of (root buckets, 2 inner levels, 1
    // leaf) + QUERY_RESP + AUTH/PONG noise; a full pull would be 4096+ leaves.
    assert!(t.frames_received <= 1 + 1 + 10 * 3 + 1 + 5, "{t:?}");
    assert!(t.bytes_received < 64 * 1024, "{t:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_in_order_and_backoff_while_the_server_is_down() {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let c = TopGunClient::builder()
        .server_url(&url)
        .sync_config(fast_sync())
        .build()
        .await
        .unwrap();
    let mut changes = c.state_changes();
    // Down: OFFLINE → CONNECTING → OFFLINE → CONNECTING … with growing
    // waits. Watch four more attempts (the very first transition may
    // predate the subscription: the sync task starts inside `build`).
    let mut seen = vec![];
    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        let s = tokio::time::timeout(WAIT, changes.recv())
            .await
            .unwrap()
            .unwrap();
        if s == ConnectionState::Connecting {
            attempts.push(std::time::Instant::now());
        }
        seen.push(s);
    }
    assert!(
        seen.windows(3).any(|w| w
            == [
                ConnectionState::Connecting,
                ConnectionState::Offline,
                ConnectionState::Connecting
            ]),
        "attempts alternate with OFFLINE: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    assert!(!seen.contains(&ConnectionState::Syncing));
    // The backoff doubles from 50 ms (jitter takes at most half off), so
    // three waits after the first attempt last at least 25 + 50 + 100 ms;
    // without a backoff they would take about nothing.
    let waited = attempts[3] - attempts[0];
    assert!(
        waited >= Duration::from_millis(175),
        "backoff spaces the attempts: {waited:?} {seen:?}"
    );
    // Up: it gets through CONNECTING → SYNCING → ONLINE.
    let server = Server::start_with(Arc::new(MemoryStore::new()), port, |_| {}).await;
    let mut tail = Vec::new();
    while tail.last() != Some(&ConnectionState::Online) {
        tail.push(
            tokio::time::timeout(WAIT, changes.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // The attempt in progress when the server came up may be the one
    // that gets through.
    let tail: Vec<_> = seen.iter().chain(&tail).copied().collect();
    let n = tail.len();
    assert_eq!(
        &tail[n - 3..],
        &[
            ConnectionState::Connecting,
            ConnectionState::Syncing,
            ConnectionState::Online
        ],
        "{tail:?}"
    );
    server.stop().await;
}

fn token(secret: &str, sub: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let claims = Claims {
        sub,
        exp: 4_000_000_000,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_missing_bad_and_forbidden() {
    let server = jwt_server().await;
    // No token.
    let c = client(&server.url, &["public"]).await;
    let mut ev = c.sync_events();
    let e = wait_event(&mut ev, |e| matches!(e, SyncEvent::AuthFailed(_))).await;
    assert!(matches!(e, SyncEvent::AuthFailed(r) if r.contains("token")));
    assert_ne!(c.state(), ConnectionState::Online);
    c.close().await;
    // A bad token.
    let c = TopGunClient::builder()
        .server_url(&server.url)
        .token(token("wrong", "alice"))
        .sync_config(fast_sync())
        .build()
        .await
        .unwrap();
    let mut ev = c.sync_events();
    wait_event(&mut ev, |e| matches!(e, SyncEvent::AuthFailed(_))).await;
    c.close().await;
    // A good token, but a map the rules forbid writing.
    let c = TopGunClient::builder()
        .server_url(&server.url)
        .token(token("s3cret", "bob"))
        .sync_config(fast_sync())
        .sync_maps(["public"])
        .build()
        .await
        .unwrap();
    let mut ev = c.sync_events();
    synced(&c).await;
    c.get_json_map("public")
        .unwrap()
        .put("x", serde_json::json!(1))
        .await
        .unwrap();
    let e = wait_event(&mut ev, |e| matches!(e, SyncEvent::OpRejected { .. })).await;
    assert!(
        matches!(
            e,
            SyncEvent::OpRejected {
                code: Some(403),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        c.pending_ops().await.unwrap(),
        0,
        "a rejected op is not retried"
    );
    assert!(dump(server.store.as_ref(), "public").await.is_empty());
    server.stop().await;
}

/// Hands out tokens, counting how often it was asked.
#[derive(Debug, Default)]
struct CountingTokens {
    asked: std::sync::atomic::AtomicUsize,
}

impl topgun_client::TokenProvider for CountingTokens {
    fn token(&self) -> topgun_sync::BoxFuture<'static, Result<Option<String>, String>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(Some(token("s3cret", "alice"))) })
    }
}

/// A token provider is asked for the token on each connection: the first
/// one, and again after the server went away and came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provider_is_asked_on_every_connection() {
    let server = jwt_server().await;
    let tokens = Arc::new(CountingTokens::default());
    let c = TopGunClient::builder()
        .server_url(&server.url)
        .token_provider(tokens.clone())
        .sync_config(fast_sync())
        .sync_maps(["public"])
        .build()
        .await
        .unwrap();
    synced(&c).await;
    // Alice may write `public`: the token the provider gave was used.
    c.get_json_map("public")
        .unwrap()
        .put("x", serde_json::json!(1))
        .await
        .unwrap();
    synced(&c).await;
    assert_eq!(dump(server.store.as_ref(), "public").await.len(), 1);
    assert_eq!(tokens.asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Offline and back: a new connection asks again.
    let mut states = c.state_changes();
    c.set_network_online(false);
    while states.recv().await.unwrap() != ConnectionState::Offline {}
    c.set_network_online(true);
    while states.recv().await.unwrap() != ConnectionState::Online {}
    assert!(tokens.asked.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    c.close().await;
    server.stop().await;
}

/// A server that wants JWTs signed with `s3cret`, under [`toml_rules`].
async fn jwt_server() -> Server {
    let rules = toml_rules();
    Server::start_with(Arc::new(MemoryStore::new()), 0, |c| {
        c.auth = AuthMode::Jwt {
            secret: b"s3cret".to_vec(),
        };
        c.rules = rules;
    })
    .await
}

fn toml_rules() -> AccessRules {
    AccessRules::from_toml("[[rule]]\nmap = \"public\"\nread = [\"*\"]\nwrite = [\"user:alice\"]\n")
        .unwrap()
}

async fn wait_event(
    ev: &mut tokio::sync::broadcast::Receiver<SyncEvent>,
    want: impl Fn(&SyncEvent) -> bool,
) -> SyncEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ev.recv()).await {
            Ok(Ok(e)) if want(&e) => return e,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("no such event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_give_a_clock_skew_estimate() {
    let server = Server::start().await;
    let config = SyncConfig {
        ping_interval_ms: 50,
        ..fast_sync()
    };
    let c = TopGunClient::builder()
        .server_url(&server.url)
        .sync_config(config)
        .build()
        .await
        .unwrap();
    let mut ev = c.sync_events();
    let e = wait_event(&mut ev, |e| matches!(e, SyncEvent::ClockSkew(_))).await;
    let SyncEvent::ClockSkew(skew) = e else {
        unreachable!()
    };
    // Same machine, same clock: the estimate is within the round trip.
    assert!(skew.abs() < 1_000, "{skew}");
    assert_eq!(c.clock_skew_ms(), skew);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_clear_travels_in_parts_and_reaches_the_server() {
    let server = Server::start().await;
    let c = client(&server.url, &["big"]).await;
    let m = c.get_json_map("big").unwrap();
    // 25,000 keys of ~45 bytes: their REMOVEs (~2.7 MB) exceed one 2 MiB
    // frame, so the clear must travel in parts.
    for i in 0..25_000 {
        m.put(
            &format!("a-rather-long-key-name-to-fill-frames-{i:05}"),
            serde_json::json!(i),
        )
        .await
        .unwrap();
    }
    synced(&c).await;
    m.clear().await.unwrap();
    synced(&c).await;
    let on_server = dump(server.store.as_ref(), "big").await;
    assert_eq!(on_server.len(), 25_000);
    assert!(
        on_server.values().all(|(v, _)| v.is_none()),
        "every key is a tombstone on the server"
    );
    assert_eq!(c.pending_ops().await.unwrap(), 0);
    server.stop().await;
}

/// A client that syncs map `m` and prunes under `quota` bytes, with a
/// working set of 8 entries.
fn pruning_client(url: &str, quota: u64) -> topgun_client::TopGunClientBuilder {
    TopGunClient::builder()
        .server_url(url)
        .sync_config(fast_sync())
        .sync_maps(["m"])
        .quota_bytes(quota)
        .working_set(topgun_client::WorkingSetLimits {
            max_entries: 8,
            max_bytes: usize::MAX,
        })
}

/// Writes 40 `old-…` records and syncs them, then more writes until the
/// quota prunes synced ones (how many writes that takes depends on how
/// fast acks shrink the op log, so in rounds); the old keys pruned.
async fn write_until_pruned(c: &TopGunClient, value: &str) -> Vec<String> {
    let m = c.get_map::<String>("m").unwrap();
    for i in 0..40 {
        m.put(&format!("old-{i:03}"), value.to_owned())
            .await
            .unwrap();
    }
    synced(c).await;
    let mut pruned = Vec::new();
    for round in 0..10 {
        for i in 0..20 {
            let key = format!("new-{round}-{i:02}");
            m.put(&key, value.to_owned()).await.unwrap();
        }
        synced(c).await;
        for i in 0..40 {
            let key = format!("old-{i:03}");
            if c.store().get("m", &key).await.unwrap().is_none() {
                pruned.push(key);
            }
        }
        if !pruned.is_empty() {
            break;
        }
    }
    assert!(!pruned.is_empty(), "nothing was pruned");
    pruned
}

/// Reading each of `keys` gives `value` (fetched from the server).
async fn assert_read_back(c: &TopGunClient, keys: &[String], value: &str) {
    let m = c.get_map::<String>("m").unwrap();
    for key in keys {
        assert_eq!(m.get(key).await.unwrap().as_deref(), Some(value), "{key}");
    }
}

/// A pruned record stays known as pruned across a restart (the store keeps
/// it in its leaf sums, so no pull brings it back unasked), and reading it
/// then still fetches it from the server.
#[cfg(feature = "redb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_pruned_before_a_restart_is_fetched_when_read() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.redb");
    let value = "v".repeat(400);
    let c = pruning_client(&server.url, 60_000)
        .redb_path(&path)
        .build()
        .await
        .unwrap();
    let pruned = write_until_pruned(&c, &value).await;
    c.close().await;
    drop(c);

    // A larger budget: the fetched records are kept this time.
    let c = pruning_client(&server.url, 10_000_000)
        .redb_path(&path)
        .build()
        .await
        .unwrap();
    synced(&c).await;
    assert!(
        c.store().get("m", &pruned[0]).await.unwrap().is_none(),
        "the pull after the restart did not bring pruned records back"
    );
    assert_read_back(&c, &pruned, &value).await;
    c.close().await;
    server.stop().await;
}

/// A record pruned to stay under quota is not gone: reading it while
/// online brings it back from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_record_read_while_online_comes_back_from_the_server() {
    let server = Server::start().await;
    let c = pruning_client(&server.url, 60_000).build().await.unwrap();
    let value = "v".repeat(400);
    let pruned = write_until_pruned(&c, &value).await;
    assert_read_back(&c, &pruned, &value).await;
    c.close().await;
    server.stop().await;
}
