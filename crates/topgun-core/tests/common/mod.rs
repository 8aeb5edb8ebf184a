//! Helpers shared by the wire test files.
#![allow(dead_code)]
// each test binary uses a different subset
// Test helpers: a failure here should fail the calling test on the spot.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use topgun_core::wire::{self, Message};

/// Number of `.json`/`.msgpack` pairs copied from the protocol reference.
pub(crate) const FIXTURE_PAIRS: usize = 33;

/// One fixture pair: its name, its MessagePack bytes, its JSON rendering.
pub(crate) struct Fixture {
    pub(crate) name: String,
    pub(crate) msgpack: Vec<u8>,
    pub(crate) json: serde_json::Value,
}

pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture pair, sorted by name. Panics if a `.msgpack` has no
/// `.json` twin or the other way round.
pub(crate) fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let mut json_count = 0;
    for entry in std::fs::read_dir(fixtures_dir()).expect("tests/fixtures exists") {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => json_count += 1,
            Some("msgpack") => {
                let json_path = path.with_extension("json");
                let json = std::fs::read_to_string(&json_path)
                    .unwrap_or_else(|e| panic!("{} has no twin: {e}", path.display()));
                out.push(Fixture {
                    name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                    msgpack: std::fs::read(&path).unwrap(),
                    json: serde_json::from_str(&json).unwrap(),
                });
            }
            _ => {}
        }
    }
    assert_eq!(json_count, out.len(), "every .json has a .msgpack twin");
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A JSON value with every whole float turned into an integer, as a JS
/// peer would not distinguish them.
pub(crate) fn normalise(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => {
                J::from(f as u64)
            }
            Some(f) if n.is_f64() && f.fract() == 0.0 && (-9.2e18..0.0).contains(&f) => {
                J::from(f as i64)
            }
            _ => J::Number(n),
        },
        J::Array(items) => J::Array(items.into_iter().map(normalise).collect()),
        J::Object(map) => J::Object(map.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        other => other,
    }
}

/// A MessagePack value as normalised JSON.
pub(crate) fn value_to_json(v: &rmpv::Value) -> serde_json::Value {
    normalise(serde_json::to_value(v).unwrap())
}

/// Encodes `msg` and renders the frame as normalised JSON.
pub(crate) fn message_to_json(msg: &Message) -> serde_json::Value {
    let bytes = wire::encode(msg).unwrap();
    let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    value_to_json(&v)
}

/// Encodes a generic value as a frame.
pub(crate) fn frame(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

/// A map value from `(key, value)` pairs.
pub(crate) fn map(entries: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// `depth` arrays nested inside each other around `nil`.
pub(crate) fn nested_arrays(depth: usize) -> rmpv::Value {
    let mut v = rmpv::Value::Nil;
    for _ in 0..depth {
        v = rmpv::Value::Array(vec![v]);
    }
    v
}
