//! [`Outbox`]: frames to one socket, written by the caller at once while
//! the socket has room (no task hop on the way out), else queued in order
//! and written by a background flush when it drains.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

/// Bytes an outbox holds for a peer that does not read before it gives
/// the connection up.
const MAX_QUEUED: usize = 64 << 20;

/// The writing half of a data directory connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    half: OwnedWriteHalf,
    /// Bytes not written yet, in order.
    queued: Mutex<Vec<u8>>,
    wake: Arc<Notify>,
    failed: AtomicBool,
}

impl Outbox {
    /// Starts the background flush; the socket's write side closes when
    /// the outbox is dropped.
    pub(crate) fn start(half: OwnedWriteHalf) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            half,
            queued: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            failed: AtomicBool::new(false),
        });
        tokio::spawn(flush(Arc::downgrade(&outbox), outbox.wake.clone()));
        outbox
    }

    /// Sends `frames` after everything sent before.
    ///
    /// # Errors
    /// The socket failed (now or in an earlier background write).
    pub(crate) fn send(&self, frames: &[u8]) -> io::Result<()> {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        if self.failed.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if queued.len() + frames.len() > MAX_QUEUED {
            self.failed.store(true, Ordering::Release);
            return Err(io::Error::other("the peer stopped reading"));
        }
        if !queued.is_empty() {
            queued.extend_from_slice(frames);
            return Ok(());
        }
        let written = match self.half.try_write(frames) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        };
        if written < frames.len() {
            queued.extend_from_slice(&frames[written..]);
            self.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Ends the flush task.
        self.wake.notify_one();
    }
}

/// Writes what [`Outbox::send`] could not, whenever the socket has room;
/// ends with the outbox.
async fn flush(outbox: Weak<Outbox>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(outbox) = outbox.upgrade() else {
                return;
            };
            if outbox.half.writable().await.is_err() {
                outbox.failed.store(true, Ordering::Release);
                return;
            }
            let mut queued = outbox.queued.lock().unwrap_or_else(PoisonError::into_inner);
            match outbox.half.try_write(&queued) {
                Ok(n) => {
                    queued.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    outbox.failed.store(true, Ordering::Release);
                    return;
                }
            }
            if queued.is_empty() {
                break;
            }
        }
    }
}
