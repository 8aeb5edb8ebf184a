//! [`LeaderServer`]: the leader's side of the data directory's socket. Per
//! follower connection it runs each call (writes through the leader's
//! write path, so its working set, events and sync see them) and streams
//! every change and connection state; a change a call made goes out
//! before that call's reply.

use super::outbox::Outbox;
use super::protocol::READ_BUFFER;
use super::protocol::{
    encode_into, execute, read_frame, CallError, ChangeFrame, Frame, Reply, Request, SyncRequest,
    PROTOCOL_VERSION,
};
use crate::error::ClientError;
use crate::local::LocalData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};
use topgun_sync::{SyncHandle, SyncStatus};

/// The leader's listener; stops (and removes the socket file) when dropped.
#[derive(Debug)]
pub(crate) struct LeaderServer {
    task: JoinHandle<()>,
    path: PathBuf,
}

/// Starts sync at a follower's request, if the leader does not sync.
pub(crate) type SyncStarter = Arc<dyn Fn(SyncRequest) + Send + Sync>;

/// What a connection needs from the leader.
#[derive(Clone)]
pub(crate) struct LeaderParts {
    pub(crate) local: Arc<LocalData>,
    pub(crate) status: Arc<SyncStatus>,
    /// Set while sync runs.
    pub(crate) sync: Arc<Mutex<Option<SyncHandle>>>,
    pub(crate) start_sync: SyncStarter,
}

impl std::fmt::Debug for LeaderParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderParts").finish_non_exhaustive()
    }
}

impl LeaderServer {
    /// Listens on `path`, first removing a file left there by a leader that
    /// died (the caller holds the data file's lock, so no live leader
    /// listens there).
    ///
    /// # Errors
    /// The socket could not be bound.
    pub(crate) fn start(path: &Path, parts: LeaderParts) -> std::io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(connection(stream, parts.clone()));
                        }
                        // Out of file descriptors, say: try again shortly.
                        Err(_) => tokio::time::sleep(super::RETRY).await,
                    },
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(Self {
            task,
            path: path.to_owned(),
        })
    }
}

impl Drop for LeaderServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connection's way out: every frame goes after the changes published
/// before it, so a call's reply follows the changes the call made.
#[derive(Debug)]
struct ConnOut {
    out: Arc<Outbox>,
    /// Changes not sent yet; locked while sending, which keeps the order.
    feed: Mutex<broadcast::Receiver<Arc<crate::hub::Change>>>,
}

impl ConnOut {
    /// Sends the waiting changes, then `frame` if any.
    ///
    /// # Errors
    /// The socket failed, or this connection fell more than the feed's
    /// buffer behind (the follower reconnects and starts from a clean
    /// cache).
    fn send(&self, frame: Option<Frame>) -> std::io::Result<()> {
        // The frame first: a reply too large to send becomes an error
        // reply, and nothing else is lost.
        let mut last = Vec::new();
        if let Some(frame) = frame {
            if let Err(e) = encode_into(&mut last, &frame) {
                let Frame::Reply(id, _) = frame else {
                    return Err(e);
                };
                let refusal = CallError::Failed(format!("the reply cannot be sent: {e}"));
                encode_into(&mut last, &Frame::Reply(id, Err(refusal)))?;
            }
        }
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = Vec::new();
        loop {
            match feed.try_recv() {
                Ok(change) => encode_into(&mut buf, &Frame::Change(ChangeFrame::from(&*change)))?,
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(_) => return Err(std::io::Error::other("the follower fell behind")),
            }
        }
        buf.append(&mut last);
        if buf.is_empty() {
            return Ok(());
        }
        self.out.send(&buf)
    }
}

