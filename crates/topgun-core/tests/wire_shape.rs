//! The shape of what we send: one sample of every message, flat vs
//! `payload`, omitted optionals, tombstones, and the encoder's depth check.

mod common;

use common::{frame, map, nested_arrays};
use rmpv::Value;
use std::collections::BTreeMap;
use topgun_core::wire::{self, *};
use topgun_core::Timestamp;

fn ts() -> Timestamp {
    Timestamp::new(1_700_000_000_000, 2, "n1")
}

fn record(value: Value) -> WireRecord {
    WireRecord::new(value, ts())
}

fn op(value: Value) -> ClientOp {
    ClientOp {
        id: Some(OpId::Number(1)),
        map_name: "m".into(),
        key: "k".into(),
        op_type: Some(OpType::Put),
        record: Some(record(value)),
        write_concern: None,
        timeout: None,
    }
}

fn event(value: Value) -> ServerEvent {
    ServerEvent {
        map_name: "m".into(),
        event_type: OpType::Put,
        key: "k".into(),
        record: Some(record(value)),
    }
}

/// One message of every known type, each carrying `value` wherever it has
/// a free-form value, with the number of maps/arrays enclosing that value.
fn samples(value: Value) -> Vec<(Message, Option<usize>)> {
    let v = value;
    vec![
        (
            Message::Auth(Auth {
                token: "t".into(),
                protocol_version: Some(1),
                device_token: None,
            }),
            None,
        ),
        (Message::AuthRequired(AuthRequired { reason: None }), None),
        (
            Message::AuthAck(AuthAck {
                user_id: Some("u".into()),
                ..AuthAck::default()
            }),
            None,
        ),
        (
            Message::AuthFail(AuthFail {
                error: Some("no".into()),
                code: Some(401),
            }),
            None,
        ),
        (
            Message::DeviceHello(DeviceHello {
                device_token: Some("d".into()),
            }),
            None,
        ),
        (
            Message::DeviceAck(DeviceAck {
                device_id: Some("i".into()),
                device_token: None,
            }),
            None,
        ),
        (
            Message::SyncInit(SyncInit {
                map_name: "m".into(),
                root_hash: Some(u32::MAX),
                bucket_hashes: Some(BTreeMap::from([("a".to_owned(), 7)])),
                last_sync_timestamp: Some(0),
            }),
            None,
        ),
        (
            Message::Ping(Ping {
                timestamp: u64::MAX,
            }),
            None,
        ),
        (
            Message::Pong(Pong {
                timestamp: 1,
                server_time: 2,
            }),
            None,
        ),
        (Message::ClientOp(op(v.clone())), Some(3)),
        (
            Message::OpBatch(OpBatch {
                ops: vec![op(v.clone())],
                write_concern: Some(WriteConcern::Applied),
                timeout: Some(5),
            }),
            Some(5),
        ),
        (
            Message::OpAck(OpAck {
                last_id: OpId::from("3"),
                achieved_level: Some(WriteConcern::Applied),
                results: Some(vec![OpResult {
                    op_id: OpId::Number(3),
                    success: false,
                    achieved_level: WriteConcern::Memory,
                    error: Some("e".into()),
                }]),
            }),
            None,
        ),
        (
            Message::OpRejected(OpRejected {
                op_id: "x".into(),
                reason: "r".into(),
                code: None,
            }),
            None,
        ),
        (
            Message::Error(ServerError {
                code: 501,
                message: "m".into(),
                details: Some(v.clone()),
            }),
            Some(2),
        ),
        (
            Message::MerkleReqBucket(MerkleReqBucket {
                map_name: "m".into(),
                path: "".into(),
            }),
            None,
        ),
        (
            Message::SyncRespRoot(SyncRespRoot {
                map_name: "m".into(),
                root_hash: 9,
                timestamp: ts(),
            }),
            None,
        ),
        (
            Message::SyncRespBuckets(SyncRespBuckets {
                map_name: "m".into(),
                path: "a".into(),
                buckets: BTreeMap::new(),
            }),
            None,
        ),
        (
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: "m".into(),
                path: "abc".into(),
                records: vec![
                    LeafRecord {
                        key: "k".into(),
                        record: record(v.clone()),
                    },
                    LeafRecord {
                        key: "gone".into(),
                        record: WireRecord::tombstone(ts()),
                    },
                ],
            }),
            Some(5),
        ),
        (
            Message::SyncResetRequired(SyncResetRequired {
                map_name: "m".into(),
                reason: "r".into(),
            }),
            None,
        ),
        (Message::ServerEvent(event(v.clone())), Some(3)),
        (
            Message::ServerBatchEvent(ServerBatchEvent {
                events: vec![event(v.clone())],
            }),
            Some(5),
        ),
        (
            Message::QuerySub(QuerySub {
                query_id: "q".into(),
                map_name: "m".into(),
                query: Query {
                    where_: Some(v.clone()),
                    sort: Some(Sort::Map(vec![SortKey {
                        field: "f".into(),
                        direction: SortDirection::Asc,
                    }])),
                    limit: Some(10),
                    ..Query::default()
                },
                fields: Some(vec!["f".into()]),
            }),
            Some(3),
        ),
        (
            Message::QueryUnsub(QueryUnsub {
                query_id: "q".into(),
            }),
            None,
        ),
        (
            Message::QueryResp(QueryResp {
                query_id: "q".into(),
                results: vec![QueryResult {
                    key: "k".into(),
                    value: v.clone(),
                }],
                next_cursor: None,
                has_more: Some(false),
                cursor_status: Some(CursorStatus::NoCursor),
            }),
            Some(4),
        ),
        (
            Message::QueryUpdate(QueryUpdate {
                query_id: "q".into(),
                key: "k".into(),
                value: v.clone(),
                change_type: ChangeType::Leave,
            }),
            Some(2),
        ),
        (Message::TopicSub(TopicSub { topic: "t".into() }), None),
        (Message::TopicUnsub(TopicUnsub { topic: "t".into() }), None),
        (
            Message::TopicPub(TopicPub {
                topic: "t".into(),
                data: v,
            }),
            Some(2),
        ),
    ]
}

