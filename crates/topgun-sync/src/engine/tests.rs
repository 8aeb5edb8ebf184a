use super::*;
use topgun_core::wire::{
    AuthFail, AuthRequired, ClientOp, LeafRecord, OpAck, OpBatch, OpId, OpRejected, OpType, Pong,
    ServerEvent, SyncRespBuckets, SyncRespLeaf, SyncRespRoot,
};

/// Counts `key` at `t` in the map's Merkle hashes, as the store's leaf
/// sums would once it is written (a key not counted before).
fn record(e: &mut SyncEngine, map: &str, key: &str, t: &Timestamp) {
    let mut leaves = e.tree(map).map(|s| s.leaves().to_vec()).unwrap_or_default();
    leaves.resize(topgun_core::merkle::LEAVES, 0);
    let (leaf, c) = topgun_core::MerkleSums::contribution(key, t.millis, t.counter, &t.node_id);
    leaves[leaf] = leaves[leaf].wrapping_add(c);
    e.set_tree(map, topgun_core::MerkleSums::from_leaves(leaves));
}

fn ts(m: u64) -> Timestamp {
    Timestamp::new(m, 0, "n")
}

fn op(id: u64, key: &str, size: usize) -> PendingOp {
    PendingOp {
        id,
        ops: vec![ClientOp {
            id: Some(OpId::Text(id.to_string())),
            map_name: "m".into(),
            key: key.into(),
            op_type: None,
            record: Some(WireRecord::new(rmpv::Value::from(id), ts(id))),
            write_concern: None,
            timeout: None,
        }],
        size,
        partial: false,
    }
}

fn states(out: &[Output]) -> Vec<ConnectionState> {
    out.iter()
        .filter_map(|o| {
            if let Output::State(s) = o {
                Some(*s)
            } else {
                None
            }
        })
        .collect()
}

fn sent(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| {
            if let Output::Send(m) = o {
                Some(m)
            } else {
                None
            }
        })
        .collect()
}

/// An engine with map "m", connected and past auth, nothing pending.
fn online() -> SyncEngine {
    online_with(SyncConfig::default())
}

fn online_with(config: SyncConfig) -> SyncEngine {
    let mut e = SyncEngine::new(config);
    e.open_map("m");
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    e.handle(300, Input::Timer(TimerKind::AuthGrace));
    e.handle(
        300,
        Input::PendingLoaded {
            ops: vec![],
            exhausted: true,
        },
    );
    e.handle(
        300,
        Input::frame(Message::SyncRespRoot(SyncRespRoot {
            map_name: "m".into(),
            root_hash: 0,
            timestamp: ts(1),
        })),
    );
    assert_eq!(e.state(), ConnectionState::Online);
    e
}

#[test]
fn passes_through_the_states_in_order() {
    let mut e = SyncEngine::new(SyncConfig::default());
    e.open_map("m");
    let mut seen = vec![e.state()];
    let mut step = |e: &mut SyncEngine, now, input| {
        let out = e.handle(now, input);
        seen.extend(states(&out));
        out
    };
    let out = step(&mut e, 0, Input::Start);
    assert!(out.contains(&Output::Connect));
    step(&mut e, 0, Input::Connected);
    let out = step(&mut e, 300, Input::Timer(TimerKind::AuthGrace));
    let frames = sent(&out);
    assert!(matches!(frames[0], Message::QuerySub(q) if q.query_id == "map:m:"));
    assert!(
        matches!(frames[1], Message::SyncInit(s) if s.map_name == "m"),
        "subscribe, then pull"
    );
    assert!(out.contains(&Output::LoadPending {
        after: None,
        limit: 5_000
    }));
    step(
        &mut e,
        300,
        Input::PendingLoaded {
            ops: vec![],
            exhausted: true,
        },
    );
    assert_eq!(
        e.state(),
        ConnectionState::Syncing,
        "not online before the pull completes"
    );
    let out = step(
        &mut e,
        301,
        Input::frame(Message::SyncRespRoot(SyncRespRoot {
            map_name: "m".into(),
            root_hash: 0,
            timestamp: ts(1),
        })),
    );
    assert!(out.contains(&Output::Event(SyncEvent::PullComplete("m".into()))));
    assert!(sent(&out).is_empty(), "equal roots: no walk");
    assert_eq!(
        seen,
        vec![
            ConnectionState::Offline,
            ConnectionState::Connecting,
            ConnectionState::Syncing,
            ConnectionState::Online
        ]
    );
}

