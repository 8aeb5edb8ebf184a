//! The live-query work of the commit task: starting a live query, and
//! running live queries again when their window ran short.

use super::{Context, Subscribe};
use crate::fanout::{Hub, Outbox, Outgoing, Refill};
use crate::query;
use crate::store::ServerStore;
use topgun_core::wire::{Codec, Message, QueryResp, ServerError as WireError};

/// Runs a new live query, queues its `QUERY_RESP` and subscribes it.
pub(super) async fn subscribe(
    job: Subscribe,
    store: &dyn ServerStore,
    hub: &Hub,
    context: &Context,
) {
    let map = job.query.map_name.clone();
    let query_id = job.query.query_id.clone();
    match job.query.run(store, context.clock.now_millis()).await {
        Ok((resp, sub)) => {
            send_query_resp(&context.codec, &job.outbox, resp);
            hub.subscribe(&job.outbox, &map, &query_id, sub);
        }
        Err(error) => {
            tracing::error!(%error, %map, "reading query results failed");
            job.outbox.send(Message::Error(WireError {
                code: 500,
                message: "reading the query results failed".to_owned(),
                details: None,
            }));
        }
    }
    let _ = job.done.send(());
}

/// Runs the live queries of `refills` again and sends what changed.
pub(super) async fn refill(
    refills: Vec<Refill>,
    store: &dyn ServerStore,
    hub: &Hub,
    context: &Context,
) {
    let mut done = std::collections::HashSet::new();
    for r in refills {
        if !done.insert((r.conn, r.map.clone(), r.query_id.clone())) {
            continue;
        }
        let now = context.clock.now_millis();
        match query::scan(store, &r.map, &r.query, now).await {
            Ok(fresh) => hub.refill(&r, fresh),
            Err(error) => {
                tracing::error!(%error, map = %r.map, "refilling a live query failed");
            }
        }
    }
}

/// Queues a `QUERY_RESP`, dropping results from the end (and setting
/// `hasMore`) until it fits in a frame.
fn send_query_resp(codec: &Codec, outbox: &Outbox, mut resp: QueryResp) {
    loop {
        match codec.encode(&Message::QueryResp(resp.clone())) {
            Ok(bytes) => return outbox.push(Outgoing::Bytes(bytes)),
            Err(error) if resp.results.is_empty() => {
                tracing::error!(%error, "QUERY_RESP cannot be encoded");
                return outbox.send(Message::Error(WireError {
                    code: 500,
                    message: "query results cannot be encoded".to_owned(),
                    details: None,
                }));
            }
            Err(_) => {
                resp.results.truncate(resp.results.len() / 2);
                resp.has_more = Some(true);
            }
        }
    }
}
