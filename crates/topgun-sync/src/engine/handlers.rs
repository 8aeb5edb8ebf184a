//! How the engine answers frames and timers.

use super::pull::{is_bucket_name, PullPhase, Walk};
use super::{Auth, Output, SyncEngine, SyncEvent, TimerKind};
use crate::state::ConnectionState;
use std::collections::BTreeSet;
use topgun_core::merkle::DEPTH;
use topgun_core::wire::{self, Message, OpType, ServerEvent, WireRecord};
use topgun_core::Timestamp;

/// Node id given to tombstones made for a server's REMOVE event that
/// carries no record (TopGun's own server sends those).
pub const SERVER_NODE_ID: &str = "__server__";

/// Longest wait for the answers of batches in flight before a resend.
const RESEND_WAIT_MS: u64 = 5_000;
impl SyncEngine {
    pub(super) fn on_frame(&mut self, now_ms: u64, msg: Message, out: &mut Vec<Output>) {
        let Some(auth) = self.auth else {
            // Not connected as far as we know: a late frame of a closed socket.
            return;
        };
        if auth == Auth::Pending {
            match msg {
                Message::AuthRequired(_) => {
                    if let Some(token) = &self.token {
                        out.push(Output::Send(Message::Auth(wire::Auth {
                            token: token.clone(),
                            protocol_version: None,
                            device_token: None,
                        })));
                    } else {
                        self.auth_failed(
                            "the server requires a token and none is configured".into(),
                            out,
                        );
                    }
                    return;
                }
                Message::AuthFail(f) => {
                    let why = f.error.unwrap_or_else(|| "authentication failed".into());
                    self.auth_failed(why, out);
                    return;
                }
                Message::AuthAck(_) => {
                    self.authenticated(out);
                    return;
                }
                // Any other frame: the server did not ask for auth.
                _ => self.authenticated(out),
            }
        }
        match msg {
            Message::AuthFail(f) => {
                let why = f.error.unwrap_or_else(|| "authentication failed".into());
                self.auth_failed(why, out);
            }
            Message::AuthRequired(_) | Message::AuthAck(_) | Message::DeviceAck(_) => {}
            Message::OpAck(ack) => {
                if let Some(batch) = self.push.ack(&ack.last_id) {
                    // The server takes writes again: a later error starts
                    // the resend delays afresh.
                    self.backoff.reset();
                    out.push(Output::MarkSynced(batch.op_ids));
                    self.pump(out);
                }
            }
            Message::OpRejected(r) => {
                let id = r.op_id.as_number().filter(|id| self.push.is_in_flight(*id));
                match id {
                    Some(op_id) => {
                        // It stays out of later pushes: it is no longer pending.
                        out.push(Output::MarkSynced(vec![op_id]));
                        out.push(Output::Event(SyncEvent::OpRejected {
                            op_id,
                            reason: r.reason,
                            code: r.code,
                        }));
                    }
                    None => out.push(Output::Event(SyncEvent::ProtocolError(format!(
                        "OP_REJECTED for op {} that this connection did not send: {}",
                        r.op_id, r.reason
                    )))),
                }
            }
            Message::Error(e) => {
                let retry = e.code == 429 || e.code >= 500;
                if retry && !self.push.in_flight.is_empty() {
                    self.batch_errors += 1;
                }
                out.push(Output::Event(SyncEvent::ServerError {
                    code: e.code,
                    message: e.message,
                }));
                if retry && !self.push.in_flight.is_empty() && !self.resend_set {
                    self.resend_set = true;
                    let delay = self.backoff.next_delay();
                    out.push(Output::SetTimer {
                        timer: TimerKind::Resend,
                        after_ms: delay,
                    });
                }
            }
            Message::SyncRespRoot(root) => {
                out.push(Output::ObserveTimestamp(root.timestamp.clone()));
                self.on_root(&root.map_name, root.root_hash, out);
            }
            Message::SyncRespBuckets(b) => self.on_buckets(&b.map_name, &b.path, &b.buckets, out),
            Message::SyncRespLeaf(leaf) => {
                if !self.trees.contains_key(&leaf.map_name) {
                    return;
                }
                // Keys of this leaf that fetches of pruned keys wait for.
                let fetched = self
                    .fetches
                    .contains_key(&(leaf.map_name.clone(), leaf.path.clone()))
                    .then(|| {
                        leaf.records
                            .iter()
                            .map(|r| r.key.clone())
                            .collect::<BTreeSet<_>>()
                    });
                // Merge whatever arrives for a synced map: a big leaf may come
                // in several frames, and LWW makes a late one harmless.
                if !leaf.records.is_empty() {
                    let records = leaf
                        .records
                        .into_iter()
                        .map(|r| (r.key, r.record))
                        .collect();
                    out.push(Output::ApplyRemote {
                        map: leaf.map_name.clone(),
                        records,
                    });
                }
                if let Some(arrived) = fetched {
                    self.fetched(&leaf.map_name, &leaf.path, &arrived, out);
                }
                self.answered(&leaf.map_name, &leaf.path, out);
            }
            Message::SyncResetRequired(r) => {
                if self.trees.contains_key(&r.map_name) {
                    self.pulls.insert(r.map_name.clone(), PullPhase::Idle);
                    out.push(Output::ResetMap(r.map_name));
                    self.update_online(out);
                }
            }
            Message::ServerEvent(e) => self.on_server_event(now_ms, e, out),
            Message::ServerBatchEvent(batch) => {
                for e in batch.events {
                    self.on_server_event(now_ms, e, out);
                }
            }
            Message::Pong(p) => {
                self.last_pong_ms = now_ms;
                let rtt = now_ms.saturating_sub(p.timestamp);
                let local_mid = i128::from(now_ms) - i128::from(rtt / 2);
                let skew = i128::from(p.server_time) - local_mid;
                self.skew_ms = i64::try_from(skew).unwrap_or(0);
                out.push(Output::Event(SyncEvent::ClockSkew(self.skew_ms)));
            }
            // Query results for our map subscriptions carry nothing the pull
            // does not; other types are features this client does not use.
            Message::QueryResp(_) | Message::QueryUpdate(_) | Message::Ping(_) => {}
            other => out.push(Output::Event(SyncEvent::ProtocolError(format!(
                "ignored a {} frame this client does not handle",
                other.type_name()
            )))),
        }
    }