#[test]
fn pushes_in_batches_and_acks_only_known_ids() {
    let mut e = online();
    let out = e.handle(400, Input::LocalChange);
    assert_eq!(states(&out), vec![ConnectionState::Syncing]);
    assert!(out.contains(&Output::SetTimer {
        timer: TimerKind::PushDelay,
        after_ms: 2
    }));
    // A second write within the delay does not set another timer.
    assert!(e.handle(400, Input::LocalChange).is_empty());
    let out = e.handle(402, Input::Timer(TimerKind::PushDelay));
    assert!(out.contains(&Output::LoadPending {
        after: None,
        limit: 5_000
    }));
    let out = e.handle(
        402,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10), op(2, "b", 10), op(3, "c", 10)],
            exhausted: true,
        },
    );
    let frames = sent(&out);
    assert_eq!(frames.len(), 1);
    let Message::OpBatch(OpBatch { ops, .. }) = frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(ops.len(), 3);
    // An ack naming no batch of ours (TopGun's generic acks) acks nothing.
    let out = e.handle(
        403,
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Text("7".into()),
            achieved_level: None,
            results: None,
        })),
    );
    assert!(!out.iter().any(|o| matches!(o, Output::MarkSynced(_))));
    assert_eq!(e.state(), ConnectionState::Syncing);
    // A numeric lastId matches the string id we sent.
    let out = e.handle(
        404,
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Number(3),
            achieved_level: None,
            results: None,
        })),
    );
    assert!(out.contains(&Output::MarkSynced(vec![1, 2, 3])));
    assert_eq!(e.state(), ConnectionState::Online);
}

#[test]
fn batches_respect_the_size_cap_and_the_in_flight_window() {
    let mut e = online_with(SyncConfig {
        max_batches_in_flight: 4,
        ..SyncConfig::default()
    });
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    let ops: Vec<PendingOp> = (1..=10).map(|i| op(i, &format!("k{i}"), 600_000)).collect();
    let out = e.handle(
        2,
        Input::PendingLoaded {
            ops,
            exhausted: true,
        },
    );
    let frames = sent(&out);
    assert_eq!(frames.len(), 4, "at most 4 batches in flight");
    for f in &frames {
        let Message::OpBatch(b) = f else { panic!() };
        assert!(
            b.ops.len() <= 2,
            "2 ops of 600 KB fit under 1.5 MiB, 3 do not"
        );
    }
    let out = e.handle(
        3,
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Text("2".into()),
            achieved_level: None,
            results: None,
        })),
    );
    assert!(out.contains(&Output::MarkSynced(vec![1, 2])));
    assert_eq!(sent(&out).len(), 1, "the window refills");
}

#[test]
fn unacked_batches_are_resent_after_a_reconnect() {
    let mut e = online();
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    e.handle(
        2,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10)],
            exhausted: true,
        },
    );
    let out = e.handle(5, Input::Closed("reset".into()));
    assert_eq!(states(&out), vec![ConnectionState::Offline]);
    let delay = out.iter().find_map(|o| match o {
        Output::SetTimer {
            timer: TimerKind::Reconnect,
            after_ms,
        } => Some(*after_ms),
        _ => None,
    });
    assert!(
        delay.is_some_and(|d| (500..=1_000).contains(&d)),
        "{delay:?}"
    );
    let out = e.handle(1_005, Input::Timer(TimerKind::Reconnect));
    assert_eq!(states(&out), vec![ConnectionState::Connecting]);
    e.handle(1_006, Input::Connected);
    let out = e.handle(1_306, Input::Timer(TimerKind::AuthGrace));
    assert!(
        out.contains(&Output::LoadPending {
            after: None,
            limit: 5_000
        }),
        "the log is read again from the start"
    );
}

/// A second close of a connection already lost (two merges of it
/// failed) keeps the reconnect where the first put it; after an auth
/// failure (reconnect at the longest delay) it does not bring it forward.
#[test]
fn a_stale_close_changes_no_reconnect() {
    let reconnect = |out: &[Output]| {
        out.iter().any(|o| {
            matches!(
                o,
                Output::SetTimer {
                    timer: TimerKind::Reconnect,
                    ..
                }
            )
        })
    };
    let mut e = online();
    let out = e.handle(5, Input::Closed("local storage failed".into()));
    assert!(reconnect(&out));
    let out = e.handle(6, Input::Closed("local storage failed".into()));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.state(), ConnectionState::Offline);
    // The reconnect still happens, and a refused connect still backs off.
    let out = e.handle(1_005, Input::Timer(TimerKind::Reconnect));
    assert!(out.contains(&Output::Connect));
    let out = e.handle(1_006, Input::Closed("refused".into()));
    assert!(reconnect(&out));

    let mut e = SyncEngine::new(SyncConfig::default());
    e.set_token(Some("secret".into()));
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    e.handle(
        1,
        Input::frame(Message::AuthFail(AuthFail {
            error: Some("bad token".into()),
            code: Some(401),
        })),
    );
    assert_eq!(e.state(), ConnectionState::Offline);
    let out = e.handle(6, Input::Closed("reset".into()));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn backoff_grows_while_the_server_stays_down() {
    let mut e = SyncEngine::new(SyncConfig::default());
    e.handle(0, Input::Start);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let out = e.handle(0, Input::Closed("refused".into()));
        assert_eq!(e.state(), ConnectionState::Offline);
        delays.extend(out.iter().filter_map(|o| match o {
            Output::SetTimer {
                timer: TimerKind::Reconnect,
                after_ms,
            } => Some(*after_ms),
            _ => None,
        }));
        let out = e.handle(0, Input::Timer(TimerKind::Reconnect));
        assert!(out.contains(&Output::Connect));
    }
    assert_eq!(delays.len(), 6);
    assert!(delays[5] > delays[0] * 8, "{delays:?}");
    assert!(delays.iter().all(|d| *d <= 30_000));
}

