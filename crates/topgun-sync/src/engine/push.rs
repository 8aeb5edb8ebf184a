//! Push: pending ops from the op log go up in `OP_BATCH` frames.

use std::collections::VecDeque;
use topgun_core::wire::{ClientOp, Message, OpBatch, OpId};

/// One op-log entry ready to send, or a part of one: usually one
/// [`ClientOp`]; a CLEAR expands to one REMOVE per key it cleared, all
/// under the CLEAR's id, split into parts that each fit a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingOp {
    /// The op-log id.
    pub id: u64,
    /// What goes on the wire for it (ids set to `id` as a string).
    pub ops: Vec<ClientOp>,
    /// Approximate encoded size in bytes, for batching.
    pub size: usize,
    /// More parts of this op follow: the op counts as acknowledged only
    /// with the ack of the batch that carries its last part.
    pub partial: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    /// `lastId` the server will echo in `OP_ACK`.
    pub(crate) last_id: String,
    /// Op-log ids in the batch.
    pub(crate) op_ids: Vec<u64>,
}

/// Push state of one connection.
#[derive(Debug, Default)]
pub(crate) struct Push {
    /// Highest op id loaded from the log on this connection.
    pub(crate) cursor: Option<u64>,
    /// A `LoadPending` is outstanding.
    pub(crate) loading: bool,
    /// The last load reached the end of the log.
    pub(crate) exhausted: bool,
    /// A local change arrived while a load was outstanding: that load may
    /// have missed it.
    pub(crate) changed_while_loading: bool,
    /// Loaded, not yet sent.
    pub(crate) queued: VecDeque<PendingOp>,
    /// Sent, not yet acknowledged, in send order.
    pub(crate) in_flight: VecDeque<InFlight>,
}

impl Push {
    /// Everything sent so far is acknowledged and nothing waits.
    pub(crate) fn is_idle(&self) -> bool {
        !self.loading && self.exhausted && self.queued.is_empty() && self.in_flight.is_empty()
    }

    /// Builds the next batch from the queue: ops in id order while the
    /// batch stays under `max_bytes` (at least one op, however large).
    /// Returns the frame to send and what to remember of it.
    pub(crate) fn next_batch(&mut self, max_bytes: usize) -> Option<(Message, InFlight)> {
        let mut size = 0;
        let mut op_ids = Vec::new();
        let mut ops = Vec::new();
        let mut last = None;
        while let Some(next) = self.queued.front() {
            if last.is_some() && size + next.size > max_bytes {
                break;
            }
            let Some(p) = self.queued.pop_front() else {
                break;
            };
            size += p.size;
            last = Some(p.id);
            if !p.partial {
                op_ids.push(p.id);
            }
            ops.extend(p.ops);
        }
        let last = last?;
        let last_id = ops
            .last()
            .and_then(|o| o.id.as_ref())
            .map_or_else(|| last.to_string(), OpId::to_string);
        let frame = Message::OpBatch(OpBatch {
            ops,
            write_concern: None,
            timeout: None,
        });
        Some((frame, InFlight { last_id, op_ids }))
    }

    /// Removes and returns the in-flight batch `OP_ACK.lastId` names.
    /// An id that names none of this connection's batches acknowledges
    /// nothing.
    pub(crate) fn ack(&mut self, last_id: &OpId) -> Option<InFlight> {
        let wanted = last_id.to_string();
        let pos = self.in_flight.iter().position(|b| b.last_id == wanted)?;
        self.in_flight.remove(pos)
    }

    /// Forgets the unacknowledged batches so that their ops are read from
    /// the log and sent again (after a server error): the cursor moves back
    /// to just before the first of them. No-op while a load is outstanding
    /// (its answer would move the cursor again); returns whether it reset.
    pub(crate) fn rewind(&mut self) -> bool {
        if self.loading {
            return false;
        }
        if let Some(first) = self.in_flight.front().and_then(|b| b.op_ids.first()) {
            self.cursor = first.checked_sub(1).filter(|c| *c > 0);
            self.in_flight.clear();
            self.queued.clear();
            self.exhausted = false;
        }
        true
    }

    /// Whether op `id` is in a batch this connection sent.
    pub(crate) fn is_in_flight(&self, id: u64) -> bool {
        self.in_flight.iter().any(|b| b.op_ids.contains(&id))
    }
}
