//! `TopGunClient` for JavaScript.

use crate::error::{from_client, invalid, js_error};
use crate::listen::{call, Listener};
use crate::map::JsMap;
use crate::values::to_js;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use topgun_client::{ClientEvent, TopGunClient, WorkingSetLimits};
use topgun_storage::DEFAULT_DATABASE_NAME;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

/// The option names `TopGunClient.open` takes.
const OPTION_NAMES: &[&str] = &[
    "serverUrl",
    "token",
    "databaseName",
    "workingSet",
    "preload",
    "maps",
    "quotaBytes",
    "quotaWarningPercent",
    "tokenProvider",
];

/// Options of `TopGunClient.open` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    /// The server's WebSocket URL; without one the client stays offline.
    server_url: Option<String>,
    /// A token for the server's `AUTH`.
    token: Option<String>,
    /// The IndexedDB database name (default `hz_client_db`).
    database_name: Option<String>,
    /// Records kept in memory in front of IndexedDB.
    working_set: Option<usize>,
    /// Whether `getMap` reads the map into memory in the background
    /// (`IMap::preload`; default true).
    preload: Option<bool>,
    /// Maps to sync from the start (others start syncing when opened).
    maps: Option<Vec<String>>,
    /// A storage budget in bytes: past it, synced records are pruned.
    quota_bytes: Option<u64>,
    /// The share of `quotaBytes`, in percent, at which the quota warning
    /// goes (default 80).
    quota_warning_percent: Option<u8>,
}

/// A local-first client: reads and writes answer from IndexedDB at once;
/// with a server URL, changes sync in the background.
#[wasm_bindgen(js_name = TopGunClient)]
#[derive(Debug)]
pub struct JsClient {
    client: Rc<TopGunClient>,
    /// Whether `getMap` preloads the map.
    preload: bool,
    /// `online` / `offline` handlers on the window, removed at close.
    network: RefCell<Option<NetworkListeners>>,
}

#[derive(Debug)]
struct NetworkListeners {
    online: Closure<dyn FnMut()>,
    offline: Closure<dyn FnMut()>,
}

#[wasm_bindgen(js_class = TopGunClient)]
impl JsClient {
    /// Opens a client: `TopGunClient.open({serverUrl?, token?,
    /// tokenProvider?, databaseName?, workingSet?, preload?, maps?,
    /// quotaBytes?, quotaWarningPercent?})`; `tokenProvider` is a function
    /// returning the token (or a promise of it), called before each
    /// connection.
    pub async fn open(
        #[wasm_bindgen(unchecked_param_type = "ClientOptions | undefined")] options: JsValue,
    ) -> Result<JsClient, JsValue> {
        let options_object = options.clone();
        let options: Options = if options.is_undefined() || options.is_null() {
            Options::default()
        } else {
            // serde-wasm-bindgen reads only the fields it knows, so a
            // misspelt option would pass unnoticed.
            let object: &js_sys::Object = options.unchecked_ref();
            for name in js_sys::Object::keys(object).iter() {
                let name = name.as_string().unwrap_or_default();
                if !OPTION_NAMES.contains(&name.as_str()) {
                    return Err(invalid(
                        "options",
                        format!("unknown option {name:?}; options are {OPTION_NAMES:?}"),
                    ));
                }
            }
            serde_wasm_bindgen::from_value(options.clone()).map_err(|e| invalid("options", e))?
        };
        let provider = if options_object.is_object() {
            js_sys::Reflect::get(&options_object, &"tokenProvider".into())?
        } else {
            JsValue::UNDEFINED
        };
        // Tabs of the page's origin share the database (one of them syncs).
        let database = options
            .database_name
            .as_deref()
            .unwrap_or(DEFAULT_DATABASE_NAME);
        let mut builder = TopGunClient::builder().browser_tabs(database);
        if let Some(url) = options.server_url {
            builder = builder.server_url(url);
        }
        if let Some(token) = options.token {
            builder = builder.token(token);
        }
        if !provider.is_undefined() && !provider.is_null() {
            let function: js_sys::Function = provider
                .dyn_into()
                .map_err(|_| invalid("options", "tokenProvider must be a function"))?;
            builder = builder.token_provider(Arc::new(JsTokenProvider { function }));
        }
        if let Some(records) = options.working_set {
            builder = builder.working_set(WorkingSetLimits {
                max_entries: records,
                ..WorkingSetLimits::default()
            });
        }
        if let Some(maps) = options.maps {
            builder = builder.sync_maps(maps);
        }
        if let Some(budget) = options.quota_bytes {
            builder = builder.quota_bytes(budget);
        }
        if let Some(percent) = options.quota_warning_percent {
            builder = builder.quota_warning_percent(percent);
        }
        let client = Rc::new(builder.build().await.map_err(|e| from_client(&e))?);
        let network = watch_network(&client);
        Ok(JsClient {
            client,
            preload: options.preload.unwrap_or(true),
            network: RefCell::new(network),
        })
    }

