//! The decoder against hostile and sloppy input: whole floats, wrong
//! types, truncation, nesting, size, random bytes. Nothing may panic.

mod common;

use common::{fixtures, frame, map, nested_arrays};
use proptest::prelude::*;
use rmpv::Value;
use serde::Deserialize;
use topgun_core::wire::{
    self, ClientOp, Codec, DecodeError, Message, OpId, DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_LEN,
};

fn ts(millis: Value, counter: Value) -> Value {
    map(vec![
        ("millis", millis),
        ("counter", counter),
        ("nodeId", "n1".into()),
    ])
}

fn op_batch(millis: Value, counter: Value, timeout: Value) -> Value {
    let record = map(vec![
        ("value", "v".into()),
        ("timestamp", ts(millis, counter)),
    ]);
    let op = map(vec![
        ("id", Value::F64(3.0)),
        ("mapName", "m".into()),
        ("key", "k".into()),
        ("record", record),
        ("timeout", timeout.clone()),
    ]);
    map(vec![
        ("type", "OP_BATCH".into()),
        (
            "payload",
            map(vec![("ops", Value::Array(vec![op])), ("timeout", timeout)]),
        ),
    ])
}

#[test]
fn integers_sent_as_whole_floats_are_accepted() {
    let big = 1_700_000_000_000_f64;
    let v = op_batch(Value::F64(big), Value::F64(7.0), Value::F64(5000.0));
    let Message::OpBatch(b) = wire::decode(&frame(&v)).unwrap() else {
        panic!()
    };
    let op = &b.ops[0];
    let t = &op.record.as_ref().unwrap().timestamp;
    assert_eq!((t.millis, t.counter), (1_700_000_000_000, 7));
    assert_eq!((op.timeout, b.timeout), (Some(5000), Some(5000)));
    assert_eq!(op.id, Some(OpId::Number(3)), "a whole-float id is a number");
    // F32 too.
    let v = op_batch(Value::F32(1024.0), Value::F32(1.0), Value::F32(2.0));
    assert!(wire::decode(&frame(&v)).is_ok());

    let flat = [
        map(vec![
            ("type", "PING".into()),
            ("timestamp", Value::F64(big)),
        ]),
        map(vec![
            ("type", "PONG".into()),
            ("timestamp", Value::F64(big)),
            ("serverTime", Value::F64(big)),
        ]),
        map(vec![
            ("type", "SYNC_INIT".into()),
            ("mapName", "m".into()),
            ("rootHash", Value::F64(4_294_967_295.0)),
            ("bucketHashes", map(vec![("a", Value::F64(1.0))])),
            ("lastSyncTimestamp", Value::F64(big)),
        ]),
        map(vec![
            ("type", "AUTH_FAIL".into()),
            ("code", Value::F64(401.0)),
        ]),
        map(vec![
            ("type", "ERROR".into()),
            (
                "payload",
                map(vec![
                    ("code", Value::F64(429.0)),
                    ("message", "slow".into()),
                ]),
            ),
        ]),
        map(vec![
            ("type", "OP_ACK".into()),
            ("payload", map(vec![("lastId", Value::F64(10.0))])),
        ]),
    ];
    for v in flat {
        let msg = wire::decode(&frame(&v)).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(!matches!(msg, Message::Unknown(_)));
    }
    let Message::OpAck(ack) = wire::decode(&frame(&map(vec![
        ("type", "OP_ACK".into()),
        ("payload", map(vec![("lastId", Value::F64(10.0))])),
    ])))
    .unwrap() else {
        panic!()
    };
    assert_eq!(ack.last_id, OpId::Number(10));
}

