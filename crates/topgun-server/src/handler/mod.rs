//! What the server does with each frame of one connection.
//!
//! A [`Session`] holds one connection's protocol state (authenticated
//! user, rate limit, live queries). It reads decoded frames and answers by
//! pushing messages into the connection's [`Outbox`]; it never touches the
//! socket. Writes go through the commit task (`writes.rs`), Merkle
//! answers are in `sync.rs`.

mod sync;
mod writes;

use crate::auth::Principal;
use crate::fanout::{CloseReason, Outbox, Outgoing};
use crate::limits::TokenBucket;
use crate::query::Prepared;
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use topgun_core::wire::{
    AuthAck, AuthFail, AuthRequired, DecodeError, DeviceAck, Message, Pong, QuerySub,
    ServerError as WireError,
};

/// Whether the connection goes on after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next frame.
    Continue,
    /// Stop reading; a close is already queued.
    Close,
}

#[derive(Debug)]
enum Access {
    /// Auth disabled: everything is allowed.
    Everything,
    /// Auth required and not done yet: every frame but `AUTH` is dropped.
    Pending,
    /// Authenticated; the access rules apply.
    User(Principal),
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Session {
    shared: Arc<Shared>,
    outbox: Outbox,
    access: Access,
    bucket: TokenBucket,
    /// Until when the reader must not read: the op rate's flow control.
    paused_until: Option<tokio::time::Instant>,
    /// Live query id → its map.
    queries: HashMap<String, String>,
    /// Answers to the connection's batches, in order.
    acks: writes::Acks,
}

impl Session {
    /// A session for a new connection.
    pub(crate) fn new(shared: Arc<Shared>, outbox: Outbox) -> Self {
        let access = if shared.jwt.is_some() {
            Access::Pending
        } else {
            Access::Everything
        };
        let bucket = TokenBucket::new(shared.limits.ops_per_second, shared.limits.ops_burst);
        Self {
            shared,
            access,
            bucket,
            paused_until: None,
            queries: HashMap::new(),
            acks: writes::Acks::start(outbox.clone()),
            outbox,
        }
    }

    /// What the server says first: `AUTH_REQUIRED` when auth is on,
    /// nothing otherwise.
    pub(crate) fn greet(&self) {
        if matches!(self.access, Access::Pending) {
            self.outbox
                .send(Message::AuthRequired(AuthRequired::default()));
        }
    }

    fn authenticated(&self) -> bool {
        !matches!(self.access, Access::Pending)
    }

    /// Handles one binary frame.
    pub(crate) async fn on_binary(&mut self, bytes: &[u8]) -> Flow {
        let msg = match self.shared.codec.decode(bytes) {
            Ok(msg) => msg,
            Err(error) if !self.authenticated() => {
                tracing::debug!(conn = self.outbox.conn(), %error, "bad frame before auth dropped");
                return Flow::Continue;
            }
            Err(error @ DecodeError::TooLarge { .. }) => {
                self.error(413, error.to_string());
                return Flow::Continue;
            }
            Err(error) => {
                tracing::debug!(conn = self.outbox.conn(), %error, "malformed frame");
                self.error(400, error.to_string());
                return Flow::Continue;
            }
        };
        if let Message::Auth(auth) = msg {
            return self.on_auth(&auth.token);
        }
        if !self.authenticated() {
            tracing::debug!(
                conn = self.outbox.conn(),
                kind = msg.type_name(),
                "frame before auth dropped"
            );
            return Flow::Continue;
        }
        let cost = match &msg {
            Message::OpBatch(batch) => batch.ops.len().max(1),
            _ => 1,
        };
        // Over its rate, the connection reads nothing more for a while (so
        // TCP slows the client down) instead of losing the frame.
        let wait = self.bucket.take(cost);
        if !wait.is_zero() {
            self.paused_until = Some(tokio::time::Instant::now() + wait);
        }
        self.on_message(msg).await;
        Flow::Continue
    }

    /// Until when the reader must wait before reading the next frame, if
    /// the connection went over its op rate (taken: asked once per pause).
    pub(crate) fn take_pause(&mut self) -> Option<tokio::time::Instant> {
        self.paused_until.take()
    }

    /// Handles a text frame: the protocol has none.
    pub(crate) fn on_text(&mut self) {
        if self.authenticated() {
            self.error(
                400,
                "text frames are not supported: send one MessagePack message per binary frame"
                    .to_owned(),
            );
        }
    }

