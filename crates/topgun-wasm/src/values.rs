//! JS values in and out: anything JSON can hold, as `serde_json::Value`
//! on the Rust side (the client stores it as MessagePack).

use serde::Serialize;
use wasm_bindgen::JsValue;

/// A JS value as JSON.
pub(crate) fn from_js(value: JsValue, what: &str) -> Result<serde_json::Value, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|e| crate::error::invalid(what, e))
}

/// A Rust value as a plain JS value (objects, not `Map`s).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| crate::error::js_error("INTERNAL", &e.to_string()))
}
