//! [`BrowserRuntime`]: the [`Runtime`] of a browser page or worker
//! (feature `browser-transport`, wasm32): `performance.now()` for the
//! clock, `setTimeout` for timers (`gloo-timers`), the browser's
//! `WebSocket` for connections, and the page's event loop for tasks
//! (`wasm-bindgen-futures`).

use crate::runtime::{BoxFuture, Connection, Frame, Runtime};
use futures_util::future::{select, Either};
use tokio::sync::mpsc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// How long opening a connection may take before it is given up.
const CONNECT_TIMEOUT_MS: u32 = 10_000;

/// The longest close reason a WebSocket accepts, in bytes.
const MAX_CLOSE_REASON: usize = 123;

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// `performance.now()`: milliseconds on a monotonic clock, in a page
    /// and in a worker alike.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// The browser's clock, timers, WebSocket and event loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserRuntime;

impl Runtime for BrowserRuntime {
    fn now_ms(&self) -> u64 {
        performance_now() as u64
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        Box::pin(gloo_timers::future::TimeoutFuture::new(ms))
    }

    fn connect(
        &self,
        url: &str,
        max_frame_len: usize,
    ) -> BoxFuture<'static, Result<Box<dyn Connection>, String>> {
        let url = url.to_owned();
        Box::pin(async move {
            let connection = BrowserConnection::open(&url, max_frame_len).await?;
            Ok(Box::new(connection) as Box<dyn Connection>)
        })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        wasm_bindgen_futures::spawn_local(task);
    }
}

/// What the socket's event handlers report.
enum SocketEvent {
    Open,
    Binary(Vec<u8>),
    Text(usize),
    Closed(String),
}

/// The handlers set on a socket, kept alive while it is.
struct Handlers {
    _open: Closure<dyn FnMut(JsValue)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _close: Closure<dyn FnMut(CloseEvent)>,
}

/// One browser `WebSocket`.
struct BrowserConnection {
    socket: WebSocket,
    events: mpsc::UnboundedReceiver<SocketEvent>,
    max_frame_len: usize,
    _handlers: Handlers,
}

impl BrowserConnection {
    /// Opens a socket to `url` and waits until it is open, has failed, or
    /// [`CONNECT_TIMEOUT_MS`] passed.
    async fn open(url: &str, max_frame_len: usize) -> Result<Self, String> {
        let socket =
            WebSocket::new(url).map_err(|e| format!("cannot open {url}: {}", js_message(&e)))?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let (tx, events) = mpsc::unbounded_channel();

        let sender = tx.clone();
        let open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let _ = sender.send(SocketEvent::Open);
        });
        let sender = tx.clone();
        let message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let frame = match data.dyn_ref::<js_sys::ArrayBuffer>() {
                Some(buffer) => SocketEvent::Binary(js_sys::Uint8Array::new(buffer).to_vec()),
                None => SocketEvent::Text(data.as_string().map_or(0, |text| text.len())),
            };
            let _ = sender.send(frame);
        });
        // An `error` event is always followed by `close`, which says more.
        let close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let reason = match event.reason() {
                reason if reason.is_empty() => format!("closed ({})", event.code()),
                reason => format!("closed ({}: {reason})", event.code()),
            };
            let _ = tx.send(SocketEvent::Closed(reason));
        });
        socket.set_onopen(Some(open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(close.as_ref().unchecked_ref()));
        let mut connection = Self {
            socket,
            events,
            max_frame_len,
            _handlers: Handlers {
                _open: open,
                _message: message,
                _close: close,
            },
        };

        let first = {
            let first = Box::pin(connection.events.recv());
            let timeout = gloo_timers::future::TimeoutFuture::new(CONNECT_TIMEOUT_MS);
            match select(first, timeout).await {
                Either::Left((event, _)) => Some(event),
                Either::Right(((), _)) => None,
            }
        };
        match first {
            Some(Some(SocketEvent::Open)) => Ok(connection),
            Some(Some(SocketEvent::Closed(reason))) => {
                Err(format!("cannot connect to {url}: {reason}"))
            }
            Some(_) => Err(format!("cannot connect to {url}")),
            None => Err(format!(
                "cannot connect to {url}: no answer in {CONNECT_TIMEOUT_MS} ms"
            )),
        }
    }
}

impl Drop for BrowserConnection {
    fn drop(&mut self) {
        // The handlers die with this value: detach them first, so that a
        // late event finds none rather than a dropped closure.
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

/// A thrown JS value as text: an `Error`'s message, a string as it is,
/// anything else as wasm-bindgen prints it.
pub fn js_message(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

impl Connection for BrowserConnection {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        let sent = self
            .socket
            .send_with_u8_array(&frame)
            .map_err(|e| format!("send failed: {}", js_message(&e)));
        Box::pin(async move { sent })
    }

    fn recv(&mut self) -> BoxFuture<'_, Frame> {
        Box::pin(async move {
            match self.events.recv().await {
                Some(SocketEvent::Binary(bytes)) if bytes.len() > self.max_frame_len => {
                    Frame::Closed(format!(
                        "a frame of {} bytes is over the limit of {}",
                        bytes.len(),
                        self.max_frame_len
                    ))
                }
                Some(SocketEvent::Binary(bytes)) => Frame::Binary(bytes),
                Some(SocketEvent::Text(len)) => Frame::Text(len),
                Some(SocketEvent::Closed(reason)) => Frame::Closed(reason),
                Some(SocketEvent::Open) | None => Frame::Closed("the socket is gone".to_owned()),
            }
        })
    }

    fn close(self: Box<Self>, reason: String) -> BoxFuture<'static, ()> {
        let mut reason = reason;
        while reason.len() > MAX_CLOSE_REASON {
            reason.pop();
        }
        let _ = self.socket.close_with_code_and_reason(1000, &reason);
        Box::pin(async {})
    }
}