#[test]
fn merkle_walk_requests_only_differing_buckets() {
    let mut e = SyncEngine::new(SyncConfig::default());
    e.open_map("m");
    let mut server = MerkleTree::new();
    for i in 0..200 {
        let k = format!("k{i}");
        record(&mut e, "m", &k, &ts(i));
        server.update(&k, &ts(i));
    }
    server.update("k7", &ts(999)); // the one change the client missed
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    e.handle(300, Input::Timer(TimerKind::AuthGrace));
    e.handle(
        300,
        Input::PendingLoaded {
            ops: vec![],
            exhausted: true,
        },
    );
    let mut out = e.handle(
        300,
        Input::frame(Message::SyncRespRoot(SyncRespRoot {
            map_name: "m".into(),
            root_hash: server.root_hash(),
            timestamp: ts(1),
        })),
    );
    let mut requests = 0;
    loop {
        let asks: Vec<String> = sent(&out)
            .into_iter()
            .filter_map(|m| {
                if let Message::MerkleReqBucket(r) = m {
                    Some(r.path.clone())
                } else {
                    None
                }
            })
            .collect();
        let Some(path) = asks.first().cloned() else {
            break;
        };
        assert_eq!(asks.len(), 1, "one differing bucket per level: {asks:?}");
        requests += 1;
        out = if path.len() < 3 {
            let buckets = server
                .buckets(&path)
                .into_iter()
                .map(|(c, h)| (c.to_string(), h))
                .collect();
            e.handle(
                301,
                Input::frame(Message::SyncRespBuckets(SyncRespBuckets {
                    map_name: "m".into(),
                    path,
                    buckets,
                })),
            )
        } else {
            let record = WireRecord::new(rmpv::Value::from(1), ts(999));
            e.handle(
                301,
                Input::frame(Message::SyncRespLeaf(SyncRespLeaf {
                    map_name: "m".into(),
                    path,
                    records: vec![LeafRecord {
                        key: "k7".into(),
                        record,
                    }],
                })),
            )
        };
        if let Some(Output::ApplyRemote { records, .. }) =
            out.iter().find(|o| matches!(o, Output::ApplyRemote { .. }))
        {
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].0, "k7");
        }
    }
    assert_eq!(requests, 4, "root, two inner levels, one leaf");
    assert_eq!(e.state(), ConnectionState::Online);
}

#[test]
fn auth_with_token_failure_and_missing_token() {
    let mut e = SyncEngine::new(SyncConfig::default());
    e.set_token(Some("secret".into()));
    e.handle(0, Input::Start);
    let out = e.handle(0, Input::Connected);
    assert!(matches!(sent(&out)[0], Message::Auth(a) if a.token == "secret"));
    let out = e.handle(
        1,
        Input::frame(Message::AuthFail(AuthFail {
            error: Some("bad token".into()),
            code: Some(401),
        })),
    );
    assert!(out.contains(&Output::Event(SyncEvent::AuthFailed("bad token".into()))));
    assert!(
        out.contains(&Output::SetTimer {
            timer: TimerKind::Reconnect,
            after_ms: 30_000
        }),
        "slow retry: {out:?}"
    );
    assert_eq!(e.state(), ConnectionState::Offline);

    let mut e = SyncEngine::new(SyncConfig::default());
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    let out = e.handle(
        1,
        Input::frame(Message::AuthRequired(AuthRequired { reason: None })),
    );
    assert!(out.iter().any(
        |o| matches!(o, Output::Event(SyncEvent::AuthFailed(r)) if r.contains("none is configured"))
    ));
    assert_eq!(e.state(), ConnectionState::Offline);
}

