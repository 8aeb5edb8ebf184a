//! [`SyncDriver`]: the one loop that drives the [`SyncEngine`] with a
//! platform's [`Runtime`], the client's [`Replica`] and a [`SyncStatus`].
//!
//! One task per client. Commands (local writes, maps opened, network
//! changes, stop) arrive over a channel from the [`SyncHandle`]; frames
//! from the connection; timers from the runtime. Connecting is a state of
//! the loop, never an inline wait, so commands, timers and `close` are
//! served while a connection attempt is in progress. Every output of the
//! engine is carried out here, in order, except that frames to send and
//! timers may overtake a merge: up to two merges are in flight (one
//! written, the next waiting in the store's queue) while the loop reads on
//! (see `queue_merge`).

use crate::coalesce::{coalesce, may_overtake_merges};
use crate::handle::{Command, SyncHandle};
use crate::ops::{pending_op, ClearExpansion};
use crate::replica::{Applied, Replica, ReplicaError};
use crate::runtime::{BoxFuture, Connection, Frame, Runtime};
use crate::status::SyncStatus;
use crate::{Input, Output, PendingOp, SyncConfig, SyncEngine, SyncEvent, TimerKind};
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::{mpsc, oneshot, watch};
use topgun_core::wire::{Codec, Message, WireRecord};
use topgun_core::MerkleSums;
use topgun_storage::{OpType, ScanCursor, StorageError};

/// Records read per page when resetting a map or expanding a CLEAR.
const PAGE: usize = 1_000;
/// Frames handled together when several have already arrived (so that
/// their merges share one storage transaction, see [`coalesce`]).
const DRAIN_FRAMES: usize = 64;
/// Records that may wait for the merges in progress before the loop stops
/// reading frames until one ends: enough that each merge is one large
/// transaction, few enough to bound the memory a fast server can fill
/// (with the merges in flight, about three times this many records).
const QUEUED_RECORDS: usize = 8_192;
/// Merges started and not yet stored, at most: while the store writes
/// one, the next is prepared (its records converted, its keys locked) and
/// waits in the store's queue, so the writer never waits for the loop.
const MERGES_IN_FLIGHT: usize = 2;

/// What a driver syncs with, and how.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// The server's WebSocket URL.
    pub url: String,
    /// The token sent in `AUTH`.
    pub token: Option<String>,
    /// Asked for the token before each connection instead (it replaces
    /// `token`).
    pub token_provider: Option<Arc<dyn crate::TokenProvider>>,
    /// Engine tunables.
    pub config: SyncConfig,
    /// Maps to sync from the start (the caller lists the store's, so that
    /// an error doing so reaches it); more are added with
    /// [`SyncHandle::open_map`] and by local writes.
    pub maps: Vec<String>,
}

/// An open connection, with the token fetched for it (when a provider
/// gives tokens).
type Opened = (Box<dyn Connection>, Option<Option<String>>);

/// A connection being opened.
type Connecting = BoxFuture<'static, Result<Opened, String>>;

/// A map's records from the server, to merge.
type Records = Vec<(String, WireRecord)>;

/// A merge being written: its map, then its outcome.
type Merging = BoxFuture<'static, (String, Result<Applied, ReplicaError>)>;

/// The I/O side of the loop: what it waits on.
struct Io {
    commands: mpsc::UnboundedReceiver<Command>,
    conn: Option<Box<dyn Connection>>,
    connecting: Option<Connecting>,
    /// Deadlines on the runtime's monotonic clock.
    timers: BTreeMap<TimerKind, u64>,
    /// Alternates which source is polled first, so a steady stream of
    /// commands cannot starve incoming frames (or the reverse).
    frames_first: bool,
    /// Readers waiting for a fetched key, by map and key.
    fetches: BTreeMap<(String, String), Vec<oneshot::Sender<()>>>,
    /// The merges being written while the loop reads on (at most
    /// [`MERGES_IN_FLIGHT`], ending in the order they started): frames are
    /// decoded and answered while the store commits the records before
    /// them.
    merging: FuturesOrdered<Merging>,
    /// Records that arrived meanwhile, of one map: the next merge.
    queued: Option<(String, Records)>,
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    /// A connection opened (with the token fetched for it) or failed.
    Connected(Result<Opened, String>),
    Frame(Frame),
    Timer,
    /// The oldest merge in progress ended.
    Merged((String, Result<Applied, ReplicaError>)),
}

