//! `status`: the client's state and the store's counters.

use super::Context;
use crate::error::CliError;
use crate::output::Output;
use serde::Serialize;

pub(crate) const STATUS_EXAMPLES: &str = "\
Prints one JSON object:
  state         connection state of the process that syncs the data
                directory (this one, or the leader it goes through):
                OFFLINE without a server; with --server, status first waits
                until ONLINE (up to --timeout)
  role          leader if this process holds the data directory, follower
                if another process (e.g. a `watch`) holds it and this one
                went through it
  nodeId        the node id stamping this process's writes (the data
                directory's own as leader; a new one per follower)
  pendingOps    local writes not yet acknowledged by a server
  records       stored records, removal markers (tombstones) included
  dirtyRecords  records with changes not yet acknowledged by a server
  bytes         approximate size of records and ops
  maps          names of the maps with at least one record

Examples:
  topgun --data ./db status
  topgun --data ./db status | jq .pendingOps";

/// The object `status` prints, in this field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    state: &'static str,
    role: &'static str,
    node_id: &'a str,
    pending_ops: u64,
    records: u64,
    dirty_records: u64,
    bytes: u64,
    maps: Vec<String>,
}

/// `status`.
pub(crate) async fn status(ctx: &Context) -> Result<(), CliError> {
    ctx.synced().await?;
    let client = &ctx.client;
    let stats = client.store_stats().await?;
    let status = Status {
        state: client.state().as_str(),
        role: client.role().as_str(),
        node_id: client.node_id(),
        pending_ops: stats.pending_ops,
        records: stats.records,
        dirty_records: stats.dirty_records,
        bytes: stats.bytes,
        maps: client.map_names().await?,
    };
    let mut out = Output::stdout();
    out.json_line(&status)?;
    out.finish()
}