#[test]
fn dead_connection_is_detected_by_missing_pongs() {
    let mut e = online();
    let out = e.handle(5_000, Input::Timer(TimerKind::Ping));
    assert!(matches!(sent(&out)[0], Message::Ping(p) if p.timestamp == 5_000));
    let out = e.handle(
        5_010,
        Input::frame(Message::Pong(Pong {
            timestamp: 5_000,
            server_time: 6_000,
        })),
    );
    assert!(out.contains(&Output::Event(SyncEvent::ClockSkew(995))));
    e.handle(10_000, Input::Timer(TimerKind::Ping));
    let out = e.handle(25_011, Input::Timer(TimerKind::Ping));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Disconnect(r) if r.contains("PONG"))));
    assert_eq!(e.state(), ConnectionState::Offline);
}

#[test]
fn realtime_events_apply_and_a_bare_remove_is_a_server_dated_tombstone() {
    let mut e = online();
    let rec = WireRecord::new(rmpv::Value::from("v"), ts(50));
    let out = e.handle(
        1_000,
        Input::frame(Message::ServerEvent(ServerEvent {
            map_name: "m".into(),
            event_type: OpType::Put,
            key: "a".into(),
            record: Some(rec.clone()),
        })),
    );
    assert_eq!(
        out,
        vec![Output::ApplyRemote {
            map: "m".into(),
            records: vec![("a".into(), rec)]
        }]
    );
    let out = e.handle(
        1_000,
        Input::frame(Message::ServerEvent(ServerEvent {
            map_name: "m".into(),
            event_type: OpType::Remove,
            key: "a".into(),
            record: None,
        })),
    );
    let Output::ApplyRemote { records, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(records[0].1.is_tombstone());
    assert_eq!(records[0].1.timestamp.millis, 1_000);
    // Events of maps we do not sync are ignored.
    let out = e.handle(
        1_000,
        Input::frame(Message::ServerEvent(ServerEvent {
            map_name: "other".into(),
            event_type: OpType::Put,
            key: "a".into(),
            record: None,
        })),
    );
    assert!(out.is_empty());
}

#[test]
fn rejected_ops_are_dropped_and_reported() {
    let mut e = online();
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    e.handle(
        2,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10)],
            exhausted: true,
        },
    );
    let out = e.handle(
        3,
        Input::frame(Message::OpRejected(OpRejected {
            op_id: OpId::Text("1".into()),
            reason: "forbidden".into(),
            code: Some(403),
        })),
    );
    assert!(out.contains(&Output::MarkSynced(vec![1])));
    assert!(out.contains(&Output::Event(SyncEvent::OpRejected {
        op_id: 1,
        reason: "forbidden".into(),
        code: Some(403)
    })));
}

/// An online engine with two batches in flight (ops 1 and 2, 1 MB each).
fn two_batches_in_flight() -> SyncEngine {
    let mut e = online();
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    let out = e.handle(
        2,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 1_000_000), op(2, "b", 1_000_000)],
            exhausted: true,
        },
    );
    assert_eq!(sent(&out).len(), 2);
    e
}

/// The resend delay a set of outputs schedules, if any.
fn resend_delay(out: &[Output]) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::SetTimer {
            timer: TimerKind::Resend,
            after_ms,
        } => Some(*after_ms),
        _ => None,
    })
}

fn server_error(code: u32) -> Input {
    Input::frame(Message::Error(topgun_core::wire::ServerError {
        code,
        message: "storage failed".into(),
        details: None,
    }))
}

/// Every in-flight batch gets its own `ERROR 500` when the server's store
/// fails: one resend is scheduled at the first delay, not one per error
/// with a delay doubled each time; an ack starts the delays afresh.
#[test]
fn errors_of_all_in_flight_batches_schedule_one_resend() {
    let mut e = two_batches_in_flight();
    let first = resend_delay(&e.handle(3, server_error(500))).expect("a resend");
    assert!((500..=1_000).contains(&first), "{first}");
    assert_eq!(resend_delay(&e.handle(3, server_error(500))), None);

    // The resend goes out; its acks arrive; a later error waits the
    // first delay again.
    e.handle(1_000, Input::Timer(TimerKind::Resend));
    e.handle(
        1_000,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 1_000_000), op(2, "b", 1_000_000)],
            exhausted: true,
        },
    );
    let out = e.handle(
        1_001,
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Text("1".into()),
            achieved_level: None,
            results: None,
        })),
    );
    assert!(out.iter().any(|o| matches!(o, Output::MarkSynced(_))));
    e.handle(1_001, Input::LocalChange);
    e.handle(1_010, Input::Timer(TimerKind::PushDelay));
    e.handle(
        1_010,
        Input::PendingLoaded {
            ops: vec![op(3, "c", 10)],
            exhausted: true,
        },
    );
    let again = resend_delay(&e.handle(1_011, server_error(503))).expect("a resend");
    assert!((500..=1_000).contains(&again), "{again}");
}

