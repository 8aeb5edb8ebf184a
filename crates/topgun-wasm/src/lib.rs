//! TopGun for the browser: the Rust client (`topgun-client`) as a
//! JavaScript API, built with wasm-bindgen for wasm32.
//!
//! ```js
//! import init, { TopGunClient } from "topgun-wasm";
//! await init();
//! const client = await TopGunClient.open({ serverUrl: "ws://localhost:8080/ws" });
//! const todos = client.getMap("todos");
//! await todos.put("t1", { title: "milk", done: false });
//! console.log(await todos.get("t1"), client.state);
//! ```
//!
//! Records live in IndexedDB (`IndexedDbStore`); sync
//! runs on the browser's WebSocket and timers. Values are plain JS values
//! (anything JSON can hold); async calls return promises; errors are JS
//! `Error`s with a stable `code` (module `error`).
//!
//! On a native target this crate is empty.
#![warn(missing_docs)]
#![cfg(target_family = "wasm")]

mod client;
pub mod error;
mod listen;
mod map;
mod types;
mod values;

pub use client::JsClient;
pub use listen::Listener;
pub use map::JsMap;