    fn auth_failed(&mut self, why: String, out: &mut Vec<Output>) {
        out.push(Output::Event(SyncEvent::AuthFailed(why.clone())));
        out.push(Output::Disconnect(format!("authentication failed: {why}")));
        self.reset_connection(out);
        self.set_state(ConnectionState::Offline, out);
        if !self.stopped && !self.network_down {
            // A bad token will not get better by hammering the server.
            out.push(Output::SetTimer {
                timer: TimerKind::Reconnect,
                after_ms: self.backoff.max_delay(),
            });
        }
    }

    fn on_root(&mut self, map: &str, root_hash: u32, out: &mut Vec<Output>) {
        if self.pulls.get(map) != Some(&PullPhase::AwaitRoot) {
            return;
        }
        let local = self
            .trees
            .get(map)
            .map_or(0, topgun_core::MerkleSums::root_hash);
        // A zero root is an empty map on the server: nothing to pull, and
        // TopGun's server would leave a `MERKLE_REQ_BUCKET` for it unanswered
        // (a client holding only local writes or tombstones would wait out the
        // pull timeout on every sync).
        if local == root_hash || root_hash == 0 {
            self.pull_done(map, out);
        } else {
            let walk = Walk {
                waiting: [String::new()].into(),
                queued: [String::new()].into(),
            };
            self.pulls.insert(map.to_owned(), PullPhase::Walking(walk));
            self.send_requests(map, out);
        }
    }

    fn on_buckets(
        &mut self,
        map: &str,
        path: &str,
        buckets: &std::collections::BTreeMap<String, u32>,
        out: &mut Vec<Output>,
    ) {
        let Some(PullPhase::Walking(walk)) = self.pulls.get_mut(map) else {
            return;
        };
        if !walk.waiting.contains(path) {
            return;
        }
        let tree = self.trees.get(map);
        for (c, hash) in buckets {
            if !is_bucket_name(c) || path.len() >= DEPTH {
                continue;
            }
            let child = format!("{path}{c}");
            let local = tree.and_then(|t| t.hash_at(&child)).unwrap_or(0);
            if local != *hash && walk.waiting.insert(child.clone()) {
                walk.queued.push_back(child);
            }
        }
        self.answered(map, path, out);
    }

    /// One outstanding request of a map's walk was answered: send queued
    /// ones while the window allows, or finish the pull.
    fn answered(&mut self, map: &str, path: &str, out: &mut Vec<Output>) {
        if let Some(PullPhase::Walking(walk)) = self.pulls.get_mut(map) {
            walk.waiting.remove(path);
            if walk.waiting.is_empty() {
                self.pull_done(map, out);
            } else {
                self.send_requests(map, out);
            }
        }
    }

