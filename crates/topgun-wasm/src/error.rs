//! Errors as JS `Error`s with a stable `code` property, so that an app can
//! branch on it:
//!
//! | code | meaning |
//! |---|---|
//! | `INVALID_ARGUMENT` | a name, key, value, option or query was not acceptable |
//! | `VALUE_TOO_LARGE` | a value is over the size limit |
//! | `QUOTA_EXCEEDED` | the storage quota is used up; nothing was written |
//! | `STORAGE` | IndexedDB failed (the message says how) |
//! | `SCHEMA_TOO_NEW` | the database was written by a newer version |
//! | `CLOSED` | the client was closed |
//! | `UNSUPPORTED` | the browser lacks an API this call needs |
//! | `LAGGED` | (to a subscriber) events were dropped (it fell behind, or another tab's changes were lost on their way); read the map again |
//! | `INTERNAL` | anything else (a bug: please report it) |

use topgun_client::ClientError;
use topgun_storage::StorageError;
use wasm_bindgen::JsValue;

/// A JS `Error` with `code` and `message`.
pub(crate) fn js_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = js_sys::Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

/// The code of a storage error.
fn storage_code(error: &StorageError) -> &'static str {
    match error {
        StorageError::InvalidInput(_) => "INVALID_ARGUMENT",
        StorageError::SchemaTooNew { .. } => "SCHEMA_TOO_NEW",
        StorageError::Closed => "CLOSED",
        StorageError::Full { .. } => "QUOTA_EXCEEDED",
        _ => "STORAGE",
    }
}

/// A client error as a JS `Error`.
pub(crate) fn from_client(error: &ClientError) -> JsValue {
    let code = match error {
        ClientError::InvalidName { .. } | ClientError::Encode { .. } | ClientError::Query(_) => {
            "INVALID_ARGUMENT"
        }
        ClientError::ValueTooLarge { .. } => "VALUE_TOO_LARGE",
        ClientError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
        ClientError::Storage(e) => storage_code(e),
        ClientError::Closed => "CLOSED",
        _ => "INTERNAL",
    };
    js_error(code, &error.to_string())
}

/// An argument that could not be read.
pub(crate) fn invalid(what: &str, detail: impl std::fmt::Display) -> JsValue {
    js_error("INVALID_ARGUMENT", &format!("{what}: {detail}"))
}