/// serde's internally tagged and untagged enums buffer into its private
/// `Content` before choosing a variant: whole floats must survive that
/// path too, for anyone embedding wire types in their own enums.
#[test]
fn whole_floats_survive_serde_buffering() {
    #[derive(Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        Op(ClientOp),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Op(ClientOp),
    }
    let op = map(vec![
        ("kind", "Op".into()),
        ("mapName", "m".into()),
        ("key", "k".into()),
        ("timeout", Value::F64(5000.0)),
        (
            "record",
            map(vec![
                ("value", Value::Nil),
                ("timestamp", ts(Value::F64(1e12), Value::F64(2.0))),
            ]),
        ),
    ]);
    let bytes = frame(&op);
    let Tagged::Op(a) = rmp_serde::from_slice(&bytes).unwrap();
    let Untagged::Op(b) = rmp_serde::from_slice(&bytes).unwrap();
    for op in [a, b] {
        assert_eq!(op.timeout, Some(5000));
        assert_eq!(op.record.unwrap().timestamp.millis, 1_000_000_000_000);
    }
    // And the Message impl from a JSON document with floats.
    let json = serde_json::json!({"type": "PING", "timestamp": 1.7e12});
    let msg: Message = serde_json::from_value(json).unwrap();
    assert_eq!(
        msg,
        Message::Ping(wire::Ping {
            timestamp: 1_700_000_000_000
        })
    );
}

#[test]
fn fractions_negatives_and_overflow_are_errors_not_truncation() {
    let bad = [
        op_batch(Value::F64(1.5), 0.into(), 1.into()),
        op_batch((-1).into(), 0.into(), 1.into()),
        op_batch(Value::F64(-2.0), 0.into(), 1.into()),
        op_batch(Value::F64(f64::NAN), 0.into(), 1.into()),
        op_batch(Value::F64(f64::INFINITY), 0.into(), 1.into()),
        op_batch(Value::F64(1e20), 0.into(), 1.into()),
        op_batch(1.into(), Value::F64(0.5), 1.into()),
        op_batch(1.into(), (-1).into(), 1.into()),
        op_batch(1.into(), 4_294_967_296_u64.into(), 1.into()),
        op_batch(1.into(), 0.into(), Value::F64(2.25)),
        op_batch(1.into(), 0.into(), (-5).into()),
        op_batch(1.into(), 0.into(), "5000".into()),
        map(vec![
            ("type", "PING".into()),
            ("timestamp", Value::F64(0.1)),
        ]),
        map(vec![("type", "PING".into())]),
        map(vec![
            ("type", "SYNC_INIT".into()),
            ("mapName", "m".into()),
            ("rootHash", 4_294_967_296_u64.into()),
        ]),
        map(vec![
            ("type", "ERROR".into()),
            (
                "payload",
                map(vec![("code", (-1).into()), ("message", "x".into())]),
            ),
        ]),
        map(vec![
            ("type", "OP_ACK".into()),
            ("payload", map(vec![("lastId", Value::F64(1.5))])),
        ]),
        map(vec![
            ("type", "OP_ACK".into()),
            ("payload", map(vec![("lastId", (-3).into())])),
        ]),
        map(vec![
            ("type", "OP_BATCH".into()),
            ("payload", "not a map".into()),
        ]),
        map(vec![("type", "OP_BATCH".into())]),
    ];
    for v in bad {
        match wire::decode(&frame(&v)) {
            Err(DecodeError::Malformed { type_name, .. }) => {
                assert_eq!(Some(type_name.as_str()), v["type"].as_str());
            }
            other => panic!("{v} gave {other:?}"),
        }
    }
}