fn encoded(msg: &Message) -> Value {
    let bytes = wire::encode(msg).expect("sample encodes");
    rmpv::decode::read_value(&mut &bytes[..]).expect("frame reads back")
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_map()
        .expect("a map")
        .iter()
        .map(|(k, _)| k.as_str().expect("string key"))
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn every_message_round_trips_with_its_type_and_shape() {
    const FLAT: &[&str] = &[
        "AUTH",
        "AUTH_REQUIRED",
        "AUTH_ACK",
        "AUTH_FAIL",
        "DEVICE_HELLO",
        "DEVICE_ACK",
        "SYNC_INIT",
        "PING",
        "PONG",
    ];
    let all = samples(map(vec![("name", "Alice".into())]));
    assert_eq!(all.len(), 28);
    for (msg, _) in all {
        let name = msg.type_name().to_owned();
        assert!(Message::is_known_type(&name), "{name}");
        let v = encoded(&msg);
        assert_eq!(v["type"].as_str(), Some(name.as_str()));
        if FLAT.contains(&name.as_str()) {
            assert!(v["payload"].is_nil(), "{name} is flat: {v}");
        } else {
            assert_eq!(keys(&v), ["payload", "type"], "{name} nests its fields");
        }
        assert_eq!(
            wire::decode(&wire::encode(&msg).unwrap()).unwrap(),
            msg,
            "{name}"
        );
        let via_serde: Message = rmp_serde::from_slice(&wire::encode(&msg).unwrap()).unwrap();
        assert_eq!(via_serde, msg, "{name}");
    }
}

#[test]
fn a_tombstone_travels_with_value_nil() {
    let remove = ClientOp {
        op_type: Some(OpType::Remove),
        record: Some(WireRecord::tombstone(ts())),
        ..op(Value::Nil)
    };
    let v = encoded(&Message::ClientOp(remove.clone()));
    let rec = &v["payload"]["record"];
    assert_eq!(
        keys(rec),
        ["timestamp", "value"],
        "value present, ttlMs absent"
    );
    assert!(rec["value"].is_nil());
    assert_eq!(v["payload"]["opType"].as_str(), Some("REMOVE"));
    let Message::ClientOp(back) = wire::decode(&frame(&v)).unwrap() else {
        panic!()
    };
    assert!(back.record.unwrap().is_tombstone());
}

#[test]
fn absent_optionals_are_omitted() {
    let bare = ClientOp {
        id: None,
        map_name: "m".into(),
        key: "k".into(),
        op_type: None,
        record: None,
        write_concern: None,
        timeout: None,
    };
    let v = encoded(&Message::ClientOp(bare));
    assert_eq!(keys(&v["payload"]), ["key", "mapName"]);
    let v = encoded(&Message::AuthAck(AuthAck::default()));
    assert_eq!(keys(&v), ["type"]);
    let v = encoded(&Message::QuerySub(QuerySub {
        query_id: "q".into(),
        map_name: "m".into(),
        query: Query::default(),
        fields: None,
    }));
    assert_eq!(keys(&v["payload"]), ["mapName", "query", "queryId"]);
    assert!(v["payload"]["query"].as_map().unwrap().is_empty());
    let v = encoded(&Message::OpAck(OpAck {
        last_id: 7.into(),
        achieved_level: None,
        results: None,
    }));
    assert_eq!(keys(&v["payload"]), ["lastId"]);
    assert_eq!(
        v["payload"]["lastId"],
        Value::from(7),
        "a numeric id is echoed as a number"
    );
}

#[test]
fn the_encoder_checks_depth_exactly_where_values_sit() {
    let max = DEFAULT_MAX_DEPTH;
    for (msg, above) in samples(Value::Nil) {
        let Some(above) = above else { continue };
        let name = msg.type_name().to_owned();
        // Deepest allowed value: the frame then nests exactly `max` deep.
        let (fits, _) = samples(nested_arrays(max - above))
            .into_iter()
            .find(|(m, _)| m.type_name() == name)
            .unwrap();
        let bytes = wire::encode(&fits).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(wire::decode(&bytes).unwrap(), fits, "{name}");
        // One more level: refused by the encoder, and by the decoder when
        // written anyway.
        let (deep, _) = samples(nested_arrays(max - above + 1))
            .into_iter()
            .find(|(m, _)| m.type_name() == name)
            .unwrap();
        assert!(
            matches!(wire::encode(&deep), Err(EncodeError::TooDeep { .. })),
            "{name}"
        );
        let forced = rmp_serde::to_vec_named(&deep).unwrap();
        assert!(
            matches!(wire::decode(&forced), Err(DecodeError::TooDeep { .. })),
            "{name}"
        );
    }
    // Far too deep for the stack to recurse through: refused before writing.
    let very_deep = Message::TopicPub(TopicPub {
        topic: "t".into(),
        data: nested_arrays(5_000),
    });
    assert!(matches!(
        wire::encode(&very_deep),
        Err(EncodeError::TooDeep { .. })
    ));
}

#[test]
fn extensions_and_binaries_survive_both_decoders() {
    let v = map(vec![
        ("type", "TOPIC_PUB".into()),
        (
            "payload",
            map(vec![
                ("topic", "t".into()),
                (
                    "data",
                    Value::Array(vec![
                        Value::Ext(-1, vec![1, 2, 3]),
                        Value::Binary(vec![0, 255]),
                    ]),
                ),
            ]),
        ),
    ]);
    let bytes = frame(&v);
    let a = wire::decode(&bytes).unwrap();
    let b: Message = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        rmpv::decode::read_value(&mut &wire::encode(&a).unwrap()[..]).unwrap(),
        v
    );
}
