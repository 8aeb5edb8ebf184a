//! Client writes: checks each op, commits the accepted ones durably, then
//! acknowledges the batch — in batch order, while the next batches are
//! already being committed ([`Acks`]).

use super::Session;
use crate::commit::{AcceptedOp, Commit, CommitError};
use crate::fanout::Outbox;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use topgun_core::wire::{
    ClientOp, Message, OpAck, OpId, OpRejected, OpType, ServerError as WireError, WriteConcern,
};

/// Batches of one connection committing at once, at most; the reader
/// waits when it has this many unacknowledged.
const BATCHES_IN_FLIGHT: usize = 16;

/// A batch waiting for its answer: its commit (none when every op was
/// rejected) and the id its `OP_ACK` echoes.
#[derive(Debug)]
struct Pending {
    commit: Option<Commit>,
    last_id: Option<OpId>,
}

/// Answers a connection's batches in the order they arrived, each once
/// its commit is durable: `OP_ACK`, or `ERROR 500/503` (no ack; the client
/// resends).
#[derive(Debug)]
pub(super) struct Acks {
    queue: mpsc::Sender<Pending>,
    task: JoinHandle<()>,
}

impl Acks {
    pub(super) fn start(outbox: Outbox) -> Self {
        let (queue, pending) = mpsc::channel(BATCHES_IN_FLIGHT);
        Self {
            queue,
            task: tokio::spawn(answer(pending, outbox)),
        }
    }

    /// Waits until every batch queued so far is answered.
    pub(super) async fn finish(self) {
        drop(self.queue);
        let _ = self.task.await;
    }
}

async fn answer(mut pending: mpsc::Receiver<Pending>, outbox: Outbox) {
    while let Some(batch) = pending.recv().await {
        if let Some(commit) = batch.commit {
            match commit.outcome().await {
                Ok(changed) => tracing::trace!(conn = outbox.conn(), changed, "batch committed"),
                Err(error) => {
                    let code = match error {
                        CommitError::Storage(_) => 500,
                        CommitError::Stopped => 503,
                    };
                    outbox.send(Message::Error(WireError {
                        code,
                        message: format!("the batch was not (wholly) applied, resend it: {error}"),
                        details: None,
                    }));
                    continue;
                }
            }
        }
        if let Some(last_id) = batch.last_id {
            outbox.send(Message::OpAck(OpAck {
                last_id,
                achieved_level: Some(WriteConcern::Applied),
                results: None,
            }));
        }
    }
}

impl Session {
    /// Handles the ops of one `OP_BATCH` (or one `CLIENT_OP`).
    ///
    /// Ops that fail a check get `OP_REJECTED` and are not applied; the
    /// others are applied together, in one durable transaction per commit
    /// lane of the store, each only if its timestamp is newer than the
    /// stored record's (so a re-sent op is a no-op). Then `OP_ACK` echoes the id of the batch's last op —
    /// rejected or not, since a rejection is final. Acks leave in batch
    /// order ([`Acks`]); up to 16 batches of a connection commit at once.
    /// If the store fails (in a store of several lanes, ops whose lanes
    /// committed are stored and published all the same), the batch gets
    /// `ERROR 500` and no ack, and the client resends it.
    pub(crate) async fn on_ops(&mut self, ops: Vec<ClientOp>) {
        let last_id = ops.last().and_then(|op| op.id.clone());
        let mut accepted = Vec::with_capacity(ops.len());
        for op in ops {
            match self.check_op(op) {
                Ok(op) => accepted.push(op),
                Err(rejected) => {
                    tracing::debug!(conn = self.outbox.conn(), op = %rejected.op_id, reason = %rejected.reason, "op rejected");
                    self.outbox.send(Message::OpRejected(rejected));
                }
            }
        }
        let commit = if accepted.is_empty() {
            None
        } else {
            match self
                .shared
                .committer
                .submit(self.outbox.conn(), accepted)
                .await
            {
                Ok(commit) => Some(commit),
                Err(error) => {
                    return self.error(503, format!("the batch was not applied: {error}"));
                }
            }
        };
        let pending = Pending { commit, last_id };
        if self.acks.queue.send(pending).await.is_err() {
            tracing::error!(conn = self.outbox.conn(), "the ack task is gone");
        }
    }

    /// The op, ready to apply, or why it is refused. Folds an accepted
    /// op's timestamp into the server's clock.
    fn check_op(&self, op: ClientOp) -> Result<AcceptedOp, OpRejected> {
        let op_id = op.id.clone().unwrap_or_else(|| OpId::Text(String::new()));
        let reject = |code: u32, reason: String| OpRejected {
            op_id: op_id.clone(),
            reason,
            code: Some(code),
        };
        if op.map_name.is_empty() || op.key.is_empty() {
            return Err(reject(400, "map name and key must not be empty".to_owned()));
        }
        let remove = match &op.op_type {
            None | Some(OpType::Put) => false,
            Some(OpType::Remove) => true,
            Some(other) => {
                return Err(reject(
                    400,
                    format!("op type {other} is not supported by this server"),
                ))
            }
        };
        let Some(record) = op.record else {
            return Err(reject(400, "the op carries no record".to_owned()));
        };
        if remove && record.value.is_some() {
            return Err(reject(
                400,
                "a REMOVE must carry a tombstone record (value: null)".to_owned(),
            ));
        }
        if !self.may_write(&op.map_name) {
            return Err(reject(
                403,
                format!("not allowed to write map {:?}", op.map_name),
            ));
        }
        if let Some(reason) =
            self.shared
                .store
                .refuses(&op.map_name, &op.key, &record.timestamp, record.ttl_ms)
        {
            return Err(reject(400, reason.to_owned()));
        }
        if let Err(error) = self.shared.hlc.update(&record.timestamp) {
            return Err(reject(400, error.to_string()));
        }
        Ok(AcceptedOp {
            map_name: op.map_name,
            key: op.key,
            record,
        })
    }
}
