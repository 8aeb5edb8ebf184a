//! Read batching: `get`s issued together (say, a `Promise.all` of reads,
//! or the reads of a burst of writes) share one read-only transaction,
//! their requests all issued at once, instead of a transaction each.
//!
//! A `get` queues its key; the first one of a burst spawns the task that
//! runs the batch. That task runs after the tasks already scheduled on the
//! page's event loop, so every read of the burst is queued by then.

use super::codec;
use super::js::idb_error;
use super::range::{RangeRead, RANGE_READ_MIN};
use super::schema::RECORDS;
use super::writer::Writer;
use crate::error::StorageError;
use crate::model::StoreRecord;
use idb::TransactionMode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::IntoFuture;
use std::rc::Rc;
use tokio::sync::oneshot;

type Answer = oneshot::Sender<Result<Option<StoreRecord>, StorageError>>;

#[derive(Default)]
struct Batch {
    keys: Vec<(String, String, Answer)>,
    scheduled: bool,
}

/// The read batcher of one database connection.
pub(crate) struct Reader {
    /// The connection (the writer owns it).
    connection: Rc<Writer>,
    batch: RefCell<Batch>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("queued", &self.batch.borrow().keys.len())
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(connection: Rc<Writer>) -> Rc<Self> {
        Rc::new(Self {
            connection,
            batch: RefCell::default(),
        })
    }

    /// The record of `(map_name, key)`, read with the other reads of its
    /// burst.
    pub(crate) async fn get(
        self: &Rc<Self>,
        map_name: &str,
        key: &str,
    ) -> Result<Option<StoreRecord>, StorageError> {
        if map_name.is_empty() || key.is_empty() {
            return Ok(None);
        }
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut batch = self.batch.borrow_mut();
            batch
                .keys
                .push((map_name.to_owned(), key.to_owned(), answer));
            !std::mem::replace(&mut batch.scheduled, true)
        };
        if start {
            wasm_bindgen_futures::spawn_local(Rc::clone(self).run());
        }
        answered.await.map_err(|_| StorageError::Closed)?
    }

    async fn run(self: Rc<Self>) {
        let keys = {
            let mut batch = self.batch.borrow_mut();
            batch.scheduled = false;
            std::mem::take(&mut batch.keys)
        };
        const DURING: &str = "reading records";
        let store = self
            .connection
            .database()
            .transaction(&[RECORDS], TransactionMode::ReadOnly)
            .map_err(idb_error(DURING))
            .and_then(|tx| tx.object_store(RECORDS).map_err(idb_error(DURING)));
        let store = match store {
            Ok(store) => store,
            Err(error) => {
                for (_, _, answer) in keys {
                    let _ = answer.send(Err(super::writer::replicate(&error)));
                }
                return;
            }
        };
        // Issue every request, then collect the answers. A map with many
        // keys in the burst is read by range.
        let mut by_map: HashMap<String, Vec<(String, Answer)>> = HashMap::new();
        for (map_name, key, answer) in keys {
            by_map.entry(map_name).or_default().push((key, answer));
        }
        let mut singles = Vec::new();
        let mut ranges = Vec::new();
        for (map_name, wanted) in by_map {
            if wanted.len() >= RANGE_READ_MIN {
                let keys = wanted.iter().map(|(key, _)| key.clone()).collect();
                let range = RangeRead::issue(&store, &map_name, keys);
                ranges.push((range, wanted));
                continue;
            }
            for (key, answer) in wanted {
                singles.push((get(&store, &map_name, &key), answer));
            }
        }
        for (range, wanted) in ranges {
            let found = match range {
                Ok(range) => range.finish().await,
                Err(error) => Err(error),
            };
            let found = match found {
                Ok(found) => found,
                Err(error) => {
                    for (_, answer) in wanted {
                        let _ = answer.send(Err(super::writer::replicate(&error)));
                    }
                    continue;
                }
            };
            let map_name = found.map_name;
            let records: HashMap<String, Option<StoreRecord>> = found
                .records
                .into_iter()
                .map(|(key, stored)| (key, stored.and_then(codec::Stored::into_record)))
                .collect();
            for (key, answer) in wanted {
                match records.get(&key) {
                    Some(record) => {
                        let _ = answer.send(Ok(record.clone()));
                    }
                    // Past a truncated range: read on its own.
                    None => singles.push((get(&store, &map_name, &key), answer)),
                }
            }
        }
        for (request, answer) in singles {
            let result = match request {
                Ok(request) => match request.await {
                    Ok(found) => found
                        .as_ref()
                        .map(codec::stored_from_js)
                        .transpose()
                        .map(|stored| stored.and_then(codec::Stored::into_record)),
                    Err(error) => Err(idb_error(DURING)(error)),
                },
                Err(error) => Err(error),
            };
            let _ = answer.send(result);
        }
    }
}

/// Issues the read of one record.
fn get(
    store: &idb::ObjectStore,
    map_name: &str,
    key: &str,
) -> Result<idb::request::futures::GetStoreRequestFuture, StorageError> {
    store
        .get(codec::record_key(map_name, key))
        .map(IntoFuture::into_future)
        .map_err(idb_error("reading records"))
}
