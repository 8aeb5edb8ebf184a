//! Authentication and per-map access rules.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use std::sync::Arc;
use topgun_core::wire::{Auth, DeviceHello, Message, OpId, SyncInit};
use topgun_server::{AccessRules, AuthMode, ServerConfig, StoreConfig};
use topgun_storage::{MemoryStore, Store};

const SECRET: &[u8] = b"test-secret";

fn token(sub: &str, roles: &[&str], secret: &[u8]) -> String {
    let claims =
        serde_json::json!({ "sub": sub, "roles": roles, "exp": now_millis() / 1000 + 3600 });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn auth_server() -> (TestServer, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let mut config = ServerConfig::new(StoreConfig::Store(store.clone() as Arc<dyn Store>));
    config.auth = AuthMode::Jwt {
        secret: SECRET.to_vec(),
    };
    config.rules = AccessRules::from_toml(
        r#"
        [[rule]]
        map = "public_*"
        read = ["*"]
        write = ["role:admin", "user:alice"]
        "#,
    )
    .unwrap();
    (TestServer::start(config).await, store)
}

fn auth(token: String) -> Message {
    Message::Auth(Auth {
        token,
        protocol_version: None,
        device_token: None,
    })
}

#[tokio::test]
async fn auth_required_then_frames_before_auth_are_dropped() {
    let (server, store) = auth_server().await;
    let mut c = server.connect().await;
    assert!(matches!(c.recv().await, Message::AuthRequired(_)));
    c.send(&batch(vec![put("1", "public_x", "k", 1, ts(1, "c"))]))
        .await;
    c.send(&Message::Ping(topgun_core::wire::Ping { timestamp: 1 }))
        .await;
    c.send_raw(b"garbage".to_vec()).await;
    c.expect_silence(200).await;
    assert!(store.get("public_x", "k").await.unwrap().is_none());

    c.send(&auth(token("alice", &[], SECRET))).await;
    match c.recv().await {
        Message::AuthAck(ack) => assert_eq!(ack.user_id.as_deref(), Some("alice")),
        other => panic!("{other:?}"),
    }
    // A second AUTH (the TS client re-sends on AUTH_REQUIRED) is harmless.
    c.send(&auth(token("alice", &[], SECRET))).await;
    assert!(matches!(c.recv().await, Message::AuthAck(_)));
    assert_eq!(
        c.write(vec![put("1", "public_x", "k", 1, ts(1, "c"))])
            .await,
        OpId::from("1")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_token_gets_auth_fail_and_a_close() {
    let (server, _store) = auth_server().await;
    for bad in [token("alice", &[], b"wrong-secret"), "not.a.jwt".to_owned()] {
        let mut c = server.connect().await;
        assert!(matches!(c.recv().await, Message::AuthRequired(_)));
        c.send(&auth(bad)).await;
        match c.recv().await {
            Message::AuthFail(fail) => {
                assert_eq!(fail.code, Some(401));
                assert!(fail.error.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.next().await, Received::Closed(_)));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rules_refuse_forbidden_writes_and_reads() {
    let (server, store) = auth_server().await;
    let mut bob = server.connect().await;
    bob.recv().await;
    bob.send(&auth(token("bob", &["viewer"], SECRET))).await;
    assert!(matches!(bob.recv().await, Message::AuthAck(_)));
    bob.send(&batch(vec![
        put("1", "public_news", "k", 1, ts(1, "b")),
        put("2", "private", "k", 1, ts(2, "b")),
    ]))
    .await;
    for id in ["1", "2"] {
        match bob.recv().await {
            Message::OpRejected(r) => {
                assert_eq!(r.op_id, OpId::from(id));
                assert_eq!(r.code, Some(403));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(bob.recv().await, Message::OpAck(a) if a.last_id == OpId::from("2")));
    assert!(store.get("public_news", "k").await.unwrap().is_none());

    // Reading public_* is allowed to anyone; other maps match no rule.
    bob.send(&Message::SyncInit(SyncInit {
        map_name: "public_news".into(),
        root_hash: None,
        bucket_hashes: None,
        last_sync_timestamp: None,
    }))
    .await;
    assert!(matches!(bob.recv().await, Message::SyncRespRoot(_)));
    bob.send(&Message::SyncInit(SyncInit {
        map_name: "private".into(),
        root_hash: None,
        bucket_hashes: None,
        last_sync_timestamp: None,
    }))
    .await;
    assert_eq!(error_code(&bob.recv().await), Some(403));

    // An admin (by role) may write.
    let mut admin = server.connect().await;
    admin.recv().await;
    admin.send(&auth(token("dave", &["admin"], SECRET))).await;
    assert!(matches!(admin.recv().await, Message::AuthAck(_)));
    admin
        .write(vec![put("1", "public_news", "k", 1, ts(1, "d"))])
        .await;
    assert!(store.get("public_news", "k").await.unwrap().is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn no_auth_mode_answers_device_hello_and_sends_nothing_first() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    c.expect_silence(100).await;
    c.send(&Message::DeviceHello(DeviceHello::default())).await;
    assert!(matches!(c.recv().await, Message::DeviceAck(_)));
    c.send(&auth("anything".into())).await;
    assert!(matches!(c.recv().await, Message::AuthAck(_)));
    server.stop().await.unwrap();
}
