//! [`Link`]: a follower's connection to the leader of its data directory.
//! Calls go out tagged with an id; the reader applies the leader's changes
//! and states as they come and hands each reply to its caller. The leader
//! sends the changes a call made before its reply, so a write's own event
//! is published before the write returns.

use super::outbox::Outbox;
use super::protocol::READ_BUFFER;
use super::protocol::{
    encode_into, read_frame, Call, CallError, Frame, Reply, Request, SyncRequest, PROTOCOL_VERSION,
};
use crate::local::LocalData;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use topgun_core::Timestamp;
use topgun_storage::StorageError;
use topgun_sync::ConnectionState;
use topgun_sync::SyncStatus;

type Waiters = HashMap<u64, oneshot::Sender<Result<Reply, CallError>>>;

/// A connection to a leader that said hello.
#[derive(Debug)]
pub(crate) struct Connected {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    clock: Timestamp,
    state: ConnectionState,
}

impl Connected {
    /// Connects to the leader's socket at `path` and reads its hello.
    /// `None` when nobody listens there, the connection closes, or no
    /// hello comes within `wait` (a leader that is stopped or stuck).
    ///
    /// # Errors
    /// The leader speaks another version of this protocol.
    pub(crate) async fn connect(
        path: &Path,
        wait: Duration,
    ) -> Result<Option<Connected>, StorageError> {
        let Ok(stream) = UnixStream::connect(path).await else {
            return Ok(None);
        };
        let (reader, writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        let mut buf = Vec::new();
        let hello = tokio::time::timeout(wait, read_frame::<Frame>(&mut reader, &mut buf)).await;
        match hello {
            Ok(Ok(Some(Frame::Hello(PROTOCOL_VERSION, clock, state)))) => Ok(Some(Connected {
                reader,
                writer,
                clock,
                state,
            })),
            Ok(Ok(Some(Frame::Hello(version, ..)))) => Err(StorageError::Backend {
                backend: "data directory socket",
                during: "greeting the process holding the data directory",
                source: format!(
                    "it speaks protocol version {version}, this client {PROTOCOL_VERSION}: \
                     use one version of topgun on a data directory"
                )
                .into(),
            }),
            _ => Ok(None),
        }
    }
}

/// A connection to the leader process.
#[derive(Debug)]
pub(crate) struct Link {
    out: Arc<Outbox>,
    /// `None` once the connection ended.
    waiting: Mutex<Option<Waiters>>,
    next_id: AtomicU64,
    ended: watch::Sender<bool>,
}

impl Link {
    /// Starts reading and writing `connected` in the background, for
    /// `local`: the clock observes the leader's, the status takes its
    /// state.
    pub(crate) fn start(
        connected: Connected,
        local: &Arc<LocalData>,
        status: Arc<SyncStatus>,
    ) -> Arc<Link> {
        let Connected {
            mut reader,
            writer,
            clock,
            state,
        } = connected;
        let _ = local.hlc().update(&clock);
        status.set_state(state);
        let link = Arc::new(Link {
            out: Outbox::start(writer),
            waiting: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            ended: watch::Sender::new(false),
        });
        let weak_local = Arc::downgrade(local);
        let reading = Arc::downgrade(&link);
        tokio::spawn(async move {
            let _ = read_loop(&mut reader, &reading, &weak_local, &status).await;
            // No leader, no connection state, until the next one says.
            status.set_state(ConnectionState::Offline);
            if let Some(link) = reading.upgrade() {
                link.end();
            }
        });
        link
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Option<Waiters>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn end(&self) {
        // Dropping the senders answers every waiting call with `None`.
        self.waiting().take();
        self.ended.send_replace(true);
    }

    /// Runs `call` at the leader (`retried`: it may have run already):
    /// `None` if the connection ended before the reply came (the call may
    /// or may not have run).
    pub(crate) async fn call(
        &self,
        call: &Call,
        retried: bool,
    ) -> Option<Result<Reply, CallError>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        encode_into(
            &mut frame,
            &Request::Store {
                id,
                call: call.clone(),
                retried,
            },
        )
        .ok()?;
        let (tx, rx) = oneshot::channel();
        self.waiting().as_mut()?.insert(id, tx);
        if self.out.send(&frame).is_err() {
            self.end();
        }
        rx.await.ok()
    }

    /// Asks the leader to sync map `name` (no answer).
    pub(crate) fn open_map(&self, name: &str) {
        let mut frame = Vec::new();
        if encode_into(&mut frame, &Request::OpenMap(name.to_owned())).is_ok() {
            let _ = self.out.send(&frame);
        }
    }

    /// Asks the leader to sync with this server if it does not sync yet
    /// (no answer).
    pub(crate) fn request_sync(&self, request: &SyncRequest) {
        let mut frame = Vec::new();
        if encode_into(&mut frame, &Request::StartSync(request.clone())).is_ok() {
            let _ = self.out.send(&frame);
        }
    }

    /// Completes once the connection ended.
    pub(crate) async fn ended(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|e| *e).await;
    }
}

async fn read_loop(
    reader: &mut BufReader<OwnedReadHalf>,
    link: &Weak<Link>,
    local: &Weak<LocalData>,
    status: &SyncStatus,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(frame) = read_frame::<Frame>(reader, &mut buf).await? {
        match frame {
            Frame::Reply(id, result) => {
                let Some(link) = link.upgrade() else {
                    return Ok(());
                };
                let waiter = link.waiting().as_mut().and_then(|w| w.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            Frame::Change(change) => match local.upgrade() {
                Some(local) => local.apply_change(change.into()),
                None => return Ok(()),
            },
            Frame::State(state) => status.set_state(state),
            Frame::Event(event) => status.emit(event),
            Frame::Hello(..) => {}
        }
    }
    Ok(())
}
