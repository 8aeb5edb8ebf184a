//! The JavaScript API in headless Chromium, on a real IndexedDB; with
//! `TOPGUN_TEST_SERVER` set at build time (`cargo xtask ci` starts a
//! `topgun serve` and sets it), two clients also sync through that real
//! server over the browser's WebSocket.
#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use js_sys::Reflect;
use topgun_wasm::{JsClient, JsMap, Listener};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        js_sys::Date::now(),
        js_sys::Math::random()
    )
}

fn options(pairs: &[(&str, JsValue)]) -> JsValue {
    let object = js_sys::Object::new();
    for (name, value) in pairs {
        Reflect::set(&object, &JsValue::from_str(name), value).unwrap();
    }
    object.into()
}

fn json(value: &JsValue) -> String {
    js_sys::JSON::stringify(value).unwrap().into()
}

/// A JS callback, and the JSON of each value it is called with.
fn json_callback() -> (
    wasm_bindgen::closure::Closure<dyn FnMut(JsValue)>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let callback = wasm_bindgen::closure::Closure::new(move |event: JsValue| {
        let _ = tx.send(json(&event));
    });
    (callback, rx)
}

async fn open_db(name: &str) -> JsClient {
    JsClient::open(options(&[("databaseName", name.into())]))
        .await
        .unwrap()
}