#[test]
fn unknown_types_and_fields_are_tolerated() {
    let v = map(vec![
        ("type", "ORMAP_SYNC_INIT".into()),
        ("mapName", "m".into()),
        ("blob", Value::Binary(vec![1, 2, 3])),
        ("ext", Value::Ext(5, vec![9, 9])),
    ]);
    let msg = wire::decode(&frame(&v)).unwrap();
    let Message::Unknown(u) = &msg else {
        panic!("{msg:?}")
    };
    assert_eq!(u.type_name(), "ORMAP_SYNC_INIT");
    assert_eq!(u.raw(), &v);
    let back = rmpv::decode::read_value(&mut &wire::encode(&msg).unwrap()[..]).unwrap();
    assert_eq!(back, v, "an unknown message is written back unchanged");

    let ping = map(vec![
        ("type", "PING".into()),
        ("timestamp", 5.into()),
        (
            "extra",
            Value::Array(vec![1.into(), map(vec![("deep", Value::Nil)])]),
        ),
    ]);
    assert_eq!(
        wire::decode(&frame(&ping)).unwrap(),
        Message::Ping(wire::Ping { timestamp: 5 })
    );
    // TopGun's TS client adds timestamp and synced to each op.
    let op = map(vec![
        ("type", "CLIENT_OP".into()),
        (
            "payload",
            map(vec![
                ("mapName", "m".into()),
                ("key", "k".into()),
                ("opType", "OR_FROB".into()),
                ("synced", false.into()),
                ("timestamp", ts(1.into(), 0.into())),
            ]),
        ),
    ]);
    let Message::ClientOp(op) = wire::decode(&frame(&op)).unwrap() else {
        panic!()
    };
    assert_eq!(op.op_type, Some(wire::OpType::Other("OR_FROB".into())));
}

