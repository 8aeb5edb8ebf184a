//! [`SyncStatus`]: what the sync driver tells the application: the
//! connectivity state and its changes, sync events, the clock-skew
//! estimate and traffic counters.

use crate::{ConnectionState, SyncEvent};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tokio::sync::{broadcast, watch};

/// State transitions kept for a slow reader of
/// [`SyncStatus::state_changes`].
const STATE_BUFFER: usize = 256;
/// Events kept for a slow reader of [`SyncStatus::events`].
const EVENT_BUFFER: usize = 256;

/// Sync traffic counters (see [`SyncStatus::traffic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrafficSnapshot {
    /// Frames sent to servers.
    pub frames_sent: u64,
    /// Frames received from servers.
    pub frames_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// The status of one client's sync, written by its driver.
#[derive(Debug)]
pub struct SyncStatus {
    state: watch::Sender<ConnectionState>,
    state_changes: broadcast::Sender<ConnectionState>,
    events: broadcast::Sender<SyncEvent>,
    skew_ms: AtomicI64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(ConnectionState::Initial),
            state_changes: broadcast::Sender::new(STATE_BUFFER),
            events: broadcast::Sender::new(EVENT_BUFFER),
            skew_ms: AtomicI64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }
}

impl SyncStatus {
    /// A status in state `INITIAL`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the state; a change is published to
    /// [`state_changes`](Self::state_changes).
    pub fn set_state(&self, state: ConnectionState) {
        let previous = self.state.send_replace(state);
        if previous != state {
            // Nobody listening is fine.
            let _ = self.state_changes.send(state);
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// A receiver of the latest state.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Every state transition from now on, in order (up to 256 unread).
    pub fn state_changes(&self) -> broadcast::Receiver<ConnectionState> {
        self.state_changes.subscribe()
    }

    /// Publishes an event; a [`SyncEvent::ClockSkew`] also updates
    /// [`skew_ms`](Self::skew_ms).
    pub fn emit(&self, event: SyncEvent) {
        if let SyncEvent::ClockSkew(ms) = event {
            self.skew_ms.store(ms, Ordering::Relaxed);
        }
        let _ = self.events.send(event);
    }

    /// Sync events from now on (up to 256 unread).
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.events.subscribe()
    }

    /// The last estimate of the server's clock minus this machine's, in
    /// ms; 0 before the first `PONG`.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Counts one frame of `bytes` sent.
    pub fn count_sent(&self, bytes: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one frame of `bytes` received.
    pub fn count_received(&self, bytes: usize) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Frames and bytes exchanged with servers so far.
    pub fn traffic(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}