    /// The map `name` (created on first write). Unless the client was
    /// opened with `preload: false`, the map is read into memory in the
    /// background if it fits the working set, so that its queries answer
    /// from memory.
    #[wasm_bindgen(js_name = getMap)]
    pub fn get_map(&self, name: &str) -> Result<JsMap, JsValue> {
        let map = self
            .client
            .get_json_map(name)
            .map_err(|e| from_client(&e))?;
        if self.preload {
            let preload = map.preload_later();
            wasm_bindgen_futures::spawn_local(async move {
                // From the next task on: reads and writes the page makes
                // right after `getMap` go first, not behind the preload.
                gloo_timers::future::TimeoutFuture::new(0).await;
                // Best effort: a map that is not preloaded is read on demand.
                let _ = preload.await;
            });
        }
        Ok(JsMap::new(map))
    }

    /// The connection state: `INITIAL`, `OFFLINE`, `CONNECTING`,
    /// `SYNCING` or `ONLINE`.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> String {
        self.client.state().as_str().to_owned()
    }

    /// Calls `callback(state)` on every change of [`state`](Self::state).
    #[wasm_bindgen(js_name = onStateChange)]
    pub fn on_state_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(state: ConnectionState) => void")]
        callback: js_sys::Function,
    ) -> Listener {
        let mut states = self.client.watch_state();
        Listener::spawn(async move {
            while states.changed().await.is_ok() {
                let state = states.borrow_and_update().as_str();
                call(&callback, &JsValue::from_str(state));
            }
        })
    }

    /// Local writes not yet acknowledged by the server.
    #[wasm_bindgen(js_name = pendingOps)]
    pub async fn pending_ops(&self) -> Result<f64, JsValue> {
        let pending = self
            .client
            .pending_ops()
            .await
            .map_err(|e| from_client(&e))?;
        Ok(pending as f64)
    }

    /// `leader` while this tab holds the server connection for the tabs
    /// sharing its database, else `follower`.
    #[wasm_bindgen(getter, unchecked_return_type = "TabRole")]
    pub fn role(&self) -> String {
        self.client.role().as_str().to_owned()
    }

    /// Calls `callback(role)` when this tab's role changes (a follower
    /// takes over when the leader tab closes).
    #[wasm_bindgen(js_name = onRoleChange)]
    pub fn on_role_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(role: TabRole) => void")]
        callback: js_sys::Function,
    ) -> Listener {
        let mut roles = self.client.watch_role();
        Listener::spawn(async move {
            while roles.changed().await.is_ok() {
                let role = roles.borrow_and_update().as_str();
                call(&callback, &JsValue::from_str(role));
            }
        })
    }

    /// The browser's storage estimate for this origin:
    /// `{usage, quota}` in bytes (`navigator.storage.estimate()`).
    #[wasm_bindgen(unchecked_return_type = "StorageEstimate")]
    pub async fn estimate() -> Result<JsValue, JsValue> {
        let storage = storage_manager()?;
        let estimate = call_method(&storage, "estimate")?;
        wasm_bindgen_futures::JsFuture::from(estimate.unchecked_into::<js_sys::Promise>()).await
    }

    /// Asks the browser to keep this origin's data under storage pressure
    /// (`navigator.storage.persist()`); resolves to whether it will.
    pub async fn persist() -> Result<bool, JsValue> {
        let storage = storage_manager()?;
        let granted = call_method(&storage, "persist")?;
        let granted =
            wasm_bindgen_futures::JsFuture::from(granted.unchecked_into::<js_sys::Promise>())
                .await?;
        Ok(granted.as_bool() == Some(true))
    }

    /// Calls `callback(event)` on storage quota events:
    /// `{type: "warning", used, budget}` (`quotaWarningPercent`, default
    /// 80, of `quotaBytes` reached),
    /// `{type: "pruned", records, bytesBefore, bytesAfter}` (synced
    /// records were dropped to make room, on the budget or on the
    /// browser's `QuotaExceededError`), `{type: "exhausted", used, budget}`
    /// (only unsynced data is left: writes fail with `QUOTA_EXCEEDED`).
    #[wasm_bindgen(js_name = onQuotaEvent)]
    pub fn on_quota_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: QuotaEvent) => void")]
        callback: js_sys::Function,
    ) -> Listener {
        let mut events = self.client.events();
        Listener::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                // Other client events are not for this callback.
                if let Some(Ok(value)) = QuotaEvent::of(event).map(|e| to_js(&e)) {
                    call(&callback, &value);
                }
            }
        })
    }

    /// This client's node id (stamps every write).
    #[wasm_bindgen(getter, js_name = nodeId)]
    pub fn node_id(&self) -> String {
        self.client.node_id().to_owned()
    }

    /// Stops syncing and closes the database; later calls fail with code
    /// `CLOSED`.
    pub async fn close(&self) {
        let listeners = self.network.borrow_mut().take();
        if let Some(listeners) = listeners {
            unwatch_network(&listeners);
        }
        self.client.close().await;
    }
}