/// A resend waits until every batch in flight is answered: the ack of an
/// old batch that arrives after the resend could otherwise match a new
/// batch ending with the same op and mark unapplied ops synced.
#[test]
fn a_resend_waits_for_the_answers_of_every_batch_in_flight() {
    let mut e = two_batches_in_flight();
    // The first batch fails; the second is still unanswered.
    e.handle(3, server_error(500));
    let out = e.handle(1_000, Input::Timer(TimerKind::Resend));
    assert!(
        !out.iter().any(|o| matches!(o, Output::LoadPending { .. })),
        "no resend while a batch is unanswered: {out:?}"
    );
    assert_eq!(resend_delay(&out), Some(10));
    // Its ack arrives: only now are the unacked ops read again.
    let out = e.handle(
        1_005,
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Text("2".into()),
            achieved_level: None,
            results: None,
        })),
    );
    assert!(
        out.iter().any(|o| o == &Output::MarkSynced(vec![2])),
        "{out:?}"
    );
    let out = e.handle(1_010, Input::Timer(TimerKind::Resend));
    assert!(
        out.iter().any(|o| matches!(o, Output::LoadPending { .. })),
        "{out:?}"
    );

    // A server that never answers is waited for at most 5 s.
    let mut e = two_batches_in_flight();
    e.handle(3, server_error(500));
    let out = e.handle(1_000, Input::Timer(TimerKind::Resend));
    assert!(!out.iter().any(|o| matches!(o, Output::LoadPending { .. })));
    let out = e.handle(6_001, Input::Timer(TimerKind::Resend));
    assert!(
        out.iter().any(|o| matches!(o, Output::LoadPending { .. })),
        "{out:?}"
    );
}

#[test]
fn garbage_reconnects_and_a_server_error_resends() {
    let mut e = online();
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    let out = e.handle(
        2,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10)],
            exhausted: true,
        },
    );
    let batch = sent(&out)[0].clone();
    let out = e.handle(
        3,
        Input::frame(Message::Error(topgun_core::wire::ServerError {
            code: 429,
            message: "rate limit exceeded".into(),
            details: None,
        })),
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SetTimer {
            timer: TimerKind::Resend,
            ..
        }
    )));
    let out = e.handle(1_000, Input::Timer(TimerKind::Resend));
    // The unacked ops are read from the log again and resent, same ids.
    assert!(
        out.contains(&Output::LoadPending {
            after: None,
            limit: 5_000
        }),
        "{out:?}"
    );
    let out = e.handle(
        1_000,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10)],
            exhausted: true,
        },
    );
    assert_eq!(sent(&out), vec![&batch], "the same batch, same op ids");

    let out = e.handle(1_001, Input::BadFrame("truncated".into()));
    assert!(out.iter().any(|o| matches!(o, Output::Disconnect(_))));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SetTimer {
            timer: TimerKind::Reconnect,
            ..
        }
    )));
    assert_eq!(e.state(), ConnectionState::Offline);
}

#[test]
fn network_offline_stops_retrying_until_online() {
    let mut e = online();
    let out = e.handle(0, Input::NetworkOffline);
    assert_eq!(e.state(), ConnectionState::Offline);
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::SetTimer {
            timer: TimerKind::Reconnect,
            ..
        }
    )));
    let out = e.handle(0, Input::NetworkOnline);
    assert!(out.contains(&Output::Connect));
}

#[test]
fn without_a_token_a_device_ack_ends_the_auth_wait_at_once() {
    let mut e = SyncEngine::new(SyncConfig::default());
    e.open_map("m");
    e.handle(0, Input::Start);
    let out = e.handle(0, Input::Connected);
    assert!(
        matches!(sent(&out)[..], [Message::DeviceHello(_)]),
        "{out:?}"
    );
    let out = e.handle(
        1,
        Input::frame(Message::DeviceAck(topgun_core::wire::DeviceAck {
            device_id: None,
            device_token: None,
        })),
    );
    assert!(out.contains(&Output::CancelTimer(TimerKind::AuthGrace)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send(Message::SyncInit(_)))),
        "sync starts without waiting: {out:?}"
    );
}