/// The sync driver of one client. Start it with [`SyncDriver::spawn`].
pub struct SyncDriver<R: Runtime + ?Sized> {
    engine: SyncEngine,
    runtime: Arc<R>,
    replica: Arc<dyn Replica>,
    status: Arc<SyncStatus>,
    url: String,
    token_provider: Option<Arc<dyn crate::TokenProvider>>,
    codec: Codec,
    /// Wall-clock ms at start, and the runtime's monotonic ms then: the
    /// engine's time is monotonic but anchored to the wall clock, so that
    /// skew estimates compare with the server's clock.
    epoch_wall: u64,
    epoch_mono: u64,
    /// Ops whose value cannot be sent, already reported.
    unsendable: BTreeSet<u64>,
}

impl<R: Runtime + ?Sized> std::fmt::Debug for SyncDriver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncDriver")
            .field("url", &self.url)
            .field("state", &self.engine.state())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + ?Sized> SyncDriver<R> {
    /// Starts a driver on `runtime`: it reads the Merkle leaf sums of
    /// `settings.maps` from the store and connects. Returns its handle; the driver
    /// runs until [`SyncHandle::close`] or until every handle is dropped.
    pub fn spawn(
        runtime: Arc<R>,
        replica: Arc<dyn Replica>,
        status: Arc<SyncStatus>,
        settings: DriverSettings,
    ) -> SyncHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stopped_tx, stopped_rx) = watch::channel(());
        let mut config = settings.config;
        // Each client jitters its reconnects differently, so many clients
        // that lost one server do not come back in lockstep.
        config.jitter_seed ^= u64::from(topgun_core::merkle::fnv1a(replica.node_id())) << 17;
        let mut engine = SyncEngine::new(config);
        engine.set_token(settings.token);
        engine.set_client_id(replica.node_id());
        let driver = SyncDriver {
            engine,
            epoch_wall: replica.wall_ms(),
            epoch_mono: runtime.now_ms(),
            runtime: runtime.clone(),
            replica,
            status,
            url: settings.url,
            token_provider: settings.token_provider,
            codec: Codec::default(),
            unsendable: BTreeSet::new(),
        };
        let io = Io {
            commands: rx,
            conn: None,
            connecting: None,
            timers: BTreeMap::new(),
            frames_first: false,
            fetches: BTreeMap::new(),
            merging: FuturesOrdered::new(),
            queued: None,
        };
        runtime.spawn(Box::pin(async move {
            driver.run(io, settings.maps).await;
            // Dropped last: `SyncHandle::close` returns once this is gone.
            drop(stopped_tx);
        }));
        SyncHandle::new(tx, stopped_rx)
    }

    fn now_ms(&self) -> u64 {
        self.epoch_wall + self.runtime.now_ms().saturating_sub(self.epoch_mono)
    }

    fn emit(&self, event: SyncEvent) {
        self.status.emit(event);
    }

    async fn run(mut self, mut io: Io, mut maps: Vec<String>) {
        maps.sort();
        maps.dedup();
        for map in maps {
            self.open_map(&mut io, &map).await;
        }
        self.feed(&mut io, Input::Start).await;
        loop {
            match self.wait(&mut io).await {
                Wake::Command(None | Some(Command::Stop)) => break,
                Wake::Command(Some(command)) => {
                    let mut changed = self.command(&mut io, command).await;
                    // What queued meanwhile too: one LocalChange for many writes.
                    loop {
                        match io.commands.try_recv() {
                            Ok(Command::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => {
                                return self.stop(io).await;
                            }
                            Ok(command) => changed |= self.command(&mut io, command).await,
                            Err(mpsc::error::TryRecvError::Empty) => break,
                        }
                    }
                    if changed {
                        self.feed(&mut io, Input::LocalChange).await;
                    }
                }
                Wake::Connected(result) => {
                    io.connecting = None;
                    // Merges of the last connection end first: the trees
                    // read next must include them. If one fails, the new
                    // connection is dropped and the engine hears the failure.
                    let settled = match &result {
                        Ok(_) => self.settle_merges(&mut io).await,
                        Err(_) => None,
                    };
                    let input = match (settled, result) {
                        (Some(failed), _) => failed,
                        (None, Ok((conn, token))) => {
                            if let Some(token) = token {
                                self.engine.set_token(token);
                            }
                            io.conn = Some(conn);
                            // The pulls of this connection compare against
                            // the store's leaf sums as they are now.
                            let maps: Vec<String> = self.engine.maps().map(str::to_owned).collect();
                            for map in maps {
                                self.load_tree(&map).await;
                            }
                            Input::Connected
                        }
                        (None, Err(why)) => Input::Closed(why),
                    };
                    self.feed(&mut io, input).await;
                }
                Wake::Frame(frame) => {
                    // Frames that already arrived too (a pull's leaves pile
                    // up while one is merged) are handled in one go.
                    let mut outputs = self.receive(&mut io, frame);
                    for _ in 1..DRAIN_FRAMES {
                        let Some(conn) = io.conn.as_mut() else { break };
                        let Some(frame) = now_or_never(conn.recv()) else {
                            break;
                        };
                        outputs.extend(self.receive(&mut io, frame));
                    }
                    self.execute(&mut io, coalesce(outputs)).await;
                }
                Wake::Merged(done) => {
                    if let Some(input) = self.merged(&mut io, done).await {
                        self.feed(&mut io, input).await;
                    }
                    self.start_queued_merge(&mut io);
                }
                Wake::Timer => {
                    let now = self.runtime.now_ms();
                    let due: Vec<TimerKind> = io
                        .timers
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(timer, _)| *timer)
                        .collect();
                    for timer in due {
                        io.timers.remove(&timer);
                        self.feed(&mut io, Input::Timer(timer)).await;
                    }
                }
            }
        }
        self.stop(io).await;
    }

    async fn stop(&mut self, mut io: Io) {
        // What was pulled is stored before the loop ends (a failure is
        // reported; the connection closes anyway). A merge that fails does
        // not stop the ones started after it: their changes must reach the
        // cache and subscribers, and the client may live on.
        while !io.merging.is_empty() || io.queued.is_some() {
            let _ = self.settle_merges(&mut io).await;
        }
        self.feed(&mut io, Input::Stop).await;
        io.connecting = None;
        if let Some(conn) = io.conn.take() {
            conn.close("client stopped".into()).await;
        }
    }

    /// Waits for the next command, connection result, frame or due timer.
    async fn wait(&self, io: &mut Io) -> Wake {
        let now = self.runtime.now_ms();
        let mut sleep = io
            .timers
            .values()
            .min()
            .map(|at| self.runtime.sleep(at.saturating_sub(now)));
        io.frames_first = !io.frames_first;
        let frames_first = io.frames_first;
        let Io {
            commands,
            conn,
            connecting,
            merging,
            queued,
            ..
        } = io;
        // Past the bound, frames wait until a merge in progress ends.
        let reading = queued
            .as_ref()
            .is_none_or(|(_, r)| r.len() < QUEUED_RECORDS);
        let mut recv = conn.as_mut().filter(|_| reading).map(|c| c.recv());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(done)) = merging.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Merged(done));
            }
            let mut poll_frame = |cx: &mut std::task::Context<'_>| match recv.as_mut() {
                Some(f) => f.as_mut().poll(cx).map(Wake::Frame),
                None => Poll::Pending,
            };
            if frames_first {
                if let Poll::Ready(wake) = poll_frame(cx) {
                    return Poll::Ready(wake);
                }
            }
            if let Poll::Ready(command) = commands.poll_recv(cx) {
                return Poll::Ready(Wake::Command(command));
            }
            if !frames_first {
                if let Poll::Ready(wake) = poll_frame(cx) {
                    return Poll::Ready(wake);
                }
            }
            if let Some(f) = connecting.as_mut() {
                if let Poll::Ready(result) = f.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Connected(result));
                }
            }
            if let Some(f) = sleep.as_mut() {
                if f.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Handles a command; returns whether it was a local change.
    async fn command(&mut self, io: &mut Io, command: Command) -> bool {
        match command {
            Command::LocalChange(map) => {
                if self.engine.tree(&map).is_none() {
                    self.open_map(io, &map).await;
                }
                true
            }
            Command::OpenMap(map) => {
                self.open_map(io, &map).await;
                false
            }
            Command::Network(online) => {
                let input = if online {
                    Input::NetworkOnline
                } else {
                    Input::NetworkOffline
                };
                self.feed(io, input).await;
                false
            }
            Command::Fetch { map, key, done } => {
                io.fetches
                    .entry((map.clone(), key.clone()))
                    .or_default()
                    .push(done);
                self.feed(io, Input::Fetch { map, key }).await;
                false
            }
            // Handled by the loop.
            Command::Stop => false,
        }
    }

    /// Starts syncing a map: its leaf sums are read from the store first.
    async fn open_map(&mut self, io: &mut Io, map: &str) {
        if self.engine.tree(map).is_some() {
            return;
        }
        let outputs = self.engine.open_map(map);
        self.load_tree(map).await;
        self.execute(io, outputs).await;
    }

    /// Reads the map's Merkle leaf sums from the store. If that fails the
    /// map's hashes are emptied: the next pull then walks the whole map
    /// (slower, never wrong), where a stale snapshot could match the
    /// server's and leave records unfetched.
    async fn load_tree(&mut self, map: &str) {
        match self.replica.store().merkle_leaves(map).await {
            Ok(leaves) => self.engine.set_tree(map, MerkleSums::from_leaves(leaves)),
            Err(e) => {
                self.engine.set_tree(map, MerkleSums::default());
                self.emit(SyncEvent::LocalError(format!(
                    "reading the Merkle leaf sums of map {map}: {e}"
                )));
            }
        }
    }

    /// Turns what the connection delivered into an input and feeds it;
    /// returns the outputs, not yet carried out.
    fn receive(&mut self, io: &mut Io, frame: Frame) -> Vec<Output> {
        let input = match frame {
            Frame::Binary(bytes) => {
                self.status.count_received(bytes.len());
                match self.codec.decode(&bytes) {
                    Ok(msg) => Input::frame(msg),
                    Err(e) => Input::BadFrame(e.to_string()),
                }
            }
            Frame::Text(len) => {
                self.status.count_received(len);
                Input::BadFrame(format!("unexpected text frame of {len} bytes"))
            }
            Frame::Closed(reason) => {
                io.conn = None;
                Input::Closed(reason)
            }
        };
        let now = self.now_ms();
        self.engine.handle(now, input)
    }

    async fn feed(&mut self, io: &mut Io, input: Input) {
        let now = self.now_ms();
        let outputs = self.engine.handle(now, input);
        self.execute(io, outputs).await;
    }

    /// Carries out outputs in order; an output answered by an input feeds
    /// it back, and its outputs run next.
    async fn execute(&mut self, io: &mut Io, outputs: Vec<Output>) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            // Anything that may not overtake a merge runs once the merges
            // before it are stored; a merge queues behind them itself.
            let waits =
                !may_overtake_merges(&output) && !matches!(output, Output::ApplyRemote { .. });
            if waits {
                if let Some(input) = self.settle_merges(io).await {
                    // The failure's outputs run first, then this one.
                    queue.push_front(output);
                    let now = self.now_ms();
                    for output in self.engine.handle(now, input).into_iter().rev() {
                        queue.push_front(output);
                    }
                    continue;
                }
            }
            if let Some(input) = self.execute_one(io, output).await {
                let now = self.now_ms();
                queue.extend(self.engine.handle(now, input));
            }
        }
    }

    async fn execute_one(&mut self, io: &mut Io, output: Output) -> Option<Input> {
        match output {
            Output::Connect => {
                let connect = self.runtime.connect(&self.url, self.codec.max_frame_len());
                let token = self
                    .token_provider
                    .as_ref()
                    .map(|provider| provider.token());
                io.connecting = Some(Box::pin(async move {
                    let token = match token {
                        Some(token) => Some(
                            token
                                .await
                                .map_err(|e| format!("the token provider failed: {e}"))?,
                        ),
                        None => None,
                    };
                    Ok((connect.await?, token))
                }));
                None
            }
            Output::Disconnect(reason) => {
                io.connecting = None;
                if let Some(conn) = io.conn.take() {
                    conn.close(reason).await;
                }
                None
            }
            Output::Send(msg) => self.send(io, &msg).await,
            Output::LoadPending { after, limit } => match self.load_pending(after, limit).await {
                Ok((ops, exhausted)) => Some(Input::PendingLoaded { ops, exhausted }),
                Err(e) => {
                    self.local_failure(io, format!("reading pending ops: {e}"))
                        .await
                }
            },
            Output::ApplyRemote { map, records } => self.queue_merge(io, map, records).await,
            Output::MarkSynced(ids) => {
                // Relaxed: a crash that undoes it only makes the ops pending
                // again, and the server treats resent ops as no-ops.
                match self.replica.store().acknowledge(&ids).await {
                    Ok(_) => None,
                    Err(e) => {
                        self.local_failure(io, format!("marking ops synced: {e}"))
                            .await
                    }
                }
            }
            Output::ResetMap(map) => match self.reset_map(&map).await {
                Ok(()) => Some(Input::MapResetDone(map)),
                Err(e) => {
                    self.local_failure(io, format!("resetting map {map}: {e}"))
                        .await
                }
            },
            Output::ObserveTimestamp(ts) => {
                if let Err(e) = self.replica.observe_timestamp(&ts) {
                    self.emit(SyncEvent::ProtocolError(e.to_string()));
                }
                None
            }
            Output::SetTimer { timer, after_ms } => {
                io.timers
                    .insert(timer, self.runtime.now_ms().saturating_add(after_ms));
                None
            }
            Output::CancelTimer(timer) => {
                io.timers.remove(&timer);
                None
            }
            Output::State(state) => {
                self.status.set_state(state);
                None
            }
            Output::Fetched { map, key } => {
                for done in io.fetches.remove(&(map, key)).unwrap_or_default() {
                    // The reader may have given up waiting.
                    let _ = done.send(());
                }
                None
            }
            Output::Event(event) => {
                self.emit(event);
                None
            }
        }
    }

    /// Queues server records for merging: with the records already
    /// waiting if they are of the same map (else after those are stored),
    /// and starts a merge if fewer than [`MERGES_IN_FLIGHT`] are in
    /// progress.
    async fn queue_merge(&mut self, io: &mut Io, map: String, records: Records) -> Option<Input> {
        match &mut io.queued {
            Some((queued_map, queued)) if *queued_map == map => queued.extend(records),
            Some(_) => {
                if let Some(input) = self.settle_merges(io).await {
                    return Some(input);
                }
                io.queued = Some((map, records));
            }
            None => io.queued = Some((map, records)),
        }
        self.start_queued_merge(io);
        None
    }

    /// Starts merging the queued records, if any and if fewer than
    /// [`MERGES_IN_FLIGHT`] merges are in progress.
    fn start_queued_merge(&self, io: &mut Io) {
        if io.merging.len() >= MERGES_IN_FLIGHT {
            return;
        }
        let Some((map, records)) = io.queued.take() else {
            return;
        };
        let replica = self.replica.clone();
        io.merging.push_back(Box::pin(async move {
            let result = replica.apply_remote(&map, records).await;
            (map, result)
        }));
    }

    /// Waits until every merge in progress or queued is stored. On a
    /// failure the queued records are dropped (the connection closes, and
    /// the next pull brings them again) and the failure's input returned.
    async fn settle_merges(&mut self, io: &mut Io) -> Option<Input> {
        loop {
            self.start_queued_merge(io);
            let done = io.merging.next().await?;
            if let Some(input) = self.merged(io, done).await {
                return Some(input);
            }
        }
    }

    /// Reports the outcome of a merge: refused records as protocol errors,
    /// a failure as a local one (which closes the connection).
    async fn merged(
        &mut self,
        io: &mut Io,
        (map, result): (String, Result<Applied, ReplicaError>),
    ) -> Option<Input> {
        match result {
            Ok(applied) => {
                for (key, why) in applied.refused {
                    self.emit(SyncEvent::ProtocolError(format!(
                        "refused record {map}/{key}: {why}"
                    )));
                }
                None
            }
            Err(e) => {
                // What waits goes too (the connection closes; the next pull
                // brings it again). A merge already started ends as it
                // will: its changes must reach the cache and subscribers.
                io.queued = None;
                self.local_failure(io, format!("merging records of map {map}: {e}"))
                    .await
            }
        }
    }

    async fn send(&mut self, io: &mut Io, msg: &Message) -> Option<Input> {
        let conn = io.conn.as_mut()?;
        let bytes = match self.codec.encode(msg) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.emit(SyncEvent::LocalError(format!(
                    "could not encode a {} frame: {e}",
                    msg.type_name()
                )));
                return None;
            }
        };
        self.status.count_sent(bytes.len());
        match conn.send(bytes).await {
            Ok(()) => None,
            Err(why) => {
                io.conn = None;
                Some(Input::Closed(why))
            }
        }
    }

    /// A local storage failure: report it and drop the connection, so the
    /// whole exchange is retried after a backoff.
    async fn local_failure(&mut self, io: &mut Io, what: String) -> Option<Input> {
        self.emit(SyncEvent::LocalError(what.clone()));
        if let Some(conn) = io.conn.take() {
            conn.close("local storage failed".into()).await;
        }
        Some(Input::Closed(format!("local storage failed: {what}")))
    }

    /// Reads pending ops and turns them into wire ops (see
    /// [`crate::ops`]). A CLEAR with nothing left to send is marked synced
    /// at once; an op that cannot be sent is reported once
    /// ([`SyncEvent::LocalError`]) and stays in the log. Reads on until it
    /// has an op to send or the log ends, so the engine's cursor always
    /// moves.
    async fn load_pending(
        &mut self,
        mut after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<PendingOp>, bool), StorageError> {
        let replica = self.replica.clone();
        let store = replica.store();
        loop {
            let entries = store.pending_ops(after, limit).await?;
            let exhausted = entries.len() < limit;
            after = entries.last().map(|e| e.id).or(after);
            let mut ops = Vec::with_capacity(entries.len());
            let mut empty_clears = Vec::new();
            for entry in entries {
                if entry.op_type == OpType::Clear {
                    let mut expansion = ClearExpansion::new(&entry);
                    let mut from: Option<String> = None;
                    loop {
                        let page = store
                            .dirty_records(&entry.map_name, from.as_deref(), PAGE)
                            .await?;
                        for r in &page {
                            expansion.push(r);
                        }
                        if page.len() < PAGE {
                            break;
                        }
                        from = page.last().map(|r| r.key.clone());
                    }
                    let parts = expansion.finish();
                    if parts.is_empty() {
                        empty_clears.push(entry.id);
                    }
                    ops.extend(parts);
                    continue;
                }
                match pending_op(&entry) {
                    Ok(op) => ops.push(op),
                    Err(e) => {
                        if self.unsendable.insert(e.op_id()) {
                            self.status
                                .emit(SyncEvent::LocalError(format!("not sending an op: {e}")));
                        }
                    }
                }
            }
            if !empty_clears.is_empty() {
                store.mark_synced(&empty_clears).await?;
            }
            if !ops.is_empty() || exhausted {
                return Ok((ops, exhausted));
            }
        }
    }

    /// Drops the map's clean records, keeps dirty ones, and reads its leaf
    /// sums, which each page of dropped records left in the same
    /// transaction (so the next pull brings them back).
    async fn reset_map(&mut self, map: &str) -> Result<(), crate::replica::ReplicaError> {
        let mut pages = ScanCursor::new(map, PAGE);
        while let Some(page) = pages.next_page(self.replica.store()).await? {
            let clean: Vec<String> = page
                .into_iter()
                .filter(|r| !r.dirty)
                .map(|r| r.key)
                .collect();
            if !clean.is_empty() {
                self.replica.drop_clean(map, &clean).await?;
            }
        }
        self.load_tree(map).await;
        Ok(())
    }
}

/// The value of `future` if it is ready at its first poll.
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    futures_util::FutureExt::now_or_never(future)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