/// A JS function that gives the `AUTH` token (or a promise of it).
#[derive(Debug)]
struct JsTokenProvider {
    function: js_sys::Function,
}

impl topgun_client::TokenProvider for JsTokenProvider {
    fn token(&self) -> topgun_client::BoxFuture<'static, Result<Option<String>, String>> {
        let returned = self.function.call0(&JsValue::NULL);
        Box::pin(async move {
            let describe = |e: JsValue| topgun_sync::js_message(&e);
            let mut value = returned.map_err(describe)?;
            if let Some(promise) = value.dyn_ref::<js_sys::Promise>() {
                value = wasm_bindgen_futures::JsFuture::from(promise.clone())
                    .await
                    .map_err(describe)?;
            }
            if value.is_undefined() || value.is_null() {
                return Ok(None);
            }
            value
                .as_string()
                .map(Some)
                .ok_or_else(|| "tokenProvider gave something else than a string".to_owned())
        })
    }
}

/// A quota event as JavaScript sees it.
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum QuotaEvent {
    Warning {
        used: u64,
        budget: u64,
    },
    Pruned {
        records: u64,
        bytes_before: u64,
        bytes_after: u64,
    },
    Exhausted {
        used: u64,
        budget: u64,
    },
}

impl QuotaEvent {
    /// The quota event `event` is, if it is one.
    fn of(event: ClientEvent) -> Option<Self> {
        Some(match event {
            ClientEvent::QuotaWarning { used, budget } => Self::Warning { used, budget },
            ClientEvent::QuotaPruned {
                records,
                bytes_before,
                bytes_after,
            } => Self::Pruned {
                records,
                bytes_before,
                bytes_after,
            },
            ClientEvent::QuotaExhausted { used, budget } => Self::Exhausted { used, budget },
            _ => return None,
        })
    }
}

/// `navigator.storage`, in a page or a worker.
fn storage_manager() -> Result<JsValue, JsValue> {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())?;
    let storage = js_sys::Reflect::get(&navigator, &"storage".into())?;
    if storage.is_undefined() {
        return Err(js_error("UNSUPPORTED", "navigator.storage is missing here"));
    }
    Ok(storage)
}

/// `object[name]()`.
fn call_method(object: &JsValue, name: &str) -> Result<JsValue, JsValue> {
    let method: js_sys::Function = js_sys::Reflect::get(object, &name.into())?.dyn_into()?;
    method.call0(object)
}

/// Feeds the window's `online` / `offline` events to the client, so that
/// it reconnects as soon as the network is back.
fn watch_network(client: &Rc<TopGunClient>) -> Option<NetworkListeners> {
    let window = web_sys::window()?;
    let handler = |online: bool| {
        let client = Rc::downgrade(client);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(client) = client.upgrade() {
                client.set_network_online(online);
            }
        })
    };
    let listeners = NetworkListeners {
        online: handler(true),
        offline: handler(false),
    };
    let target: &web_sys::EventTarget = window.as_ref();
    let _ = target
        .add_event_listener_with_callback("online", listeners.online.as_ref().unchecked_ref());
    let _ = target
        .add_event_listener_with_callback("offline", listeners.offline.as_ref().unchecked_ref());
    Some(listeners)
}

fn unwatch_network(listeners: &NetworkListeners) {
    if let Some(window) = web_sys::window() {
        let target: &web_sys::EventTarget = window.as_ref();
        let _ = target.remove_event_listener_with_callback(
            "online",
            listeners.online.as_ref().unchecked_ref(),
        );
        let _ = target.remove_event_listener_with_callback(
            "offline",
            listeners.offline.as_ref().unchecked_ref(),
        );
    }
}
