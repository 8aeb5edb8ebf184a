//! One WebSocket connection: a reader (this task) and a writer task.
//!
//! ```text
//!  socket ──frames──▶ reader ──Session──▶ Outbox (bounded) ──▶ writer ──▶ socket
//!                                          ▲
//!                      commit task / Hub ──┘ (events from other clients)
//! ```
//!
//! The reader handles one frame at a time, so a connection's acks leave in
//! batch order. Nobody waits on the outbox: a full one kills the
//! connection ("slow consumer"), and both tasks stop at once. On shutdown
//! the reader finishes the frame in hand and the frames already received,
//! then queues a close frame behind their answers.

use crate::fanout::{CloseReason, Outbox, Outgoing};
use crate::handler::{Flow, Session};
use crate::shared::Shared;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use topgun_core::wire::{Codec, Message, ServerBatchEvent, ServerEvent};

/// Most events coalesced into one `SERVER_BATCH_EVENT`.
const MAX_COALESCED_EVENTS: usize = 256;
/// How long a close frame may take to leave when the connection is killed.
const KILL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the reader stopped.
enum End {
    /// The client closed the connection or it failed.
    Gone,
    /// A close is already queued (auth failure) or the connection was killed.
    Closing,
    /// The server closes it for this reason.
    Close(CloseReason),
}

/// Serves one upgraded WebSocket until it closes. `stop` turns true on
/// graceful shutdown; `_done` is dropped when the connection is over.
pub(crate) async fn serve(
    socket: WebSocket,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let conn = shared.open_connection();
    tracing::debug!(conn, "connection opened");
    let (outbox, queue, kill) = Outbox::new(conn, shared.limits.outbox_capacity);
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, queue, kill.clone(), shared.codec));
    let mut session = Session::new(shared.clone(), outbox.clone());
    session.greet();
    let end = read_loop(
        &mut stream,
        &mut session,
        kill,
        &mut stop,
        shared.limits.idle_timeout,
    )
    .await;
    session.finish().await;
    if let End::Close(reason) = end {
        tracing::debug!(conn, ?reason, "closing connection");
        outbox.push(Outgoing::Close(reason));
    }
    // The writer drains the queue and stops once every sender is gone.
    drop(outbox);
    if timeout(shared.limits.shutdown_grace, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    shared.close_connection();
    tracing::debug!(conn, "connection closed");
}

async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    session: &mut Session,
    mut kill: watch::Receiver<Option<CloseReason>>,
    stop: &mut watch::Receiver<bool>,
    idle: Duration,
) -> End {
    loop {
        if let Some(until) = session.take_pause() {
            // Flow control: read nothing until the op rate allows, but
            // still obey a kill or a shutdown.
            tokio::select! {
                biased;
                _ = killed_with(&mut kill) => return End::Closing,
                // Shutdown ends the pause: the frames already received are
                // answered below before the connection closes.
                () = stopping(stop) => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
        let deadline = Instant::now() + idle;
        let next = tokio::select! {
            biased;
            _ = killed_with(&mut kill) => return End::Closing,
            () = stopping(stop) => {
                // Answer what the client already sent before closing.
                while let Some(Some(Ok(msg))) = stream.next().now_or_never() {
                    if on_frame(session, msg).await != Flow::Continue {
                        return End::Closing;
                    }
                }
                return End::Close(CloseReason::ShuttingDown);
            }
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
        };
        match next {
            Err(_) => return End::Close(CloseReason::Idle),
            Ok(None) => return End::Gone,
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "websocket read failed");
                return End::Gone;
            }
            Ok(Some(Ok(msg))) => match on_frame(session, msg).await {
                Flow::Continue => {}
                Flow::Close => return End::Closing,
            },
        }
    }
}

