//! JS values in and out: anything JSON can hold, as a `serde_json::Value`
//! on its way in and [`Json`] text on its way out (the client stores it
//! as MessagePack).
//!
//! Values cross the boundary as one JSON string each way
//! (`JSON.stringify` in, `JSON.parse` out): the engine's own JSON code
//! builds and reads whole object trees natively, where a field-by-field
//! conversion would call across the boundary once per property. A value
//! is therefore whatever `JSON.stringify` makes of it (a `Date` becomes
//! its ISO string, `undefined` properties are left out, `NaN` is `null`).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use topgun_sync::js_message;
use wasm_bindgen::{JsCast, JsValue};

/// A stored value read as JSON text, on its way to `JSON.parse`.
///
/// Values are written as `serde_json::Value`s (object keys sorted, as
/// every client writing `serde_json::Value` stores them). Read back into
/// a `Json`, a value goes from MessagePack straight to JSON text by
/// transcoding (`serde_transcode`), without building a
/// `serde_json::Value` tree between (natively, 10,000 of the bench's
/// documents: 7.5 ms instead of 35 ms), and is written into the JSON for
/// `JSON.parse` as it is. Query results are the exception: the query
/// engine hands over decoded trees (borrowed from the working set when
/// the map is complete there), which are written out as text.
#[derive(Debug, Clone)]
pub(crate) struct Json(Box<RawValue>);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // Into JSON (`to_js`): the text as it is.
            self.0.serialize(serializer)
        } else {
            // Into a binary format (MessagePack): transcoded.
            let mut text = serde_json::Deserializer::from_str(self.0.get());
            serde_transcode::transcode(&mut text, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::value::to_raw_value(&serde_transcode::Transcoder::new(deserializer))
            .map(Json)
            .map_err(de::Error::custom)
    }
}

/// A JS value as JSON.
pub(crate) fn from_js(value: JsValue, what: &str) -> Result<serde_json::Value, JsValue> {
    from_js_as(value, what)
}

/// A JS value as a Rust value read from its JSON.
pub(crate) fn from_js_as<T: serde::de::DeserializeOwned>(
    value: JsValue,
    what: &str,
) -> Result<T, JsValue> {
    let text =
        js_sys::JSON::stringify(&value).map_err(|e| crate::error::invalid(what, js_message(&e)))?;
    // `JSON.stringify(undefined)` (or of a function) is `undefined`.
    let text = text
        .dyn_into::<js_sys::JsString>()
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| crate::error::invalid(what, "not a JSON value"))?;
    serde_json::from_str(&text).map_err(|e| crate::error::invalid(what, e))
}

/// A Rust value as a plain JS value (objects, not `Map`s).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    let text = serde_json::to_string(value)
        .map_err(|e| crate::error::js_error("INTERNAL", &e.to_string()))?;
    js_sys::JSON::parse(&text).map_err(|e| crate::error::js_error("INTERNAL", &js_message(&e)))
}
