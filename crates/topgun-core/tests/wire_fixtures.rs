//! Conformance against TopGun's own cross-language fixtures
//! (`tests/fixtures/`, see `NOTICE` there).

mod common;

use common::{fixtures, message_to_json, normalise, value_to_json, FIXTURE_PAIRS};
use topgun_core::wire::{self, Message, OpId, OpType, WriteConcern};

/// Fixture types this version has no variant for; they must decode as
/// `Message::Unknown`.
const UNKNOWN_TYPES: &[&str] = &[
    "COUNTER_REQUEST",
    "COUNTER_SYNC",
    "GC_PRUNE",
    "LOCK_GRANTED",
    "LOCK_RELEASE",
    "LOCK_RELEASED",
    "LOCK_REQUEST",
    "TOPIC_MESSAGE",
];

#[test]
fn the_fixture_set_is_complete() {
    let all = fixtures();
    assert!(!all.is_empty(), "no fixtures found in tests/fixtures");
    assert_eq!(
        all.len(),
        FIXTURE_PAIRS,
        "a fixture pair went missing or appeared"
    );
    assert!(
        common::fixtures_dir().join("NOTICE").exists(),
        "fixtures keep their NOTICE"
    );
}

#[test]
fn every_fixture_is_its_json_twin() {
    let mut seen = 0;
    for f in fixtures() {
        // The fixture's bytes themselves render as its JSON.
        let raw = rmpv::decode::read_value(&mut &f.msgpack[..]).unwrap();
        assert_eq!(
            value_to_json(&raw),
            normalise(f.json.clone()),
            "{}: raw bytes",
            f.name
        );

        let msg = wire::decode(&f.msgpack).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(msg.type_name(), f.name, "{}: type", f.name);
        let unknown = UNKNOWN_TYPES.contains(&f.name.as_str());
        assert_eq!(
            matches!(msg, Message::Unknown(_)),
            unknown,
            "{}: variant",
            f.name
        );
        assert_eq!(Message::is_known_type(&f.name), !unknown, "{}", f.name);
        assert_eq!(
            message_to_json(&msg),
            normalise(f.json),
            "{}: re-encoded",
            f.name
        );
        seen += 1;
    }
    assert_eq!(seen, FIXTURE_PAIRS);
}

#[test]
fn decode_encode_decode_is_stable() {
    let mut seen = 0;
    for f in fixtures() {
        let first = wire::decode(&f.msgpack).unwrap();
        let bytes = wire::encode(&first).unwrap();
        let second = wire::decode(&bytes).unwrap();
        assert_eq!(second, first, "{}", f.name);
        assert_eq!(
            wire::encode(&second).unwrap(),
            bytes,
            "{}: bytes settle",
            f.name
        );
        seen += 1;
    }
    assert_eq!(seen, FIXTURE_PAIRS);
}

#[test]
fn the_serde_impls_agree_with_the_codec() {
    for f in fixtures() {
        let via_codec = wire::decode(&f.msgpack).unwrap();
        let via_serde: Message = rmp_serde::from_slice(&f.msgpack).unwrap();
        let via_json: Message = serde_json::from_value(f.json.clone()).unwrap();
        assert_eq!(via_serde, via_codec, "{}", f.name);
        assert_eq!(message_to_json(&via_json), normalise(f.json), "{}", f.name);
    }
}

fn fixture(name: &str) -> Message {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .expect("fixture exists");
    wire::decode(&f.msgpack).expect("fixture decodes")
}

#[test]
fn fixture_fields_land_where_expected() {
    let Message::OpBatch(batch) = fixture("OP_BATCH") else {
        panic!()
    };
    assert_eq!(batch.ops.len(), 2);
    assert_eq!(batch.ops[1].id, Some(OpId::from("op-2")));
    assert_eq!(
        batch.ops[1].record.as_ref().unwrap().timestamp.millis,
        1_700_000_000_001
    );
    assert_eq!(batch.write_concern, Some(WriteConcern::Memory));
    assert_eq!(batch.timeout, Some(5000));

    let Message::ClientOp(op) = fixture("CLIENT_OP") else {
        panic!()
    };
    assert_eq!(op.op_type, Some(OpType::Put));
    assert_eq!(op.record.unwrap().ttl_ms, Some(60_000));

    let Message::OpAck(ack) = fixture("OP_ACK") else {
        panic!()
    };
    assert_eq!(ack.last_id, OpId::from("op-1"));
    assert!(ack.results.unwrap()[0].success);

    let Message::SyncInit(init) = fixture("SYNC_INIT") else {
        panic!()
    };
    assert_eq!(init.root_hash, Some(12345));
    assert_eq!(init.bucket_hashes.unwrap()["2"], 333);

    let Message::ServerBatchEvent(events) = fixture("SERVER_BATCH_EVENT") else {
        panic!()
    };
    assert_eq!(events.events[1].event_type, OpType::Remove);
    assert!(
        events.events[1].record.is_none(),
        "TopGun's REMOVE carries no record"
    );

    let Message::Pong(pong) = fixture("PONG") else {
        panic!()
    };
    assert_eq!(pong.server_time, 1_700_000_000_005);

    let Message::Unknown(lock) = fixture("LOCK_REQUEST") else {
        panic!()
    };
    assert_eq!(lock.type_name(), "LOCK_REQUEST");
    assert_eq!(lock.raw()["payload"]["ttl"], rmpv::Value::from(30000));
}

/// The codec's fast path (typed decoding straight from the bytes) and its
/// thorough path (a value tree first) agree on every fixture, and on the
/// re-encoded fixtures (our encoder's fixmaps instead of JS's map16s).
#[test]
fn fast_and_thorough_decoding_agree() {
    let codec = wire::Codec::default();
    let mut seen = 0;
    for f in fixtures() {
        let ours = wire::encode(&wire::decode(&f.msgpack).unwrap()).unwrap();
        for bytes in [&f.msgpack, &ours] {
            let fast = codec.decode(bytes).unwrap();
            let tree = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
            let thorough = codec.decode_value(tree).unwrap();
            assert_eq!(fast, thorough, "{}", f.name);
        }
        seen += 1;
    }
    assert_eq!(seen, FIXTURE_PAIRS);
}