    /// Sends queued bucket requests of a map's walk while fewer than
    /// `pull_requests_in_flight` are unanswered.
    fn send_requests(&mut self, map: &str, out: &mut Vec<Output>) {
        let window = self.config.pull_requests_in_flight.max(1);
        let Some(PullPhase::Walking(walk)) = self.pulls.get_mut(map) else {
            return;
        };
        while walk.in_flight() < window {
            let Some(path) = walk.queued.pop_front() else {
                break;
            };
            if !walk.waiting.contains(&path) {
                continue; // answered already
            }
            out.push(Output::Send(Message::MerkleReqBucket(
                wire::MerkleReqBucket {
                    map_name: map.to_owned(),
                    path,
                },
            )));
        }
    }

    fn pull_done(&mut self, map: &str, out: &mut Vec<Output>) {
        self.pulls.insert(map.to_owned(), PullPhase::Done);
        out.push(Output::Event(SyncEvent::PullComplete(map.to_owned())));
        self.update_online(out);
    }

    fn on_server_event(&mut self, now_ms: u64, e: ServerEvent, out: &mut Vec<Output>) {
        if !self.trees.contains_key(&e.map_name) {
            return;
        }
        let record = match (e.record, &e.event_type) {
            (Some(r), _) => r,
            (None, OpType::Remove) => {
                // A delete without its timestamp: date it by the server's
                // clock as we estimate it.
                let millis =
                    u64::try_from(i128::from(now_ms) + i128::from(self.skew_ms)).unwrap_or(now_ms);
                WireRecord::tombstone(Timestamp::new(millis, 0, SERVER_NODE_ID))
            }
            (None, _) => return,
        };
        out.push(Output::ApplyRemote {
            map: e.map_name,
            records: vec![(e.key, record)],
        });
    }

    pub(super) fn on_timer(&mut self, now_ms: u64, timer: TimerKind, out: &mut Vec<Output>) {
        match timer {
            TimerKind::Reconnect => {
                if self.state == ConnectionState::Offline {
                    self.connect(out);
                }
            }
            TimerKind::AuthGrace => {
                if self.auth == Some(Auth::Pending) {
                    self.authenticated(out);
                }
            }
            TimerKind::Ping => {
                if self.auth.is_none() {
                    return;
                }
                if now_ms.saturating_sub(self.last_pong_ms) > self.config.pong_timeout_ms {
                    let reason = format!("no PONG for {} ms", self.config.pong_timeout_ms);
                    out.push(Output::Event(SyncEvent::Disconnected(reason.clone())));
                    out.push(Output::Disconnect(reason.clone()));
                    self.connection_lost(&reason, out);
                    return;
                }
                out.push(Output::Send(Message::Ping(wire::Ping {
                    timestamp: now_ms,
                })));
                out.push(Output::SetTimer {
                    timer: TimerKind::Ping,
                    after_ms: self.config.ping_interval_ms,
                });
            }
            TimerKind::PushDelay => {
                self.push_timer_set = false;
                if self.auth == Some(Auth::Done) {
                    self.pump(out);
                }
            }
            TimerKind::PullTimeout => {
                let stuck: Vec<String> = self
                    .pulls
                    .iter()
                    .filter(|(_, p)| !p.is_done())
                    .map(|(m, _)| m.clone())
                    .collect();
                for map in stuck {
                    out.push(Output::Event(SyncEvent::ProtocolError(format!(
                        "the pull of map {map} got no answer in {} ms",
                        self.config.pull_timeout_ms
                    ))));
                    self.pull_done(&map, out);
                }
            }
            TimerKind::FetchTimeout => self.expire_fetches(now_ms, false, out),
            TimerKind::Resend => {
                self.resend_set = false;
                // Resend only once every batch in flight is answered: an ack
                // of an old batch arriving after the resend could match a
                // new batch with the same last op and mark ops synced that
                // were never applied. A server that stays silent is waited
                // for at most RESEND_WAIT_MS.
                let unanswered = self.push.in_flight.len().saturating_sub(self.batch_errors);
                let since = *self.resend_waiting_since.get_or_insert(now_ms);
                if unanswered > 0 && now_ms.saturating_sub(since) < RESEND_WAIT_MS {
                    self.resend_set = true;
                    out.push(Output::SetTimer {
                        timer: TimerKind::Resend,
                        after_ms: 10,
                    });
                    return;
                }
                self.resend_waiting_since = None;
                if self.auth == Some(Auth::Done) {
                    // Unacked ops go again, read afresh from the log (same op
                    // ids; the server treats a resent op as a no-op).
                    if self.push.rewind() {
                        self.batch_errors = 0;
                        self.pump(out);
                    } else {
                        self.resend_set = true;
                        out.push(Output::SetTimer {
                            timer: TimerKind::Resend,
                            after_ms: 10,
                        });
                    }
                }
            }
        }
    }
}