/// Handles one WebSocket message; a client's close ends the connection.
async fn on_frame(session: &mut Session, msg: WsMessage) -> Flow {
    match msg {
        WsMessage::Binary(bytes) => session.on_binary(&bytes).await,
        WsMessage::Text(_) => {
            session.on_text();
            Flow::Continue
        }
        // The WebSocket layer answers pings itself.
        WsMessage::Ping(_) | WsMessage::Pong(_) => Flow::Continue,
        WsMessage::Close(_) => Flow::Close,
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut kill: watch::Receiver<Option<CloseReason>>,
    codec: Codec,
) {
    let mut held: Option<Outgoing> = None;
    loop {
        let item = match held.take() {
            Some(item) => item,
            None => tokio::select! {
                biased;
                reason = killed_with(&mut kill) => return killed(sink, reason).await,
                item = queue.recv() => match item {
                    Some(item) => item,
                    // The reader is done and nothing is left to send.
                    None => {
                        let _ = timeout(KILL_CLOSE_TIMEOUT, sink.close()).await;
                        return;
                    }
                },
            },
        };
        let frames = match item {
            Outgoing::Frame(msg) => encode(&codec, &msg).into_iter().collect(),
            Outgoing::Bytes(bytes) => vec![bytes],
            Outgoing::Updates(updates) => updates
                .into_iter()
                .filter_map(|u| encode(&codec, &Message::QueryUpdate(u)))
                .collect(),
            Outgoing::Events(mut events) => {
                while events.len() < MAX_COALESCED_EVENTS {
                    match queue.try_recv() {
                        Ok(Outgoing::Events(more)) => events.extend(more),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                events
                    .chunks(MAX_COALESCED_EVENTS)
                    .flat_map(|chunk| encode_events(&codec, chunk))
                    .collect()
            }
            Outgoing::Close(reason) => {
                let (code, text) = reason.frame();
                let close = WsMessage::Close(Some(CloseFrame {
                    code,
                    reason: text.into(),
                }));
                let _ = timeout(KILL_CLOSE_TIMEOUT, async {
                    let _ = sink.send(close).await;
                    let _ = sink.close().await;
                })
                .await;
                return;
            }
        };
        for frame in frames {
            tokio::select! {
                biased;
                reason = killed_with(&mut kill) => return killed(sink, reason).await,
                sent = sink.send(WsMessage::Binary(frame.into())) => if sent.is_err() {
                    return;
                },
            }
        }
    }
}

/// The connection was killed: try to say why, briefly, and stop.
async fn killed(mut sink: SplitSink<WebSocket, WsMessage>, reason: CloseReason) {
    let (code, text) = reason.frame();
    let close = WsMessage::Close(Some(CloseFrame {
        code,
        reason: text.into(),
    }));
    let _ = timeout(KILL_CLOSE_TIMEOUT, sink.send(close)).await;
}

/// Resolves once the connection is killed, with the reason. Never
/// resolves once every `Outbox` is gone without a kill.
async fn killed_with(kill: &mut watch::Receiver<Option<CloseReason>>) -> CloseReason {
    let reason = kill.wait_for(Option::is_some).await.ok().and_then(|r| *r);
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// Resolves once the server shuts down (or is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn encode(codec: &Codec, msg: &Message) -> Option<Vec<u8>> {
    match codec.encode(msg) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(%error, kind = msg.type_name(), "dropping a message that cannot be encoded");
            None
        }
    }
}

/// One `SERVER_EVENT`, or one `SERVER_BATCH_EVENT` for several — or, when
/// the batch would not fit in a frame, one `SERVER_EVENT` each.
fn encode_events(codec: &Codec, events: &[Arc<ServerEvent>]) -> Vec<Vec<u8>> {
    let single =
        |event: &Arc<ServerEvent>| encode(codec, &Message::ServerEvent(ServerEvent::clone(event)));
    if let [event] = events {
        return single(event).into_iter().collect();
    }
    let batch = Message::ServerBatchEvent(ServerBatchEvent {
        events: events.iter().map(|e| ServerEvent::clone(e)).collect(),
    });
    match codec.encode(&batch) {
        Ok(bytes) => vec![bytes],
        Err(_) => events.iter().filter_map(single).collect(),
    }
}