    /// Forgets the connection's subscriptions.
    /// Ends the session: answers the batches still committing, then
    /// drops the connection's live queries.
    pub(crate) async fn finish(self) {
        self.acks.finish().await;
        self.shared.hub.remove_connection(self.outbox.conn());
    }

    async fn on_message(&mut self, msg: Message) {
        match msg {
            Message::DeviceHello(_) => self.outbox.send(Message::DeviceAck(DeviceAck::default())),
            Message::Ping(ping) => self.outbox.send(Message::Pong(Pong {
                timestamp: ping.timestamp,
                server_time: self.shared.hlc.clock().now_millis(),
            })),
            Message::OpBatch(batch) => self.on_ops(batch.ops).await,
            Message::ClientOp(op) => self.on_ops(vec![op]).await,
            Message::SyncInit(init) => self.on_sync_init(&init.map_name),
            Message::MerkleReqBucket(req) => self.on_bucket_request(req).await,
            Message::QuerySub(sub) => self.on_query_sub(sub).await,
            Message::QueryUnsub(unsub) => {
                if let Some(map) = self.queries.remove(&unsub.query_id) {
                    self.shared
                        .hub
                        .unsubscribe(self.outbox.conn(), &map, &unsub.query_id);
                }
            }
            Message::TopicSub(_) | Message::TopicUnsub(_) | Message::TopicPub(_) => {
                self.error(501, "topics are not supported by this server".to_owned());
            }
            Message::Unknown(unknown) => {
                tracing::debug!(
                    conn = self.outbox.conn(),
                    kind = unknown.type_name(),
                    "unknown message type"
                );
                self.error(
                    501,
                    format!(
                        "message type {} is not supported by this server",
                        unknown.type_name()
                    ),
                );
            }
            other => self.error(
                400,
                format!("{} is not a client-to-server message", other.type_name()),
            ),
        }
    }

    fn on_auth(&mut self, token: &str) -> Flow {
        let Some(jwt) = &self.shared.jwt else {
            self.outbox.send(Message::AuthAck(AuthAck::default()));
            return Flow::Continue;
        };
        match jwt.verify(token) {
            Ok(user) => {
                tracing::debug!(conn = self.outbox.conn(), user = %user.user_id, "authenticated");
                self.outbox.send(Message::AuthAck(AuthAck {
                    user_id: Some(user.user_id.clone()),
                    ..AuthAck::default()
                }));
                self.access = Access::User(user);
                Flow::Continue
            }
            Err(reason) => {
                tracing::info!(conn = self.outbox.conn(), %reason, "authentication failed");
                self.outbox.send(Message::AuthFail(AuthFail {
                    error: Some(reason),
                    code: Some(401),
                }));
                self.outbox.push(Outgoing::Close(CloseReason::AuthFailed));
                Flow::Close
            }
        }
    }

    fn may_read(&self, map: &str) -> bool {
        match &self.access {
            Access::Everything => true,
            Access::Pending => false,
            Access::User(user) => self.shared.rules.can_read(user, map),
        }
    }

    fn may_write(&self, map: &str) -> bool {
        match &self.access {
            Access::Everything => true,
            Access::Pending => false,
            Access::User(user) => self.shared.rules.can_write(user, map),
        }
    }

    /// Refuses a read of `map` with `ERROR 403` unless allowed.
    fn check_read(&self, map: &str) -> bool {
        let allowed = self.may_read(map);
        if !allowed {
            self.error(403, format!("not allowed to read map {map:?}"));
        }
        allowed
    }

    async fn on_query_sub(&mut self, sub: QuerySub) {
        if !self.check_read(&sub.map_name) {
            return;
        }
        let prepared = match Prepared::new(&sub, self.shared.limits.max_query_results) {
            Ok(prepared) => prepared,
            Err(error) => return self.error(400, format!("invalid query: {error}")),
        };
        let conn = self.outbox.conn();
        if let Some(old_map) = self
            .queries
            .insert(sub.query_id.clone(), sub.map_name.clone())
        {
            self.shared.hub.unsubscribe(conn, &old_map, &sub.query_id);
        }
        // The commit task runs the query between two commits, queues the
        // QUERY_RESP and subscribes it: no write is missed or sent twice.
        let started = self
            .shared
            .committer
            .subscribe(self.outbox.clone(), prepared)
            .await;
        if started.is_err() {
            self.error(503, "the server is shutting down".to_owned());
        }
    }

    /// Queues `ERROR {code, message}`.
    fn error(&self, code: u32, message: String) {
        self.outbox.send(Message::Error(WireError {
            code,
            message,
            details: None,
        }));
    }
}
