//! Client writes: checks each op, commits the accepted ones durably, then
//! acknowledges the batch.

use super::Session;
use crate::commit::{AcceptedOp, CommitError};
use topgun_core::wire::{ClientOp, Message, OpAck, OpId, OpRejected, OpType, WriteConcern};

impl Session {
    /// Handles the ops of one `OP_BATCH` (or one `CLIENT_OP`).
    ///
    /// Ops that fail a check get `OP_REJECTED` and are not applied; the
    /// others are applied together, in one durable transaction, each only
    /// if its timestamp is newer than the stored record's (so a re-sent op
    /// is a no-op). Then `OP_ACK` echoes the id of the batch's last op —
    /// rejected or not, since a rejection is final. The session handles
    /// one frame at a time, so a connection's acks leave in batch order.
    /// If the store fails, the batch gets `ERROR 500` and no ack, and the
    /// client resends it.
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
        if !accepted.is_empty() {
            match self
                .shared
                .committer
                .commit(self.outbox.conn(), accepted)
                .await
            {
                Ok(changed) => {
                    tracing::trace!(conn = self.outbox.conn(), changed, "batch committed")
                }
                Err(error) => {
                    let code = match error {
                        CommitError::Storage(_) => 500,
                        CommitError::Stopped => 503,
                    };
                    return self.error(code, format!("the batch was not applied: {error}"));
                }
            }
        }
        if let Some(last_id) = last_id {
            self.outbox.send(Message::OpAck(OpAck {
                last_id,
                achieved_level: Some(WriteConcern::Applied),
                results: None,
            }));
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
