//! The native WebSocket transport (tokio-tungstenite): `ws://` and
//! `wss://` (rustls with the web PKI roots). One MessagePack message per
//! binary frame.

use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{
    frame::coding::CloseCode, CloseFrame, WebSocketConfig,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use topgun_core::wire::{Codec, Message};

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be opened (bad URL, refused, TLS, HTTP
    /// status other than 101, …).
    #[error("could not connect to {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The WebSocket library's error.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Connecting took longer than the timeout.
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout {
        /// The URL tried.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// A message could not be encoded (too large, too deep).
    #[error(transparent)]
    Encode(#[from] topgun_core::wire::EncodeError),
    /// The connection failed while sending or receiving.
    #[error("connection failed: {0}")]
    Io(#[source] Box<tokio_tungstenite::tungstenite::Error>),
}

/// What arrived on a connection.
#[derive(Debug)]
pub enum Incoming {
    /// A decoded message.
    Frame(Box<Message>),
    /// A frame that did not decode, with the reason.
    Bad(String),
    /// The peer closed the connection, with its reason if it gave one.
    Closed(String),
}

/// Traffic counters, shared by every connection of one client.
#[derive(Debug, Default)]
pub struct TrafficStats {
    /// Frames sent.
    pub frames_sent: AtomicU64,
    /// Frames received (binary, text and close).
    pub frames_received: AtomicU64,
    /// Payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
}

impl TrafficStats {
    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One open WebSocket connection to a TopGun server.
#[derive(Debug)]
pub struct WsConnection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    codec: Codec,
    stats: Arc<TrafficStats>,
}

impl WsConnection {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) within `timeout`.
    ///
    /// # Errors
    /// [`TransportError::Connect`] or [`TransportError::ConnectTimeout`].
    pub async fn connect(
        url: &str,
        timeout: Duration,
        codec: Codec,
        stats: Arc<TrafficStats>,
    ) -> Result<Self, TransportError> {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(codec.max_frame_len());
        config.max_frame_size = Some(codec.max_frame_len());
        let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(TransportError::ConnectTimeout {
                url: url.to_owned(),
                after: timeout,
            }),
            Ok(Err(e)) => Err(TransportError::Connect {
                url: url.to_owned(),
                source: Box::new(e),
            }),
            Ok(Ok((ws, _response))) => Ok(Self { ws, codec, stats }),
        }
    }

    /// Sends one message as a binary frame.
    ///
    /// # Errors
    /// [`TransportError::Encode`] for a message the codec refuses (the
    /// connection stays usable); [`TransportError::Io`] if the connection
    /// failed.
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let bytes = self.codec.encode(msg)?;
        TrafficStats::count(&self.stats.frames_sent, 1);
        TrafficStats::count(&self.stats.bytes_sent, bytes.len());
        self.ws
            .send(WsMessage::Binary(bytes.into()))
            .await
            .map_err(|e| TransportError::Io(Box::new(e)))
    }

    /// Waits for the next message. Cancel-safe (usable in `select!`).
    /// Text frames and undecodable binary frames come back as
    /// [`Incoming::Bad`]; WebSocket pings are answered by the library.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the connection breaks (reset, a frame
    /// larger than the codec's limit, a protocol violation).
    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let Some(next) = self.ws.next().await else {
                return Ok(Incoming::Closed("the connection ended".into()));
            };
            match next.map_err(|e| TransportError::Io(Box::new(e)))? {
                WsMessage::Binary(bytes) => {
                    TrafficStats::count(&self.stats.frames_received, 1);
                    TrafficStats::count(&self.stats.bytes_received, bytes.len());
                    return Ok(match self.codec.decode(&bytes) {
                        Ok(msg) => Incoming::Frame(Box::new(msg)),
                        Err(e) => Incoming::Bad(e.to_string()),
                    });
                }
                WsMessage::Text(t) => {
                    return Ok(Incoming::Bad(format!(
                        "unexpected text frame of {} bytes",
                        t.len()
                    )));
                }
                WsMessage::Close(frame) => {
                    let reason = frame.map_or_else(
                        || "closed by the server".to_owned(),
                        |f| format!("closed by the server ({}): {}", u16::from(f.code), f.reason),
                    );
                    return Ok(Incoming::Closed(reason));
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
            }
        }
    }

    /// Closes the connection with a normal close frame and `reason`.
    pub async fn close(mut self, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        // The peer may already be gone; closing is best effort.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(Some(frame))).await;
    }
}
