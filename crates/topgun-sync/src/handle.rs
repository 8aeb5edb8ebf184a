//! How the client talks to a running [`SyncDriver`](crate::SyncDriver):
//! [`SyncHandle`] (owned by the client facade; the last one dropped stops
//! the driver) and [`SyncNotifier`] (held by the local data, tells the
//! driver about local writes without keeping it alive).

use tokio::sync::{mpsc, oneshot, watch};

/// A command to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// `map` was written locally.
    LocalChange(String),
    /// Sync this map too.
    OpenMap(String),
    /// The device's network went away (`false`) or came back (`true`).
    Network(bool),
    /// The store lost `key` of `map` (quota pruning): fetch it if the
    /// server has it, then answer on `done`.
    Fetch {
        map: String,
        key: String,
        done: oneshot::Sender<()>,
    },
    /// Stop: disconnect and end the driver.
    Stop,
}

/// Controls a running driver. Cheap to clone; when the last clone is
/// dropped the driver stops (closing its connection).
#[derive(Debug, Clone)]
pub struct SyncHandle {
    commands: mpsc::UnboundedSender<Command>,
    stopped: watch::Receiver<()>,
}

impl SyncHandle {
    pub(crate) fn new(
        commands: mpsc::UnboundedSender<Command>,
        stopped: watch::Receiver<()>,
    ) -> Self {
        Self { commands, stopped }
    }

    fn send(&self, command: Command) {
        // A closed channel means the driver has stopped; nothing to do.
        let _ = self.commands.send(command);
    }

    /// A notifier for the local data, which must not keep the driver alive.
    pub fn notifier(&self) -> SyncNotifier {
        SyncNotifier(self.commands.downgrade())
    }

    /// Starts syncing `map` (if it is not synced yet).
    pub fn open_map(&self, map: &str) {
        self.send(Command::OpenMap(map.to_owned()));
    }

    /// Tells the driver whether the device has a network: offline
    /// disconnects and stops retrying; online reconnects at once.
    pub fn set_network(&self, online: bool) {
        self.send(Command::Network(online));
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.has_changed().is_err()
    }

    /// Stops the driver and waits until it has stopped (its connection
    /// closed). Returns at once if it already has.
    pub async fn close(&self) {
        self.send(Command::Stop);
        let mut stopped = self.stopped.clone();
        // The driver never sends; `changed` fails once it dropped its end.
        while stopped.changed().await.is_ok() {}
    }
}

/// Tells a driver about local writes. Does not keep the driver alive: once
/// every [`SyncHandle`] is gone, notifying does nothing.
#[derive(Debug, Clone)]
pub struct SyncNotifier(mpsc::WeakUnboundedSender<Command>);

impl SyncNotifier {
    fn send(&self, command: Command) {
        if let Some(tx) = self.0.upgrade() {
            // A closed channel means sync stopped; the write is in the op log.
            let _ = tx.send(command);
        }
    }

    /// `map` was written (a key put, removed, or the map cleared) locally;
    /// the change is durable and its op is in the log.
    pub fn local_change(&self, map: &str) {
        self.send(Command::LocalChange(map.to_owned()));
    }

    /// The application read `key` of `map`, which the store does not hold:
    /// if it was pruned (its map's leaf sums still count it) and the
    /// client is online, its leaf is fetched from the server and merged.
    /// The answer completes once that is over — merged, nothing to fetch,
    /// or the connection ended — so the caller can read the store again.
    /// `None` if sync has stopped.
    pub fn fetch(&self, map: &str, key: &str) -> Option<oneshot::Receiver<()>> {
        let tx = self.0.upgrade()?;
        let (done, answer) = oneshot::channel();
        tx.send(Command::Fetch {
            map: map.to_owned(),
            key: key.to_owned(),
            done,
        })
        .ok()?;
        Some(answer)
    }
}
