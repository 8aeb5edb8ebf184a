//! The runtime seam: everything the [`SyncDriver`](crate::SyncDriver)
//! needs from a platform, and nothing else.
//!
//! - [`Runtime`]: a monotonic clock, a timer, opening a [`Connection`],
//!   and spawning the driver's task.
//! - [`Connection`]: send a binary frame, receive the next one, close.
//!   Frames are bytes; encoding, decoding and traffic counting happen in
//!   the driver, once for every platform.
//!
//! Natively [`TokioRuntime`](crate::TokioRuntime) implements it with tokio
//! and tokio-tungstenite (feature `native-transport`). Futures are `Send`
//! natively and need not be on wasm ([`MaybeSend`]).

use std::future::Future;
use std::pin::Pin;

/// `Send` on native targets; nothing on wasm, where everything runs on one
/// thread.
#[cfg(not(target_family = "wasm"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets; nothing on wasm, where everything runs on one
/// thread.
#[cfg(target_family = "wasm")]
pub trait MaybeSend {}
#[cfg(target_family = "wasm")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets; nothing on wasm.
#[cfg(not(target_family = "wasm"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` on native targets; nothing on wasm.
#[cfg(target_family = "wasm")]
pub trait MaybeSync {}
#[cfg(target_family = "wasm")]
impl<T: ?Sized> MaybeSync for T {}

/// A boxed future, `Send` on native targets.
#[cfg(not(target_family = "wasm"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future, `Send` on native targets.
#[cfg(target_family = "wasm")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a connection delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A binary frame: one encoded message.
    Binary(Vec<u8>),
    /// A text frame (not part of the protocol), with its length.
    Text(usize),
    /// The connection ended, with the reason (the peer's close frame, a
    /// reset, a frame over the size limit, …).
    Closed(String),
}

/// One open connection to a server.
pub trait Connection: MaybeSend + 'static {
    /// Sends one binary frame. An error means the connection failed.
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
    /// The next frame. Must be cancel-safe: the driver drops this future
    /// whenever something else wakes it first.
    fn recv(&mut self) -> BoxFuture<'_, Frame>;
    /// Closes the connection with a normal close frame and `reason`, best
    /// effort.
    fn close(self: Box<Self>, reason: String) -> BoxFuture<'static, ()>;
}

/// The platform under the driver.
pub trait Runtime: std::fmt::Debug + MaybeSend + Sync + 'static {
    /// Milliseconds on a monotonic clock (any origin).
    fn now_ms(&self) -> u64;
    /// Completes `ms` milliseconds from now.
    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()>;
    /// Opens a connection to `url`, answering when it is open or has
    /// failed (with the reason). Must give up by itself eventually (a
    /// timeout); the driver keeps serving commands and timers meanwhile.
    /// `max_frame_len` bounds incoming frames.
    fn connect(
        &self,
        url: &str,
        max_frame_len: usize,
    ) -> BoxFuture<'static, Result<Box<dyn Connection>, String>>;
    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// Where a driver gets the token it sends in `AUTH`: asked before every
/// connection, so a token that expires is fetched afresh on reconnect.
pub trait TokenProvider: std::fmt::Debug + MaybeSend + MaybeSync + 'static {
    /// The token (`None`: connect without one). An error fails this
    /// connection attempt, which is retried after the usual backoff.
    fn token(&self) -> BoxFuture<'static, Result<Option<String>, String>>;
}