#[test]
fn frames_of_the_wrong_shape_are_named() {
    type Expect = fn(&DecodeError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (vec![], |e| matches!(e, DecodeError::Truncated)),
        (vec![0x92, 0x01], |e| matches!(e, DecodeError::Truncated)),
        (frame(&Value::Array(vec![])), |e| {
            matches!(e, DecodeError::NotAMap)
        }),
        (frame(&"PING".into()), |e| matches!(e, DecodeError::NotAMap)),
        (frame(&map(vec![("timestamp", 1.into())])), |e| {
            matches!(e, DecodeError::MissingType)
        }),
        (frame(&map(vec![("type", 5.into())])), |e| {
            matches!(e, DecodeError::TypeNotString)
        }),
        (
            vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0xa2, 0xff, 0xfe],
            |e| matches!(e, DecodeError::TypeNotString),
        ),
        (
            [frame(&map(vec![("type", "X".into())])), vec![0xc0]].concat(),
            |e| matches!(e, DecodeError::TrailingBytes { extra: 1 }),
        ),
    ];
    for (bytes, expected) in cases {
        let err = wire::decode(&bytes).unwrap_err();
        assert!(expected(&err), "{bytes:x?} gave {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn oversized_frames_are_refused_unread() {
    let big = vec![0xc0; DEFAULT_MAX_FRAME_LEN + 1];
    assert!(matches!(
        wire::decode(&big),
        Err(DecodeError::TooLarge { len, max }) if len == DEFAULT_MAX_FRAME_LEN + 1 && max == DEFAULT_MAX_FRAME_LEN
    ));
    let ping = frame(&map(vec![("type", "PING".into()), ("timestamp", 1.into())]));
    assert!(wire::decode_with_limit(&ping, ping.len()).is_ok());
    assert!(matches!(
        wire::decode_with_limit(&ping, ping.len() - 1),
        Err(DecodeError::TooLarge { .. })
    ));
    // The encoder refuses to produce what a peer would refuse.
    let msg = wire::decode(&ping).unwrap();
    let small = Codec::new().with_max_frame_len(4);
    assert!(matches!(
        small.encode(&msg),
        Err(wire::EncodeError::TooLarge { max: 4, .. })
    ));
}

#[test]
fn deep_nesting_is_refused_without_recursing() {
    // 100k nested arrays, 100k nested maps, and deep data inside a valid frame.
    let arrays = [vec![0x91; 100_000], vec![0xc0]].concat();
    let maps: Vec<u8> = [
        std::iter::repeat_n([0x81, 0xa1, b'k'], 100_000)
            .flatten()
            .collect(),
        vec![0xc0],
    ]
    .concat();
    let header = frame(&map(vec![("type", "TOPIC_PUB".into())]));
    // {type: TOPIC_PUB, payload: {topic: "t", data: [[[…]]]}} written by hand.
    let mut in_frame = vec![0x82];
    in_frame.extend_from_slice(&header[1..]);
    in_frame.extend_from_slice(&[0xa7]);
    in_frame.extend_from_slice(b"payload");
    in_frame.extend_from_slice(&[0x82, 0xa5]);
    in_frame.extend_from_slice(b"topic");
    in_frame.extend_from_slice(&[0xa1, b't', 0xa4]);
    in_frame.extend_from_slice(b"data");
    in_frame.extend_from_slice(&arrays);
    for bytes in [&arrays, &maps, &in_frame] {
        assert!(
            matches!(
                wire::decode(bytes),
                Err(DecodeError::TooDeep {
                    max_depth: DEFAULT_MAX_DEPTH
                })
            ),
            "{:?}",
            wire::decode(bytes)
        );
        // The serde impl bounds its own recursion, whatever the deserialiser.
        assert!(rmp_serde::from_slice::<Message>(bytes).is_err());
    }
}

#[test]
fn the_depth_cap_is_exact() {
    // The frame map is level 1, `payload` level 2, `data` holds the rest.
    let topic = |depth: usize| {
        frame(&map(vec![
            ("type", "TOPIC_PUB".into()),
            (
                "payload",
                map(vec![("topic", "t".into()), ("data", nested_arrays(depth))]),
            ),
        ]))
    };
    let at_cap = DEFAULT_MAX_DEPTH - 2;
    assert!(wire::decode(&topic(at_cap)).is_ok());
    assert!(matches!(
        wire::decode(&topic(at_cap + 1)),
        Err(DecodeError::TooDeep { .. })
    ));
    // Same for an unknown message, where the whole frame is kept, and with
    // a string (which costs rmpv more depth budget than nil) at the bottom.
    let unknown = |depth: usize| {
        let mut v = Value::from("leaf");
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        frame(&map(vec![("type", "X".into()), ("v", v)]))
    };
    assert!(wire::decode(&unknown(DEFAULT_MAX_DEPTH - 1)).is_ok());
    assert!(matches!(
        wire::decode(&unknown(DEFAULT_MAX_DEPTH)),
        Err(DecodeError::TooDeep { .. })
    ));
    let tight = Codec::new().with_max_depth(8);
    assert!(tight.decode(&topic(6)).is_ok());
    assert!(tight.decode(&topic(7)).is_err());
}

#[test]
fn every_truncated_fixture_is_an_error() {
    let mut checked = 0;
    for f in fixtures() {
        for len in 0..f.msgpack.len() {
            let err = wire::decode(&f.msgpack[..len]).expect_err(&f.name);
            assert!(
                matches!(err, DecodeError::Truncated),
                "{} at {len}: {err:?}",
                f.name
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

/// Whatever decodes, encodes; and re-decoding the encoding settles.
fn assert_settles(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = wire::decode(bytes) {
        let once = wire::encode(&msg).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let again = wire::decode(&once).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let twice = wire::encode(&again).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(twice, once);
    }
    Ok(())
}

fn fixture_bytes() -> impl Strategy<Value = Vec<u8>> {
    let all: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.msgpack).collect();
    proptest::sample::select(all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        assert_settles(&bytes)?;
        let _ = rmp_serde::from_slice::<Message>(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        bytes in fixture_bytes(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = bytes;
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        assert_settles(&bytes)?;
    }

    #[test]
    fn byte_replacements_never_panic(
        bytes in fixture_bytes(),
        at in any::<prop::sample::Index>(),
        with in any::<u8>(),
    ) {
        let mut bytes = bytes;
        let i = at.index(bytes.len());
        bytes[i] = with;
        assert_settles(&bytes)?;
    }
}