fn todo(title: &str, done: bool) -> JsValue {
    js_sys::JSON::parse(&format!(r#"{{"title":"{title}","done":{done}}}"#)).unwrap()
}

#[wasm_bindgen_test]
async fn put_get_remove_clear_and_entries_answer_locally() {
    let client = open_db(&unique("local")).await;
    assert_eq!(client.state(), "OFFLINE");
    let todos = client.get_map("todos").unwrap();
    todos.put("t2".into(), todo("bread", true)).await.unwrap();
    todos.put("t1".into(), todo("milk", false)).await.unwrap();
    assert_eq!(
        json(&todos.get("t1".into()).await.unwrap()),
        r#"{"done":false,"title":"milk"}"#
    );
    assert_eq!(
        json(&todos.entries().await.unwrap()),
        r#"[["t1",{"done":false,"title":"milk"}],["t2",{"done":true,"title":"bread"}]]"#
    );
    let page = todos
        .query(js_sys::JSON::parse(r#"{"where":{"done":true}}"#).unwrap())
        .await
        .unwrap();
    assert_eq!(
        json(&page),
        r#"{"results":[{"key":"t2","value":{"done":true,"title":"bread"}}],"hasMore":false,"nextCursor":null}"#
    );
    assert_eq!(client.pending_ops().await.unwrap(), 2.0);
    let done = js_sys::JSON::parse(r#"{"where":{"done":true}}"#).unwrap();
    assert_eq!(todos.count(done).await.unwrap(), 1.0);
    assert_eq!(todos.count(JsValue::UNDEFINED).await.unwrap(), 2.0);

    // Many at once: absent keys read as `undefined`; a bad entry fails
    // the call, the others are written.
    todos
        .put_many(js_sys::JSON::parse(r#"[["m1",{"n":1}],["m2",null]]"#).unwrap())
        .await
        .unwrap();
    let many = todos
        .get_many(vec!["m2".into(), "none".into(), "m1".into()])
        .await
        .unwrap();
    assert_eq!(json(&many), r#"[null,null,{"n":1}]"#);
    assert!(Reflect::get_u32(&many, 1).unwrap().is_undefined());
    assert!(
        Reflect::get_u32(&many, 0).unwrap().is_null(),
        "a stored null"
    );
    let bad = todos
        .put_many(js_sys::JSON::parse(r#"[["",1],["m3",3]]"#).unwrap())
        .await;
    let code = Reflect::get(&bad.unwrap_err(), &"code".into()).unwrap();
    assert_eq!(code.as_string().as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(todos.get("m3".into()).await.unwrap().as_f64(), Some(3.0));
    for key in ["m1", "m2", "m3"] {
        todos.remove(key.into()).await.unwrap();
    }

    todos.remove("t1".into()).await.unwrap();
    assert!(todos.get("t1".into()).await.unwrap().is_undefined());
    todos.clear().await.unwrap();
    assert_eq!(json(&todos.entries().await.unwrap()), "[]");
}

#[wasm_bindgen_test]
async fn data_survives_a_reopen_of_the_database() {
    let name = unique("reopen");
    let client = open_db(&name).await;
    client
        .get_map("notes")
        .unwrap()
        .put("n".into(), JsValue::from_str("kept"))
        .await
        .unwrap();
    client.close().await;

    let reopened = open_db(&name).await;
    let value = reopened
        .get_map("notes")
        .unwrap()
        .get("n".into())
        .await
        .unwrap();
    assert_eq!(value.as_string().as_deref(), Some("kept"));
    assert_eq!(reopened.pending_ops().await.unwrap(), 1.0);
}

/// `getMap` preloads the map (unless `preload: false`) while the page
/// goes on: writes made during the preload, and queries asked during it,
/// answer as without one.
#[wasm_bindgen_test]
async fn queries_during_a_preload_see_the_writes_made_meanwhile() {
    let name = unique("preload");
    let client = open_db(&name).await;
    let entries: Vec<String> = (0..600)
        .map(|i| format!(r#"["k{i:03}",{{"n":{i},"even":{}}}]"#, i % 2 == 0))
        .collect();
    let entries = js_sys::JSON::parse(&format!("[{}]", entries.join(","))).unwrap();
    client
        .get_map("docs")
        .unwrap()
        .put_many(entries)
        .await
        .unwrap();
    client.close().await;

    let even = js_sys::JSON::parse(r#"{"where":{"even":true},"limit":1000}"#).unwrap();
    for preload in [true, false] {
        let reopened = JsClient::open(options(&[
            ("databaseName", name.as_str().into()),
            ("preload", preload.into()),
        ]))
        .await
        .unwrap();
        let docs = reopened.get_map("docs").unwrap();
        let (put, removed, counted) = futures_util::future::join3(
            docs.put(
                "k999".into(),
                js_sys::JSON::parse(r#"{"n":999,"even":true}"#).unwrap(),
            ),
            docs.remove("k000".into()),
            docs.count(even.clone()),
        )
        .await;
        put.unwrap();
        removed.unwrap();
        let counted = counted.unwrap();
        assert!((299.0..=301.0).contains(&counted), "{counted}");
        let page = docs.query(even.clone()).await.unwrap();
        let results: js_sys::Array = Reflect::get(&page, &"results".into()).unwrap().into();
        let keys: Vec<String> = results
            .iter()
            .map(|row| {
                Reflect::get(&row, &"key".into())
                    .unwrap()
                    .as_string()
                    .unwrap()
            })
            .collect();
        assert_eq!(keys.len(), 300, "preload {preload}");
        assert_eq!(keys.first().map(String::as_str), Some("k002"));
        assert_eq!(keys.last().map(String::as_str), Some("k999"));
        // Put back for the next round.
        docs.put(
            "k000".into(),
            js_sys::JSON::parse(r#"{"n":0,"even":true}"#).unwrap(),
        )
        .await
        .unwrap();
        docs.remove("k999".into()).await.unwrap();
        reopened.close().await;
    }
}

#[wasm_bindgen_test]
async fn errors_are_js_errors_with_a_stable_code() {
    let client = open_db(&unique("errors")).await;
    let code = |error: &JsValue| {
        assert!(
            error.is_instance_of::<js_sys::Error>(),
            "{error:?} is an Error"
        );
        Reflect::get(error, &"code".into())
            .unwrap()
            .as_string()
            .unwrap()
    };
    let empty_key = client
        .get_map("m")
        .unwrap()
        .put(String::new(), 1.into())
        .await;
    assert_eq!(code(&empty_key.unwrap_err()), "INVALID_ARGUMENT");
    // Values are what JSON holds: `undefined` and a BigInt are refused.
    let map = client.get_map("m").unwrap();
    let undefined = map.put("u".into(), JsValue::UNDEFINED).await;
    assert_eq!(code(&undefined.unwrap_err()), "INVALID_ARGUMENT");
    let big = map.put("b".into(), js_sys::BigInt::from(7).into()).await;
    assert_eq!(code(&big.unwrap_err()), "INVALID_ARGUMENT");
    let bad_option = JsClient::open(options(&[("colour", "red".into())])).await;
    assert_eq!(code(&bad_option.unwrap_err()), "INVALID_ARGUMENT");
    let map = client.get_map("m").unwrap();
    client.close().await;
    assert_eq!(code(&map.get("k".into()).await.unwrap_err()), "CLOSED");
}

#[wasm_bindgen_test]
async fn subscribers_see_local_changes() {
    let client = open_db(&unique("subscribe")).await;
    let map = client.get_map("m").unwrap();
    let (callback, mut rx) = json_callback();
    let listener = map.subscribe(callback.as_ref().clone().into());
    map.put("k".into(), 7.into()).await.unwrap();
    assert_eq!(
        rx.recv().await.unwrap(),
        r#"{"key":"k","oldValue":null,"newValue":7,"origin":"local"}"#
    );
    listener.stop();
    drop(callback);
}

/// The server `cargo xtask ci` started, if any.
const SERVER: Option<&str> = option_env!("TOPGUN_TEST_SERVER");

async fn online(url: &str, name: &str) -> JsClient {
    let client = JsClient::open(options(&[
        ("databaseName", name.into()),
        ("serverUrl", url.into()),
        ("maps", js_sys::JSON::parse(r#"["shared"]"#).unwrap()),
    ]))
    .await
    .unwrap();
    client
}

/// Waits until `map` holds `key` (the client applies remote changes in
/// the background; its change events say when).
async fn until_present(map: &JsMap, key: &str) -> JsValue {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let callback = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |_| {
        let _ = tx.send(());
    });
    let listener = map.subscribe(callback.as_ref().clone().into());
    loop {
        let value = map.get(key.into()).await.unwrap();
        if !value.is_undefined() {
            listener.stop();
            return value;
        }
        rx.recv().await.unwrap();
    }
}

#[wasm_bindgen_test]
async fn two_browser_clients_sync_through_a_real_server() {
    let Some(url) = SERVER else {
        wasm_bindgen_test::console_log!("TOPGUN_TEST_SERVER unset: sync test skipped");
        return;
    };
    let run = unique("run");
    let alice = online(url, &format!("alice-{run}")).await;
    let bob = online(url, &format!("bob-{run}")).await;
    let key = format!("from-alice-{run}");
    alice
        .get_map("shared")
        .unwrap()
        .put(key.clone(), todo("synced", false))
        .await
        .unwrap();
    let seen = until_present(&bob.get_map("shared").unwrap(), &key).await;
    assert_eq!(json(&seen), r#"{"done":false,"title":"synced"}"#);

    let back = format!("from-bob-{run}");
    bob.get_map("shared")
        .unwrap()
        .put(back.clone(), JsValue::from_str("reply"))
        .await
        .unwrap();
    let seen = until_present(&alice.get_map("shared").unwrap(), &back).await;
    assert_eq!(seen.as_string().as_deref(), Some("reply"));
}

/// Waits until `done()` holds, checking again on every call of the
/// callback given to `register` (an event source of the client).
async fn until(register: impl FnOnce(js_sys::Function) -> Listener, done: impl Fn() -> bool) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let callback = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |_| {
        let _ = tx.send(());
    });
    let listener = register(callback.as_ref().clone().into());
    while !done() {
        rx.recv().await.unwrap();
    }
    listener.stop();
}

/// Waits until `client`'s role is `role`.
async fn until_role(client: &JsClient, role: &str) {
    until(|f| client.on_role_change(f), || client.role() == role).await;
}

/// Waits until `client` shows `state`.
async fn until_state(client: &JsClient, state: &str) {
    until(|f| client.on_state_change(f), || client.state() == state).await;
}

/// A fresh database (named from `prefix`) and its first tab, once it
/// leads.
async fn leading_tab(prefix: &str) -> (String, JsClient) {
    let database = unique(prefix);
    let first = open_db(&database).await;
    until_role(&first, "leader").await;
    (database, first)
}

/// Two clients on one database stand for two tabs of one origin (Web Locks
/// and BroadcastChannel work alike between objects of one page).
#[wasm_bindgen_test]
async fn tabs_share_a_database_and_one_leader_syncs() {
    let (database, first) = leading_tab("tabs").await;
    let second = open_db(&database).await;
    assert_eq!(second.role(), "follower");

    // A follower's write reaches the leader's map and its subscribers.
    let leader_map = first.get_map("todos").unwrap();
    second
        .get_map("todos")
        .unwrap()
        .put("from-follower".into(), todo("shared", false))
        .await
        .unwrap();
    let seen = until_present(&leader_map, "from-follower").await;
    assert_eq!(json(&seen), r#"{"done":false,"title":"shared"}"#);

    // And the other way round: the follower's subscribers see the
    // leader's writes in order, with the values before them.
    let follower_map = second.get_map("todos").unwrap();
    let (callback, mut rx) = json_callback();
    let listener = follower_map.subscribe(callback.as_ref().clone().into());
    for value in 1..=3 {
        leader_map.put("k".into(), value.into()).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(rx.recv().await.unwrap());
    }
    assert_eq!(
        seen,
        [
            r#"{"key":"k","oldValue":null,"newValue":1,"origin":"local"}"#,
            r#"{"key":"k","oldValue":1,"newValue":2,"origin":"local"}"#,
            r#"{"key":"k","oldValue":2,"newValue":3,"origin":"local"}"#,
        ]
    );
    listener.stop();
    assert_eq!(
        follower_map.get("k".into()).await.unwrap().as_f64(),
        Some(3.0)
    );

    // The leader closes: the follower takes over.
    first.close().await;
    until_role(&second, "leader").await;
}

/// A tab that closes right after a write still posts the change to the
/// other tabs.
#[wasm_bindgen_test]
async fn changes_made_just_before_a_close_reach_the_other_tabs() {
    let (database, first) = leading_tab("close-flush").await;
    let second = open_db(&database).await;
    let follower_map = second.get_map("todos").unwrap();
    let (callback, mut rx) = json_callback();
    let listener = follower_map.subscribe(callback.as_ref().clone().into());
    let leader_map = first.get_map("todos").unwrap();
    leader_map.put("k".into(), 1.into()).await.unwrap();
    first.close().await;
    assert_eq!(
        rx.recv().await.unwrap(),
        r#"{"key":"k","oldValue":null,"newValue":1,"origin":"local"}"#
    );
    listener.stop();
    second.close().await;
}

/// The variant of a tab message (MessagePack: a unit variant is its
/// name, any other a map of one entry keyed by its name).
fn variant(bytes: &[u8]) -> String {
    let name = match bytes {
        [0x81, rest @ ..] => rest,
        all => all,
    };
    let Some((&head @ 0xa0..=0xbf, rest)) = name.split_first() else {
        panic!("not a tab message: {bytes:?}");
    };
    String::from_utf8(rest[..usize::from(head & 0x1f)].to_vec()).unwrap()
}

/// A listener on the tabs' channel of `database` that says nothing: the
/// channel, the messages posted on it, and the handler to keep alive.
fn listen_to_tabs(
    database: &str,
) -> (
    web_sys::BroadcastChannel,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    wasm_bindgen::closure::Closure<dyn FnMut(web_sys::MessageEvent)>,
) {
    let channel = web_sys::BroadcastChannel::new(&format!("topgun:{database}")).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let on_message = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
        move |event: web_sys::MessageEvent| {
            let _ = tx.send(js_sys::Uint8Array::new(&event.data()).to_vec());
        },
    );
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    (channel, rx, on_message)
}

/// Posts a `Hello` of a tab that joined at `at` on `channel`, and returns
/// the variants of the messages that answer it (heartbeats left out) up
/// to the leader's `State`.
async fn hello_answers(
    channel: &web_sys::BroadcastChannel,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    at: u64,
) -> Vec<String> {
    let hello = serde_json::json!({ "Hello": { "at": at } });
    let hello = js_sys::Uint8Array::from(rmp_serde::to_vec_named(&hello).unwrap().as_slice());
    channel.post_message(&hello).unwrap();
    let mut answers = Vec::new();
    while !answers.iter().any(|m| m == "State") {
        let message = variant(&rx.recv().await.unwrap());
        if message != "Heartbeat" {
            answers.push(message);
        }
    }
    answers
}

/// A leader that has heard from no other tab posts no changes. A tab that
/// joins says when; the leader answers the first such `Hello` with the
/// changes it kept (before its state), a later one from a tab that joined
/// before such a change with `Resync`, and posts every change after.
#[wasm_bindgen_test]
async fn a_lone_leader_posts_no_changes_until_a_tab_joins() {
    let (database, first) = leading_tab("alone").await;
    // A listener on the tabs' channel that has said nothing yet.
    let (channel, mut rx, _on_message) = listen_to_tabs(&database);

    let joined = js_sys::Date::now() as u64;
    let map = first.get_map("todos").unwrap();
    map.put("k".into(), 1.into()).await.unwrap();
    // A tab's messages arrive in the order it posted them, and the second
    // heartbeat from now was posted after the write's change would have
    // been.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let message = variant(&rx.recv().await.unwrap());
        assert_ne!(message, "Changes", "a lone leader posted a change");
        heartbeats += usize::from(message == "Heartbeat");
    }

    // A tab that joined before that write says hello: the leader still
    // has the change, and posts it. Another one that joined before it:
    // the change was posted, perhaps before that tab listened, so what it
    // read is read again. Then one that joined well after it: nothing it
    // read can be stale.
    assert_eq!(
        hello_answers(&channel, &mut rx, joined).await,
        ["Unposted", "State"]
    );
    assert_eq!(
        hello_answers(&channel, &mut rx, joined).await,
        ["Resync", "State"]
    );
    let later = js_sys::Date::now() as u64 + 5_000;
    assert_eq!(hello_answers(&channel, &mut rx, later).await, ["State"]);

    // From now on the leader has company: its changes are posted.
    map.put("k".into(), 2.into()).await.unwrap();
    while variant(&rx.recv().await.unwrap()) != "Changes" {}
    channel.close();
    first.close().await;
}

/// A lone leader that closes posts the changes it left unposted (a tab's
/// `Hello` may be on its way); a tab applies those left after it joined.
#[wasm_bindgen_test]
async fn a_lone_leader_posts_its_unposted_changes_when_it_closes() {
    let (database, first) = leading_tab("alone-close").await;
    // A listener on the tabs' channel that says nothing.
    let (channel, mut rx, _on_message) = listen_to_tabs(&database);
    let map = first.get_map("todos").unwrap();
    map.put("early".into(), 1.into()).await.unwrap();
    map.put("late".into(), 2.into()).await.unwrap();
    first.close().await;
    let unposted = loop {
        let message = rx.recv().await.unwrap();
        match variant(&message).as_str() {
            "Heartbeat" => {}
            "Unposted" => break message,
            other => panic!("a closing lone leader posted {other} before its changes"),
        }
    };
    assert_eq!(variant(&rx.recv().await.unwrap()), "Leaving");

    // Its changes, each in a batch of its own, times set as a test needs.
    let rmpv::Value::Map(entries) = rmp_serde::from_slice(&unposted).unwrap() else {
        panic!("not a map");
    };
    let rmpv::Value::Array(batches) = &entries[0].1 else {
        panic!("no batches");
    };
    let frames: Vec<rmpv::Value> = batches
        .iter()
        .flat_map(|batch| batch[1].as_array().unwrap().clone())
        .collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let batch = |at: f64, frame: &rmpv::Value| {
        rmpv::Value::Array(vec![(at as u64).into(), vec![frame.clone()].into()])
    };

    // A tab that joins now applies the one left after it joined, not the
    // one left well before.
    let before = js_sys::Date::now();
    let second = open_db(&database).await;
    let (callback, mut rx) = json_callback();
    let listener = second
        .get_map("todos")
        .unwrap()
        .subscribe(callback.as_ref().clone().into());
    let batches = vec![
        batch(before - 5_000.0, &frames[0]),
        batch(js_sys::Date::now(), &frames[1]),
    ];
    let message = rmpv::Value::Map(vec![("Unposted".into(), batches.into())]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &message).unwrap();
    channel
        .post_message(&js_sys::Uint8Array::from(bytes.as_slice()))
        .unwrap();
    assert_eq!(
        rx.recv().await.unwrap(),
        r#"{"key":"late","oldValue":null,"newValue":2,"origin":"local"}"#
    );
    listener.stop();
    channel.close();
    second.close().await;
}

/// Puts `k0` = 0 to `k8999` = 8999 into `map` with one `putMany`: more
/// changes at once than a tab's change feed holds for its relay.
async fn put_more_than_the_feed_holds(map: &JsMap) {
    let entries: js_sys::Array = (0..9_000)
        .map(|i| js_sys::Array::of2(&format!("k{i}").into(), &i.into()))
        .collect();
    map.put_many(entries.into()).await.unwrap();
}

/// A lone leader whose changes outrun its relay keeps none of them: a tab
/// that joined before says `Hello` and hears they were lost.
#[wasm_bindgen_test]
async fn a_lone_leader_tells_a_tab_that_joins_of_the_changes_it_lost() {
    let (database, first) = leading_tab("alone-lost").await;
    let (channel, mut rx, _on_message) = listen_to_tabs(&database);
    let joined = js_sys::Date::now() as u64;
    put_more_than_the_feed_holds(&first.get_map("bulk").unwrap()).await;
    assert_eq!(
        hello_answers(&channel, &mut rx, joined).await,
        ["Lost", "State"]
    );
    channel.close();
    first.close().await;
}

/// A tab whose changes outrun its relay to the other tabs (a `putMany`
/// of more changes than its feed holds) says they were lost: the other
/// tabs' subscribers are told (`LAGGED`), of every map, and their reads
/// see the new values.
#[wasm_bindgen_test]
async fn changes_lost_on_the_way_to_another_tab_are_reported_to_its_subscribers() {
    let (database, first) = leading_tab("lost").await;
    let second = open_db(&database).await;
    let follower_todos = second.get_map("todos").unwrap();
    let follower_bulk = second.get_map("bulk").unwrap();
    // Read before: the first changes are the ones the relay loses.
    assert!(follower_bulk.get("k0".into()).await.unwrap().is_undefined());
    let (callback, mut rx) = json_callback();
    let listener = follower_todos.subscribe(callback.as_ref().clone().into());

    // Whether the leader has heard the second tab yet or not, the loss
    // reaches it before the change after.
    put_more_than_the_feed_holds(&first.get_map("bulk").unwrap()).await;
    first
        .get_map("todos")
        .unwrap()
        .put("after".into(), 1.into())
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), r#"{"code":"LAGGED"}"#);
    assert_eq!(
        rx.recv().await.unwrap(),
        r#"{"key":"after","oldValue":null,"newValue":1,"origin":"local"}"#
    );
    listener.stop();
    let read = follower_bulk.get("k0".into()).await.unwrap();
    assert_eq!(read.as_f64(), Some(0.0));
    second.close().await;
    first.close().await;
}

/// Hides `navigator.locks` from tabs that join until `restore` runs, as
/// in a browser without Web Locks.
fn hide_web_locks() -> impl FnOnce() {
    let navigator: js_sys::Object = Reflect::get(&js_sys::global(), &"navigator".into())
        .unwrap()
        .unchecked_into();
    let hidden = js_sys::Object::new();
    Reflect::set(&hidden, &"value".into(), &JsValue::UNDEFINED).unwrap();
    Reflect::set(&hidden, &"configurable".into(), &JsValue::TRUE).unwrap();
    js_sys::Object::define_property(&navigator, &"locks".into(), &hidden);
    assert!(Reflect::get(&navigator, &"locks".into())
        .unwrap()
        .is_undefined());
    move || {
        Reflect::delete_property(&navigator, &"locks".into()).unwrap();
    }
}

/// Without Web Locks the heartbeats elect one leader, and a follower takes
/// over when it leaves; at no role change are two tabs leading.
#[wasm_bindgen_test]
async fn without_web_locks_heartbeats_elect_one_leader() {
    use std::cell::Cell;
    use std::rc::Rc;
    let restore = hide_web_locks();
    let database = unique("no-locks");
    let tabs = Rc::new([
        open_db(&database).await,
        open_db(&database).await,
        open_db(&database).await,
    ]);
    restore();
    let leading = {
        let tabs = tabs.clone();
        move || tabs.iter().filter(|t| t.role() == "leader").count()
    };
    // The most tabs seen leading at once, checked at every role change.
    let most = Rc::new(Cell::new(0));
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watch = {
        let (most, leading) = (most.clone(), leading.clone());
        wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |_| {
            most.set(most.get().max(leading()));
            let _ = tx.send(());
        })
    };
    let listeners: Vec<Listener> = tabs
        .iter()
        .map(|t| t.on_role_change(watch.as_ref().clone().into()))
        .collect();
    while leading() == 0 {
        changed.recv().await.unwrap();
    }
    let leader = tabs.iter().position(|t| t.role() == "leader").unwrap();

    // Followers' writes reach the leader over BroadcastChannel.
    let leader_map = tabs[leader].get_map("todos").unwrap();
    for (i, tab) in tabs.iter().enumerate().filter(|(i, _)| *i != leader) {
        let key = format!("from-{i}");
        tab.get_map("todos")
            .unwrap()
            .put(key.clone(), todo("no locks", false))
            .await
            .unwrap();
        until_present(&leader_map, &key).await;
    }

    // The leader leaves: another tab leads, and takes writes.
    tabs[leader].close().await;
    while leading() == 0 {
        changed.recv().await.unwrap();
    }
    let next = tabs.iter().position(|t| t.role() == "leader").unwrap();
    assert_ne!(next, leader);
    let other = (0..3).find(|i| *i != leader && *i != next).unwrap();
    tabs[other]
        .get_map("todos")
        .unwrap()
        .put("after".into(), todo("handed over", true))
        .await
        .unwrap();
    until_present(&tabs[next].get_map("todos").unwrap(), "after").await;
    assert_eq!(most.get(), 1, "two tabs led at once");
    for listener in listeners {
        listener.stop();
    }
}

#[wasm_bindgen_test]
async fn a_follower_tab_syncs_through_the_leader_and_takes_over() {
    let Some(url) = SERVER else {
        wasm_bindgen_test::console_log!("TOPGUN_TEST_SERVER unset: sync test skipped");
        return;
    };
    let run = unique("handover");
    let database = format!("tabs-{run}");
    let leader = online(url, &database).await;
    until_role(&leader, "leader").await;
    let follower = online(url, &database).await;
    assert_eq!(follower.role(), "follower");
    until_state(&leader, "ONLINE").await;
    until_state(&follower, "ONLINE").await;
    let observer = online(url, &format!("observer-{run}")).await;
    let watched = observer.get_map("shared").unwrap();

    // A follower's write reaches the server through the leader.
    let key = format!("follower-{run}");
    follower
        .get_map("shared")
        .unwrap()
        .put(key.clone(), JsValue::from_str("via leader"))
        .await
        .unwrap();
    let seen = until_present(&watched, &key).await;
    assert_eq!(seen.as_string().as_deref(), Some("via leader"));

    // The leader goes; a write made meanwhile reaches the server from the
    // new leader.
    leader.close().await;
    let key = format!("after-{run}");
    follower
        .get_map("shared")
        .unwrap()
        .put(key.clone(), JsValue::from_str("after handover"))
        .await
        .unwrap();
    until_role(&follower, "leader").await;
    let seen = until_present(&watched, &key).await;
    assert_eq!(seen.as_string().as_deref(), Some("after handover"));
    until_state(&follower, "ONLINE").await;
    assert_eq!(
        follower.pending_ops().await.unwrap(),
        0.0,
        "sent once and acknowledged"
    );
}

#[wasm_bindgen_test]
async fn the_storage_estimate_and_persistence_are_visible() {
    let estimate = JsClient::estimate().await.unwrap();
    let usage = Reflect::get(&estimate, &"usage".into()).unwrap().as_f64();
    let quota = Reflect::get(&estimate, &"quota".into()).unwrap().as_f64();
    assert!(
        usage.is_some() && quota.is_some_and(|q| q > 0.0),
        "{}",
        json(&estimate)
    );
    // Headless Chromium answers; either answer is a boolean.
    let _granted: bool = JsClient::persist().await.unwrap();
}

#[wasm_bindgen_test]
async fn quota_events_reach_javascript() {
    let client = JsClient::open(options(&[
        ("databaseName", unique("quota").into()),
        ("quotaBytes", 2_000.into()),
        ("quotaWarningPercent", 50.into()),
    ]))
    .await
    .unwrap();
    let (callback, mut rx) = json_callback();
    let listener = client.on_quota_event(callback.as_ref().clone().into());
    let map = client.get_map("m").unwrap();
    let value = JsValue::from_str(&"v".repeat(200));
    // Only unsynced writes: the budget fills, warns, then refuses.
    let mut refused = None;
    for i in 0..20 {
        if let Err(error) = map.put(format!("k{i}"), value.clone()).await {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("the budget refuses a write");
    let code = Reflect::get(&error, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("QUOTA_EXCEEDED"));
    let first = rx.recv().await.unwrap();
    assert!(first.starts_with(r#"{"type":"warning","used":"#), "{first}");
    // At half the budget, as asked.
    let used: u64 = first["{\"type\":\"warning\",\"used\":".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1_000..1_500).contains(&used), "{first}");
    let second = rx.recv().await.unwrap();
    assert!(
        second.starts_with(r#"{"type":"exhausted","used":"#),
        "{second}"
    );
    listener.stop();
}

/// `indexedDB.deleteDatabase(name)`, resolved at its `success` (a
/// `blocked` event first only means a connection was still finishing its
/// transactions; one never closed leaves the deletion waiting for ever).
async fn delete_database(name: &str) -> String {
    let factory = Reflect::get(&js_sys::global(), &"indexedDB".into()).unwrap();
    let delete: js_sys::Function = Reflect::get(&factory, &"deleteDatabase".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    let request = delete.call1(&factory, &name.into()).unwrap();
    let outcome = js_sys::Promise::new(&mut |resolve, _reject| {
        for event in ["success"] {
            let resolve = resolve.clone();
            let handler = wasm_bindgen::closure::Closure::once_into_js(move || {
                let _ = resolve.call1(&JsValue::NULL, &event.into());
            });
            Reflect::set(&request, &format!("on{event}").into(), &handler).unwrap();
        }
    });
    wasm_bindgen_futures::JsFuture::from(outcome)
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

#[wasm_bindgen_test]
async fn close_releases_the_database() {
    let name = unique("release");
    let client = open_db(&name).await;
    client
        .get_map("m")
        .unwrap()
        .put("k".into(), 1.into())
        .await
        .unwrap();
    client.close().await;
    assert_eq!(delete_database(&name).await, "success");
}

#[wasm_bindgen_test]
async fn a_token_provider_function_is_called_to_connect() {
    let Some(url) = SERVER else {
        wasm_bindgen_test::console_log!("TOPGUN_TEST_SERVER unset: sync test skipped");
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The server runs without auth: any token is accepted, and asking for
    // it is what this checks.
    let provider =
        wasm_bindgen::closure::Closure::<dyn FnMut() -> js_sys::Promise>::new(move || {
            let _ = tx.send(());
            js_sys::Promise::resolve(&JsValue::from_str("a-token"))
        });
    let client = JsClient::open(options(&[
        ("databaseName", unique("token").into()),
        ("serverUrl", url.into()),
        ("tokenProvider", provider.as_ref().clone()),
    ]))
    .await
    .unwrap();
    rx.recv().await.unwrap();
    until_state(&client, "ONLINE").await;
    client.close().await;
    let not_a_function = JsClient::open(options(&[
        ("databaseName", unique("token").into()),
        ("tokenProvider", 5.into()),
    ]))
    .await;
    let error = not_a_function.unwrap_err();
    let code = Reflect::get(&error, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("INVALID_ARGUMENT"));
    drop(provider);
}