#[test]
fn sync_reset_required_drops_the_copy_and_pulls_again() {
    let mut e = online();
    let out = e.handle(
        10,
        Input::frame(Message::SyncResetRequired(
            topgun_core::wire::SyncResetRequired {
                map_name: "m".into(),
                reason: "server restored from backup".into(),
            },
        )),
    );
    assert!(out.contains(&Output::ResetMap("m".into())));
    assert_eq!(
        e.state(),
        ConnectionState::Syncing,
        "not online while the map is re-pulled"
    );
    let out = e.handle(11, Input::MapResetDone("m".into()));
    assert!(sent(&out)
        .iter()
        .any(|m| matches!(m, Message::SyncInit(s) if s.map_name == "m")));
    // Resets for maps we do not sync are ignored.
    let out = e.handle(
        12,
        Input::frame(Message::SyncResetRequired(
            topgun_core::wire::SyncResetRequired {
                map_name: "other".into(),
                reason: String::new(),
            },
        )),
    );
    assert!(out.is_empty());
}

#[test]
fn a_write_during_a_load_is_not_lost() {
    let mut e = online();
    e.handle(0, Input::LocalChange);
    let out = e.handle(2, Input::Timer(TimerKind::PushDelay));
    assert!(out.iter().any(|o| matches!(o, Output::LoadPending { .. })));
    // A second write lands while the load is outstanding; the load (read
    // before it) says the log is exhausted…
    e.handle(3, Input::LocalChange);
    let out = e.handle(
        4,
        Input::PendingLoaded {
            ops: vec![op(1, "a", 10)],
            exhausted: true,
        },
    );
    // …so the engine reads on from the cursor instead of trusting it.
    assert!(
        out.contains(&Output::LoadPending {
            after: Some(1),
            limit: 5_000
        }),
        "{out:?}"
    );
    let ack = OpAck {
        last_id: OpId::Text("1".into()),
        achieved_level: None,
        results: None,
    };
    e.handle(5, Input::frame(Message::OpAck(ack)));
    assert_ne!(
        e.state(),
        ConnectionState::Online,
        "the second write is still to be loaded"
    );
}