async fn connection(stream: UnixStream, parts: LeaderParts) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    // Rings on every change; the changes themselves are taken from the
    // connection's own receiver, under its lock.
    let mut bell = parts.local.changes();
    let out = Arc::new(ConnOut {
        out: Outbox::start(writer),
        feed: Mutex::new(parts.local.changes()),
    });
    let mut states = parts.status.watch_state();
    let mut events = parts.status.events();
    let hello = Frame::Hello(
        PROTOCOL_VERSION,
        parts.local.hlc().now(),
        *states.borrow_and_update(),
    );
    // Straight out, before any change.
    let mut frame = Vec::new();
    if encode_into(&mut frame, &hello).is_err() || out.out.send(&frame).is_err() {
        return;
    }
    let read_out = out.clone();
    // Aborted with this connection (when the leader stops).
    let mut read = JoinSet::new();
    read.spawn(async move {
        let mut calls = JoinSet::new();
        let mut frame = Vec::new();
        while let Ok(Some(request)) = read_frame::<Request>(&mut reader, &mut frame).await {
            match request {
                Request::Store { id, call, retried } => {
                    let parts = parts.clone();
                    let out = read_out.clone();
                    calls.spawn(async move {
                        let result = run(&parts, call, retried).await;
                        // A failed socket ends the connection at its next
                        // change, state or event.
                        let _ = out.send(Some(Frame::Reply(id, result)));
                    });
                    while calls.try_join_next().is_some() {}
                }
                Request::OpenMap(name) => {
                    let sync = parts.sync.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(sync) = sync.as_ref() {
                        sync.open_map(&name);
                    }
                }
                Request::StartSync(request) => (parts.start_sync)(request),
            }
        }
        // Calls in flight finish (their writes are durable either way).
        while calls.join_next().await.is_some() {}
    });
    loop {
        let sent = tokio::select! {
            _ = read.join_next() => return,
            // A lagging bell only means "look".
            _ = bell.recv() => out.send(None),
            Ok(()) = states.changed() => {
                let state = *states.borrow_and_update();
                out.send(Some(Frame::State(state)))
            }
            event = events.recv() => match event {
                Ok(event) => out.send(Some(Frame::Event(event))),
                // Events are advisory; a follower too slow for them misses some.
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Runs one call: writes and clears through the write path, the rest on
/// the store.
async fn run(
    parts: &LeaderParts,
    call: super::protocol::Call,
    retried: bool,
) -> Result<Reply, CallError> {
    use super::protocol::Call;
    let local = &parts.local;
    let result: Result<Reply, ClientError> = match call {
        Call::WriteLocal(write) => local.write_stamped(write, retried).await.map(Reply::Id),
        Call::ClearMap(map, at) => local
            .clear(&local.map(&map), Some(at))
            .await
            .map(Reply::Cleared),
        other => execute(local.store().as_ref(), other)
            .await
            .map_err(ClientError::from),
    };
    result.map_err(|e| match e {
        ClientError::Storage(s) => CallError::from_storage(&s),
        other => CallError::Failed(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_dir::protocol::Call;
    use crate::working_set::WorkingSetLimits;
    use topgun_core::{Hlc, Timestamp};
    use topgun_storage::{LocalWrite, MemoryStore, OpType};

    fn parts() -> LeaderParts {
        let local = LocalData::new(
            Arc::new(MemoryStore::new()),
            Hlc::new("leader").unwrap_or_else(|e| panic!("{e}")),
            WorkingSetLimits::default(),
            crate::quota::QuotaSettings::default(),
            None,
        );
        LeaderParts {
            local: Arc::new(local),
            status: Arc::new(SyncStatus::new()),
            sync: Arc::default(),
            start_sync: Arc::new(|_| {}),
        }
    }

    fn write(millis: u64, value: u8) -> LocalWrite {
        LocalWrite {
            map_name: "m".into(),
            key: "k".into(),
            op_type: OpType::Put,
            value: Some(vec![value]),
            timestamp: Timestamp::new(millis, 0, "follower"),
            ttl_ms: None,
        }
    }

    async fn pending(parts: &LeaderParts) -> u64 {
        let stats = parts.local.store().stats().await;
        stats.map_or_else(|e| panic!("{e}"), |s| s.pending_ops)
    }

    #[tokio::test]
    async fn a_write_sent_again_is_answered_with_its_op_and_not_applied_twice() {
        let parts = parts();
        let now = parts.local.now_millis();
        let first = run(&parts, Call::WriteLocal(write(now, 1)), false).await;
        let again = run(&parts, Call::WriteLocal(write(now, 1)), false).await;
        assert!(matches!((&first, &again), (Ok(Reply::Id(a)), Ok(Reply::Id(b))) if a == b));
        assert_eq!(pending(&parts).await, 1);
    }

    #[tokio::test]
    async fn a_retried_write_already_superseded_is_found_in_the_log_not_applied_again() {
        let parts = parts();
        let now = parts.local.now_millis();
        let first = run(&parts, Call::WriteLocal(write(now, 1)), false).await;
        let mut newer = write(now + 1, 2);
        newer.timestamp.node_id = "other".into();
        assert!(run(&parts, Call::WriteLocal(newer), false).await.is_ok());
        let retried = run(&parts, Call::WriteLocal(write(now, 1)), true).await;
        assert!(
            matches!((&first, &retried), (Ok(Reply::Id(a)), Ok(Reply::Id(b))) if a == b),
            "{first:?} {retried:?}"
        );
        assert_eq!(pending(&parts).await, 2);
        let value = parts.local.store().get("m", "k").await;
        assert_eq!(value.ok().flatten().and_then(|r| r.value), Some(vec![2]));
    }

    #[tokio::test]
    async fn a_write_older_than_the_record_is_refused_as_stale() {
        let parts = parts();
        let now = parts.local.now_millis();
        assert!(run(&parts, Call::WriteLocal(write(now, 1)), false)
            .await
            .is_ok());
        let old = run(&parts, Call::WriteLocal(write(now - 1, 2)), false).await;
        assert!(
            matches!(&old, Err(CallError::Stale(t)) if t.millis == now),
            "{old:?}"
        );
        assert_eq!(pending(&parts).await, 1);
    }

    #[tokio::test]
    async fn a_stamp_beyond_the_drift_bound_is_refused() {
        let parts = parts();
        let far = parts.local.now_millis() + 3_600_000;
        let result = run(&parts, Call::WriteLocal(write(far, 1)), false).await;
        assert!(
            matches!(&result, Err(CallError::Failed(m)) if m.contains("ahead")),
            "{result:?}"
        );
        assert_eq!(pending(&parts).await, 0);
    }
}
