//! The native WebSocket transport (tokio-tungstenite): `ws://` and
//! `wss://` (rustls with the web PKI roots), one binary frame per
//! message, and [`TokioRuntime`], the native [`Runtime`].

use crate::runtime::{BoxFuture, Connection, Frame, Runtime};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{
    frame::coding::CloseCode, CloseFrame, WebSocketConfig,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one connection attempt may take by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The connection failed while sending or receiving.
    #[error("connection failed: {0}")]
    Io(#[source] Box<tokio_tungstenite::tungstenite::Error>),
}

/// One open WebSocket connection to a TopGun server.
#[derive(Debug)]
pub struct WsConnection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsConnection {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) within `timeout`;
    /// frames over `max_frame_len` bytes end the connection.
    ///
    /// # Errors
    /// [`TransportError::Connect`] or [`TransportError::ConnectTimeout`].
    pub async fn connect(
        url: &str,
        timeout: Duration,
        max_frame_len: usize,
    ) -> Result<Self, TransportError> {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(max_frame_len);
        config.max_frame_size = Some(max_frame_len);
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
            Ok(Ok((ws, _response))) => Ok(Self { ws }),
        }
    }

    /// Sends one binary frame.
    ///
    /// # Errors
    /// [`TransportError::Io`] if the connection failed.
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .map_err(|e| TransportError::Io(Box::new(e)))
    }

    /// Waits for the next frame. Cancel-safe (usable in `select!`).
    /// WebSocket pings are answered by the library; a broken connection
    /// (reset, a frame over the size limit, a protocol violation) is
    /// [`Frame::Closed`] with the reason.
    pub async fn recv_frame(&mut self) -> Frame {
        loop {
            let Some(next) = self.ws.next().await else {
                return Frame::Closed("the connection ended".into());
            };
            match next {
                Err(e) => return Frame::Closed(TransportError::Io(Box::new(e)).to_string()),
                Ok(WsMessage::Binary(bytes)) => return Frame::Binary(bytes.into()),
                Ok(WsMessage::Text(t)) => return Frame::Text(t.len()),
                Ok(WsMessage::Close(frame)) => {
                    return Frame::Closed(frame.map_or_else(
                        || "closed by the server".to_owned(),
                        |f| format!("closed by the server ({}): {}", u16::from(f.code), f.reason),
                    ));
                }
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => {}
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

impl Connection for WsConnection {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.send_frame(frame).await.map_err(|e| e.to_string()) })
    }

    fn recv(&mut self) -> BoxFuture<'_, Frame> {
        Box::pin(self.recv_frame())
    }

    fn close(self: Box<Self>, reason: String) -> BoxFuture<'static, ()> {
        Box::pin(async move { (*self).close(&reason).await })
    }
}

/// The native [`Runtime`]: tokio's clock, timers and tasks (so tests can
/// pause time), tokio-tungstenite connections.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
    origin: tokio::time::Instant,
    connect_timeout: Duration,
}

impl TokioRuntime {
    /// The runtime the caller runs on.
    ///
    /// # Errors
    /// Called outside a tokio runtime.
    pub fn current() -> Result<Self, tokio::runtime::TryCurrentError> {
        Ok(Self {
            handle: tokio::runtime::Handle::try_current()?,
            origin: tokio::time::Instant::now(),
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    /// Gives up a connection attempt after `timeout` (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl Runtime for TokioRuntime {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        // The timer belongs to this runtime even when the future is made
        // and polled elsewhere (an application's own executor).
        let _context = self.handle.enter();
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }

    fn connect(
        &self,
        url: &str,
        max_frame_len: usize,
    ) -> BoxFuture<'static, Result<Box<dyn Connection>, String>> {
        let url = url.to_owned();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            WsConnection::connect(&url, timeout, max_frame_len)
                .await
                .map(|c| Box::new(c) as Box<dyn Connection>)
                .map_err(|e| e.to_string())
        })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // The driver signals its own end (see `SyncHandle::close`).
        drop(self.handle.spawn(task));
    }
}