/// Paths asked for in `out`.
fn bucket_requests(out: &[Output]) -> Vec<String> {
    sent(out)
        .into_iter()
        .filter_map(|m| match m {
            Message::MerkleReqBucket(r) => Some(r.path.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pull_keeps_at_most_the_window_of_requests_in_flight() {
    let mut e = SyncEngine::new(SyncConfig {
        pull_requests_in_flight: 2,
        ..SyncConfig::default()
    });
    e.open_map("m");
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    e.handle(300, Input::Timer(TimerKind::AuthGrace));
    let root = |e: &mut SyncEngine| {
        e.handle(
            300,
            Input::frame(Message::SyncRespRoot(SyncRespRoot {
                map_name: "m".into(),
                root_hash: 7,
                timestamp: ts(1),
            })),
        )
    };
    assert_eq!(bucket_requests(&root(&mut e)), [""]);
    // Five differing children: two go out, three wait.
    let buckets = ["0", "1", "2", "3", "4"]
        .into_iter()
        .map(|c| (c.to_owned(), 1))
        .collect();
    let out = e.handle(
        301,
        Input::frame(Message::SyncRespBuckets(SyncRespBuckets {
            map_name: "m".into(),
            path: String::new(),
            buckets,
        })),
    );
    assert_eq!(bucket_requests(&out), ["0", "1"]);
    let empty = |path: &str| {
        Input::frame(Message::SyncRespBuckets(SyncRespBuckets {
            map_name: "m".into(),
            path: path.into(),
            buckets: Default::default(),
        }))
    };
    // Each answer lets one more out, in the order found.
    assert_eq!(bucket_requests(&e.handle(302, empty("1"))), ["2"]);
    assert_eq!(bucket_requests(&e.handle(302, empty("0"))), ["3"]);
    assert_eq!(bucket_requests(&e.handle(302, empty("2"))), ["4"]);
    assert!(bucket_requests(&e.handle(302, empty("3"))).is_empty());
    let out = e.handle(302, empty("4"));
    assert!(out.contains(&Output::Event(SyncEvent::PullComplete("m".into()))));
}

#[test]
fn an_empty_server_map_ends_the_pull_without_a_bucket_request() {
    // TopGun's server answers SYNC_INIT for a map it holds nothing of (never
    // written, or every key removed: it deletes physically) with root 0, and
    // sends nothing back for MERKLE_REQ_BUCKET "" then. A client holding local
    // writes or tombstones of that map must not wait for an answer.
    let mut e = SyncEngine::new(SyncConfig::default());
    e.open_map("m");
    record(&mut e, "m", "k", &ts(5)); // a local tombstone, say
    e.handle(0, Input::Start);
    e.handle(0, Input::Connected);
    e.handle(300, Input::Timer(TimerKind::AuthGrace));
    e.handle(
        300,
        Input::PendingLoaded {
            ops: vec![],
            exhausted: true,
        },
    );
    let out = e.handle(
        301,
        Input::frame(Message::SyncRespRoot(SyncRespRoot {
            map_name: "m".into(),
            root_hash: 0,
            timestamp: ts(1),
        })),
    );
    assert!(bucket_requests(&out).is_empty());
    assert!(out.contains(&Output::Event(SyncEvent::PullComplete("m".into()))));
    assert_eq!(e.state(), ConnectionState::Online);
}

#[test]
fn map_subscriptions_of_two_clients_have_distinct_query_ids() {
    // TopGun's server keeps one subscription per `queryId`, server-wide: a
    // second client subscribing under the same id replaces the first one's,
    // and the first gets no more SERVER_EVENTs.
    let query_id = |client: &str| {
        let mut e = SyncEngine::new(SyncConfig::default());
        e.set_client_id(client);
        e.open_map("m");
        e.handle(0, Input::Start);
        e.handle(0, Input::Connected);
        let out = e.handle(300, Input::Timer(TimerKind::AuthGrace));
        sent(&out)
            .into_iter()
            .find_map(|m| match m {
                Message::QuerySub(q) => Some(q.query_id.clone()),
                _ => None,
            })
            .expect("a map subscription")
    };
    assert_eq!(query_id("alice"), subscription_id("m", "alice"));
    assert_ne!(query_id("alice"), query_id("bob"));
}

#[test]
fn a_clear_split_over_batches_is_acknowledged_with_its_last_part() {
    let mut e = online_with(SyncConfig {
        max_batch_bytes: 100,
        ..SyncConfig::default()
    });
    e.handle(0, Input::LocalChange);
    e.handle(2, Input::Timer(TimerKind::PushDelay));
    let part = |partial| PendingOp {
        partial,
        ..op(7, "k", 80)
    };
    let out = e.handle(
        2,
        Input::PendingLoaded {
            ops: vec![part(true), part(true), part(false)],
            exhausted: true,
        },
    );
    assert_eq!(sent(&out).len(), 3, "one part per batch");
    let ack = || {
        Input::frame(Message::OpAck(OpAck {
            last_id: OpId::Text("7".into()),
            achieved_level: None,
            results: None,
        }))
    };
    let first = e.handle(3, ack());
    assert!(
        !first
            .iter()
            .any(|o| matches!(o, Output::MarkSynced(ids) if !ids.is_empty())),
        "{first:?}"
    );
    e.handle(4, ack());
    let last = e.handle(5, ack());
    assert!(last.contains(&Output::MarkSynced(vec![7])), "{last:?}");
    assert_eq!(e.state(), ConnectionState::Online);
}

fn fetched(out: &[Output]) -> Vec<(&str, &str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Fetched { map, key } => Some((map.as_str(), key.as_str())),
            _ => None,
        })
        .collect()
}

fn fetch(key: &str) -> Input {
    Input::Fetch {
        map: "m".into(),
        key: key.into(),
    }
}

#[test]
fn a_pruned_key_is_fetched_by_its_leaf_and_answered_after_the_merge() {
    let mut e = online();
    // The tree knows "kept" (it was synced); the store pruned it since.
    record(&mut e, "m", "kept", &ts(5));
    let path = MerkleTree::path_of("kept");

    let out = e.handle(400, fetch("kept"));
    let asks: Vec<_> = sent(&out)
        .into_iter()
        .filter_map(|m| match m {
            Message::MerkleReqBucket(r) => Some((r.map_name.as_str(), r.path.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(asks, vec![("m", path.as_str())]);
    assert!(
        fetched(&out).is_empty(),
        "answered only once the leaf is in"
    );

    let out = e.handle(
        401,
        Input::frame(Message::SyncRespLeaf(SyncRespLeaf {
            map_name: "m".into(),
            path: path.clone(),
            records: vec![LeafRecord {
                key: "kept".into(),
                record: WireRecord::new(rmpv::Value::from(1), ts(5)),
            }],
        })),
    );
    let merge = out
        .iter()
        .position(|o| matches!(o, Output::ApplyRemote { .. }))
        .expect("the leaf is merged");
    let answer = out
        .iter()
        .position(|o| matches!(o, Output::Fetched { .. }))
        .expect("the fetch is answered");
    assert!(merge < answer, "{out:?}");
    assert_eq!(fetched(&out), vec![("m", "kept")]);
}

#[test]
fn a_fetch_with_nothing_to_fetch_is_answered_at_once() {
    // A map that is not synced: there is no server copy to ask for.
    let mut e = online();
    let out = e.handle(
        400,
        Input::Fetch {
            map: "other".into(),
            key: "k".into(),
        },
    );
    assert!(sent(&out).is_empty());
    assert_eq!(fetched(&out), vec![("other", "k")]);

    // Offline: nothing can be fetched.
    let mut e = SyncEngine::new(SyncConfig::default());
    e.open_map("m");
    record(&mut e, "m", "kept", &ts(5));
    let out = e.handle(0, fetch("kept"));
    assert!(sent(&out).is_empty());
    assert_eq!(fetched(&out), vec![("m", "kept")]);
}

#[test]
fn a_fetch_in_flight_is_answered_when_the_connection_ends() {
    let mut e = online();
    record(&mut e, "m", "kept", &ts(5));
    e.handle(400, fetch("kept"));
    let out = e.handle(500, Input::Closed("reset".into()));
    assert_eq!(fetched(&out), vec![("m", "kept")]);
}

/// Two keys of one leaf (found by search).
fn same_leaf_keys() -> (String, String) {
    let first = "a0".to_owned();
    let path = MerkleTree::path_of(&first);
    let second = (1..)
        .map(|i| format!("a{i}"))
        .find(|k| MerkleTree::path_of(k) == path)
        .unwrap();
    (first, second)
}

fn leaf_frame(path: &str, keys: &[&str]) -> Input {
    Input::frame(Message::SyncRespLeaf(SyncRespLeaf {
        map_name: "m".into(),
        path: path.into(),
        records: keys
            .iter()
            .map(|k| LeafRecord {
                key: (*k).into(),
                record: WireRecord::new(rmpv::Value::from(1), ts(5)),
            })
            .collect(),
    }))
}

#[test]
fn fetches_of_one_leaf_share_a_request_and_a_split_leaf_answers_each_key_when_it_comes() {
    let mut e = online();
    let (a, b) = same_leaf_keys();
    record(&mut e, "m", &a, &ts(5));
    record(&mut e, "m", &b, &ts(5));
    let path = MerkleTree::path_of(&a);

    let first = e.handle(400, fetch(&a));
    let second = e.handle(400, fetch(&b));
    assert_eq!(sent(&first).len(), 1);
    assert!(sent(&second).is_empty(), "one request per leaf");

    // The leaf comes in two frames: each key is answered with its own.
    let out = e.handle(401, leaf_frame(&path, &[&a]));
    assert_eq!(fetched(&out), vec![("m", a.as_str())]);
    let out = e.handle(402, leaf_frame(&path, &[&b]));
    assert_eq!(fetched(&out), vec![("m", b.as_str())]);
}

#[test]
fn an_unanswered_fetch_is_answered_at_its_deadline() {
    let mut e = online();
    record(&mut e, "m", "kept", &ts(5));
    let out = e.handle(400, fetch("kept"));
    let timeout = SyncConfig::default().fetch_timeout_ms;
    assert!(out.contains(&Output::SetTimer {
        timer: TimerKind::FetchTimeout,
        after_ms: timeout,
    }));
    // A later fetch of another leaf waits its own full time.
    record(&mut e, "m", "other", &ts(5));
    assert_ne!(MerkleTree::path_of("other"), MerkleTree::path_of("kept"));
    e.handle(1_400, fetch("other"));

    let out = e.handle(400 + timeout, Input::Timer(TimerKind::FetchTimeout));
    assert_eq!(fetched(&out), vec![("m", "kept")]);
    assert!(out.contains(&Output::SetTimer {
        timer: TimerKind::FetchTimeout,
        after_ms: 1_000,
    }));
    let out = e.handle(1_400 + timeout, Input::Timer(TimerKind::FetchTimeout));
    assert_eq!(fetched(&out), vec![("m", "other")]);
}

#[test]
fn a_key_joining_a_leaf_fetch_after_a_frame_came_gets_its_own_request() {
    let mut e = online();
    let (a, b) = same_leaf_keys();
    let path = MerkleTree::path_of(&a);
    let c = (1_000..)
        .map(|i| format!("a{i}"))
        .find(|k| MerkleTree::path_of(k) == path)
        .unwrap();
    for k in [&a, &b, &c] {
        record(&mut e, "m", k, &ts(5));
    }
    e.handle(400, fetch(&a));
    e.handle(400, fetch(&c));
    // A frame of the leaf with `a` only; `c` keeps waiting for more.
    let out = e.handle(401, leaf_frame(&path, &[&a]));
    assert_eq!(fetched(&out), vec![("m", a.as_str())]);
    // `b` joins now: the frames still to come need not hold it (it may
    // have been merged from an earlier one and pruned again).
    let out = e.handle(402, fetch(&b));
    assert_eq!(sent(&out).len(), 1, "a new request for the late key");
    let out = e.handle(403, leaf_frame(&path, &[&a, &b, &c]));
    let mut answered = fetched(&out);
    answered.sort_unstable();
    let mut expected = vec![("m", b.as_str()), ("m", c.as_str())];
    expected.sort_unstable();
    assert_eq!(answered, expected);
}
