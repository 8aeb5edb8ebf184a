//! JS values in and out: anything JSON can hold, as `serde_json::Value`
//! on the Rust side (the client stores it as MessagePack).
//!
//! Values cross the boundary as one JSON string each way
//! (`JSON.stringify` in, `JSON.parse` out): the engine's own JSON code
//! builds and reads whole object trees natively, where a field-by-field
//! conversion would call across the boundary once per property. A value
//! is therefore whatever `JSON.stringify` makes of it (a `Date` becomes
//! its ISO string, `undefined` properties are left out, `NaN` is `null`).

use serde::Serialize;
use topgun_sync::js_message;
use wasm_bindgen::{JsCast, JsValue};

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
