//! `TopGunMap` for JavaScript.

use crate::error::{from_client, invalid, js_error};
use crate::listen::{call, Listener};
use crate::values::{from_js, from_js_as, to_js, Json};
use serde::Serialize;
use topgun_client::query::{Query, QueryRows};
use topgun_client::{IMap, Origin};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

/// A map of JSON values, answered from local storage.
#[wasm_bindgen(js_name = TopGunMap)]
#[derive(Debug, Clone)]
pub struct JsMap {
    /// Writes: values as `serde_json::Value`s.
    writes: IMap<serde_json::Value>,
    /// Reads: the same map, values as JSON text (see [`Json`]).
    map: IMap<Json>,
}

/// A change as a subscriber sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeEvent<'a> {
    key: &'a str,
    old_value: Option<&'a Json>,
    new_value: Option<&'a Json>,
    /// `local` or `remote`.
    origin: &'static str,
}

/// A live query change.
#[derive(Serialize)]
struct LiveEvent<'a> {
    /// `ENTER`, `UPDATE` or `LEAVE`.
    #[serde(rename = "type")]
    change_type: serde_json::Value,
    key: &'a str,
    value: Option<&'a Json>,
}

/// One page of a query's results.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    results: Vec<Row<'a>>,
    has_more: bool,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct Row<'a> {
    key: &'a str,
    value: &'a serde_json::Value,
}

impl JsMap {
    pub(crate) fn new(writes: IMap<serde_json::Value>) -> Self {
        Self {
            map: writes.with_values(),
            writes,
        }
    }
}

fn query_from_js(query: JsValue) -> Result<Query, JsValue> {
    if query.is_undefined() || query.is_null() {
        return Ok(Query::default());
    }
    serde_wasm_bindgen::from_value(query).map_err(|e| invalid("query", e))
}

#[wasm_bindgen(js_class = TopGunMap)]
impl JsMap {
    /// The map's name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.map.name().to_owned()
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "JsonValue")] value: JsValue,
    ) -> Result<(), JsValue> {
        let value = from_js(value, "value")?;
        self.writes
            .put(&key, value)
            .await
            .map_err(|e| from_client(&e))?;
        Ok(())
    }

    /// The value of `key`, or `undefined`.
    #[wasm_bindgen(unchecked_return_type = "JsonValue | undefined")]
    pub async fn get(&self, key: String) -> Result<JsValue, JsValue> {
        match self.map.get(&key).await.map_err(|e| from_client(&e))? {
            Some(value) => to_js(&value),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Writes every `[key, value]` of `entries`, as `put` does for each,
    /// all at once (they share a storage transaction). A key given twice
    /// ends with its last value. Resolves when all are written; if any
    /// fails, rejects with the first error (the others are written).
    #[wasm_bindgen(js_name = putMany)]
    pub async fn put_many(
        &self,
        #[wasm_bindgen(unchecked_param_type = "[string, JsonValue][]")] entries: JsValue,
    ) -> Result<(), JsValue> {
        let entries: Vec<(String, serde_json::Value)> = from_js_as(entries, "entries")?;
        let results = self.writes.put_many(entries).await;
        match results.into_iter().find_map(Result::err) {
            Some(error) => Err(from_client(&error)),
            None => Ok(()),
        }
    }

    /// The values of `keys`, in their order (`undefined` for an absent
    /// key), read together.
    #[wasm_bindgen(js_name = getMany, unchecked_return_type = "(JsonValue | undefined)[]")]
    pub async fn get_many(&self, keys: Vec<String>) -> Result<JsValue, JsValue> {
        let values = self
            .map
            .get_many(&keys)
            .await
            .map_err(|e| from_client(&e))?;
        let array = to_js(&values)?;
        for (index, value) in values.iter().enumerate() {
            if value.is_none() {
                js_sys::Reflect::set_u32(&array, index as u32, &JsValue::UNDEFINED)?;
            }
        }
        Ok(array)
    }

    /// Removes `key` (a tombstone that syncs).
    pub async fn remove(&self, key: String) -> Result<(), JsValue> {
        self.writes
            .remove(&key)
            .await
            .map_err(|e| from_client(&e))?;
        Ok(())
    }

    /// Removes every key of the map.
    pub async fn clear(&self) -> Result<(), JsValue> {
        self.writes.clear().await.map_err(|e| from_client(&e))?;
        Ok(())
    }

    /// Every `[key, value]` pair, in key order.
    #[wasm_bindgen(unchecked_return_type = "[string, JsonValue][]")]
    pub async fn entries(&self) -> Result<JsValue, JsValue> {
        let entries = self
            .map
            .entries()
            .collect()
            .await
            .map_err(|e| from_client(&e))?;
        to_js(&entries)
    }

    /// Runs a query (`{where?, predicate?, sort?, limit?, cursor?}`):
    /// `{results: [{key, value}], hasMore, nextCursor}`.
    #[wasm_bindgen(unchecked_return_type = "QueryPage")]
    pub async fn query(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Query | undefined")] query: JsValue,
    ) -> Result<JsValue, JsValue> {
        let query = query_from_js(query)?;
        // Rows written out straight from the working set's values.
        let page = |rows: QueryRows<'_>| {
            to_js(&Page {
                results: rows
                    .results
                    .iter()
                    .map(|(key, value)| Row { key, value })
                    .collect(),
                has_more: rows.has_more,
                next_cursor: rows.next_cursor.as_deref(),
            })
        };
        self.map
            .query_rows(&query, page)
            .await
            .map_err(|e| from_client(&e))?
    }

    /// How many records a query (`{where?, predicate?}`) matches, without
    /// handing them to JavaScript.
    pub async fn count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Query | undefined")] query: JsValue,
    ) -> Result<f64, JsValue> {
        let query = query_from_js(query)?;
        let count = self.map.count(&query).await.map_err(|e| from_client(&e))?;
        Ok(count as f64)
    }

    /// Calls `callback({key, oldValue, newValue, origin})` on every change.
    pub fn subscribe(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: ChangeEvent | TopGunError) => void")]
        callback: js_sys::Function,
    ) -> Listener {
        let mut events = self.map.subscribe();
        Listener::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let change = ChangeEvent {
                            key: &event.key,
                            old_value: event.old_value.as_ref(),
                            new_value: event.new_value.as_ref(),
                            origin: match event.origin {
                                Origin::Local => "local",
                                Origin::Remote => "remote",
                            },
                        };
                        if let Ok(value) = to_js(&change) {
                            call(&callback, &value);
                        }
                    }
                    Err(topgun_client::events::RecvError::Closed) => return,
                    // A lag drops events: the app re-reads the map.
                    Err(error) => call(&callback, &js_error("LAGGED", &error.to_string())),
                }
            }
        })
    }

    /// Runs `query` live: calls `callback({type, key, value})` with
    /// `ENTER` for every current row, then for every change.
    #[wasm_bindgen(js_name = liveQuery)]
    pub async fn live_query(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Query | undefined")] query: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(event: LiveQueryEvent | TopGunError) => void")]
        callback: js_sys::Function,
    ) -> Result<Listener, JsValue> {
        let query = query_from_js(query)?;
        let mut live = self
            .map
            .live_query(query)
            .await
            .map_err(|e| from_client(&e))?;
        let initial = live.results().map_err(|e| from_client(&e))?;
        for (key, value) in &initial {
            let event = LiveEvent {
                change_type: serde_json::Value::from("ENTER"),
                key,
                value: Some(value),
            };
            call(&callback, &to_js(&event)?);
        }
        Ok(Listener::spawn(async move {
            loop {
                match live.next().await {
                    Ok(change) => {
                        let event = LiveEvent {
                            change_type: serde_json::to_value(change.change_type)
                                .unwrap_or(serde_json::Value::Null),
                            key: &change.key,
                            value: change.value.as_ref(),
                        };
                        if let Ok(value) = to_js(&event) {
                            call(&callback, &value);
                        }
                    }
                    Err(topgun_client::LiveQueryError::Recv(
                        topgun_client::events::RecvError::Closed,
                    )) => return,
                    Err(error) => call(&callback, &js_error("LAGGED", &error.to_string())),
                }
            }
        }))
    }
}
