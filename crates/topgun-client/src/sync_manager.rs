//! The sync manager: drives the sans-I/O [`SyncEngine`] with a real
//! WebSocket, tokio timers and the client's store.
//!
//! One task per client. It owns the engine and the connection; local
//! writes reach it over a channel (through [`SyncSignal`]); every output of
//! the engine is carried out here, in order.

use crate::client::{ClientInner, SyncSignal};
use crate::remote::wire_value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use topgun_core::wire::{ClientOp, Codec, OpId, OpType as WireOpType, WireRecord};
use topgun_core::Timestamp;
use topgun_storage::{OpLogEntry, OpType};
use topgun_sync::transport::{Incoming, TrafficStats, WsConnection};
use topgun_sync::{Input, Output, PendingOp, SyncConfig, SyncEngine, SyncEvent, TimerKind};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest part of a CLEAR's expansion, in approximate bytes (about 4,000
/// REMOVEs): well under a frame and under a server's per-frame op budget.
const CLEAR_PART_BYTES: usize = 256 * 1024;
/// Records read per page when building a map's Merkle tree.
const PAGE: usize = 1_000;
/// Frames handled together when several have already arrived (so that
/// their merges share one storage transaction, see [`coalesce`]).
const DRAIN_FRAMES: usize = 64;

#[derive(Debug)]
pub(crate) enum Command {
    LocalChange {
        map: String,
        key: String,
        timestamp: Timestamp,
    },
    OpenMap(String),
    Stop,
}

/// The [`SyncSignal`] the client calls: forwards to the manager's task.
#[derive(Debug)]
pub(crate) struct ChannelSignal(pub(crate) mpsc::UnboundedSender<Command>);

impl SyncSignal for ChannelSignal {
    fn local_change(&self, map: &str, key: &str, timestamp: &Timestamp) {
        // A closed channel means sync stopped; the write is in the op log.
        let _ = self.0.send(Command::LocalChange {
            map: map.to_owned(),
            key: key.to_owned(),
            timestamp: timestamp.clone(),
        });
    }

    fn map_opened(&self, map: &str) {
        let _ = self.0.send(Command::OpenMap(map.to_owned()));
    }

    fn stop(&self) {
        let _ = self.0.send(Command::Stop);
    }
}

/// Settings of a sync manager.
#[derive(Debug, Clone)]
pub(crate) struct SyncSettings {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) config: SyncConfig,
    pub(crate) maps: Vec<String>,
}

pub(crate) struct SyncManager {
    client: Arc<ClientInner>,
    engine: SyncEngine,
    url: String,
    conn: Option<WsConnection>,
    timers: BTreeMap<TimerKind, Instant>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: broadcast::Sender<SyncEvent>,
    codec: Codec,
    epoch: Instant,
    epoch_millis: u64,
    traffic: Arc<TrafficStats>,
}

impl SyncManager {
    /// Starts the manager's task on the current tokio runtime.
    pub(crate) fn spawn(
        client: Arc<ClientInner>,
        settings: SyncSettings,
        events: broadcast::Sender<SyncEvent>,
        traffic: Arc<TrafficStats>,
    ) -> ChannelSignal {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut config = settings.config;
        // Each client jitters its reconnects differently, so many clients
        // that lost one server do not come back in lockstep.
        config.jitter_seed ^= u64::from(topgun_core::merkle::fnv1a(client.hlc.node_id())) << 17;
        let mut engine = SyncEngine::new(config);
        engine.set_token(settings.token);
        engine.set_client_id(client.hlc.node_id());
        let epoch_millis = client.now_millis();
        let manager = SyncManager {
            client,
            engine,
            url: settings.url,
            conn: None,
            timers: BTreeMap::new(),
            commands: rx,
            events,
            codec: Codec::default(),
            epoch: Instant::now(),
            epoch_millis,
            traffic,
        };
        tokio::spawn(manager.run(settings.maps));
        ChannelSignal(tx)
    }

    fn now_ms(&self) -> u64 {
        // Monotonic time for timers and PING/PONG, anchored to the wall
        // clock at start so skew estimates compare with the server's.
        self.epoch_millis + u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, extra_maps: Vec<String>) {
        let mut maps = self.client.store.map_names().await.unwrap_or_default();
        maps.extend(extra_maps);
        maps.sort();
        maps.dedup();
        for map in maps {
            self.open_map(&map).await;
        }
        self.feed(Input::Start).await;
        loop {
            let deadline = self.timers.values().min().copied();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Stop) => {
                        self.feed(Input::Stop).await;
                        break;
                    }
                    Some(cmd) => {
                        let mut changed = self.command(cmd).await;
                        // Drain what queued meanwhile: one LocalChange for many writes.
                        while let Ok(cmd) = self.commands.try_recv() {
                            if matches!(cmd, Command::Stop) {
                                self.feed(Input::Stop).await;
                                return;
                            }
                            changed |= self.command(cmd).await;
                        }
                        if changed {
                            self.feed(Input::LocalChange).await;
                        }
                    }
                },
                incoming = recv(&mut self.conn) => {
                    // Frames that already arrived too (a pull's leaves pile
                    // up while one is merged) are handled in one go.
                    let mut outputs = self.receive(incoming);
                    for _ in 1..DRAIN_FRAMES {
                        let Some(conn) = self.conn.as_mut() else { break };
                        let Some(incoming) = now_or_never(conn.recv()) else { break };
                        outputs.extend(self.receive(incoming));
                    }
                    self.execute(coalesce(outputs)).await;
                },
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    let due: Vec<TimerKind> = self.timers.iter().filter(|(_, at)| **at <= now).map(|(k, _)| *k).collect();
                    for timer in due {
                        self.timers.remove(&timer);
                        self.feed(Input::Timer(timer)).await;
                    }
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.close("client stopped").await;
        }
    }

    /// Handles a command; returns whether it was a local change.
    async fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::LocalChange {
                map,
                key,
                timestamp,
            } => {
                if self.engine.tree(&map).is_none() {
                    self.open_map(&map).await;
                } else {
                    // The tree follows the store, not the message: a remote
                    // merge may have superseded this write since it was queued.
                    match self.client.store.get(&map, &key).await {
                        Ok(Some(current)) => {
                            self.engine.record_changed(&map, &key, &current.timestamp)
                        }
                        Ok(None) => self.engine.record_removed(&map, &key),
                        Err(_) => self.engine.record_changed(&map, &key, &timestamp),
                    }
                }
                true
            }
            Command::OpenMap(map) => {
                self.open_map(&map).await;
                false
            }
            Command::Stop => false,
        }
    }

    /// Starts syncing a map: its tree is built from the store first.
    async fn open_map(&mut self, map: &str) {
        if self.engine.tree(map).is_some() {
            return;
        }
        let outputs = self.engine.open_map(map);
        self.load_tree(map).await;
        self.execute(outputs).await;
    }

    async fn load_tree(&mut self, map: &str) {
        self.engine.reset_tree(map);
        let mut after: Option<String> = None;
        loop {
            let page = match self.client.store.scan(map, after.as_deref(), PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    self.emit(SyncEvent::LocalError(format!(
                        "reading map {map} to build its Merkle tree: {e}"
                    )));
                    return;
                }
            };
            for r in &page {
                self.engine.record_changed(map, &r.key, &r.timestamp);
            }
            if page.len() < PAGE {
                return;
            }
            after = page.last().map(|r| r.key.clone());
        }
    }

    fn emit(&self, event: SyncEvent) {
        tracing::debug!(?event, "sync event");
        let _ = self.events.send(event);
    }

    /// Feeds what the connection brought to the engine; returns the
    /// outputs, not yet carried out.
    fn receive(
        &mut self,
        incoming: Result<Incoming, topgun_sync::transport::TransportError>,
    ) -> Vec<Output> {
        let input = match incoming {
            Ok(Incoming::Frame(msg)) => Input::Frame(msg),
            Ok(Incoming::Bad(why)) => Input::BadFrame(why),
            Ok(Incoming::Closed(reason)) => {
                self.conn = None;
                Input::Closed(reason)
            }
            Err(e) => {
                self.conn = None;
                Input::Closed(e.to_string())
            }
        };
        let now = self.now_ms();
        self.engine.handle(now, input)
    }

    async fn feed(&mut self, input: Input) {
        let now = self.now_ms();
        let outputs = self.engine.handle(now, input);
        self.execute(outputs).await;
    }

    /// Carries out outputs in order; outputs that answer with an input feed
    /// it back, and its outputs run next.
    async fn execute(&mut self, outputs: Vec<Output>) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            let follow_up = self.execute_one(output).await;
            if let Some(input) = follow_up {
                let now = self.now_ms();
                queue.extend(self.engine.handle(now, input));
            }
        }
    }

    async fn execute_one(&mut self, output: Output) -> Option<Input> {
        match output {
            Output::Connect => {
                match WsConnection::connect(
                    &self.url,
                    CONNECT_TIMEOUT,
                    self.codec,
                    self.traffic.clone(),
                )
                .await
                {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        Some(Input::Connected)
                    }
                    Err(e) => Some(Input::Closed(e.to_string())),
                }
            }
            Output::Disconnect(reason) => {
                if let Some(conn) = self.conn.take() {
                    conn.close(&reason).await;
                }
                None
            }
            Output::Send(msg) => {
                let conn = self.conn.as_mut()?;
                match conn.send(&msg).await {
                    Ok(()) => None,
                    Err(topgun_sync::transport::TransportError::Encode(e)) => {
                        self.emit(SyncEvent::LocalError(format!(
                            "could not encode a {} frame: {e}",
                            msg.type_name()
                        )));
                        None
                    }
                    Err(e) => {
                        self.conn = None;
                        Some(Input::Closed(e.to_string()))
                    }
                }
            }
            Output::LoadPending { after, limit } => match self.load_pending(after, limit).await {
                Ok((ops, exhausted)) => Some(Input::PendingLoaded { ops, exhausted }),
                Err(e) => {
                    self.local_failure(format!("reading pending ops: {e}"))
                        .await
                }
            },
            Output::ApplyRemote { map, records } => {
                match self.client.apply_remote(&map, records).await {
                    Ok(applied) => {
                        for (key, ts) in &applied.changed {
                            self.engine.record_changed(&map, key, ts);
                        }
                        for (key, why) in applied.refused {
                            self.emit(SyncEvent::ProtocolError(format!(
                                "refused record {map}/{key}: {why}"
                            )));
                        }
                        None
                    }
                    Err(e) => {
                        self.local_failure(format!("merging records of map {map}: {e}"))
                            .await
                    }
                }
            }
            Output::MarkSynced(ids) => {
                // Relaxed: a crash that undoes it only makes the ops pending
                // again, and the server treats resent ops as no-ops.
                match self.client.store.acknowledge(&ids).await {
                    Ok(_) => None,
                    Err(e) => self.local_failure(format!("marking ops synced: {e}")).await,
                }
            }
            Output::ResetMap(map) => match self.reset_map(&map).await {
                Ok(()) => Some(Input::MapResetDone(map)),
                Err(e) => {
                    self.local_failure(format!("resetting map {map}: {e}"))
                        .await
                }
            },
            Output::ObserveTimestamp(ts) => {
                if let Err(e) = self.client.hlc.update(&ts) {
                    self.emit(SyncEvent::ProtocolError(e.to_string()));
                }
                None
            }
            Output::SetTimer { timer, after_ms } => {
                self.timers
                    .insert(timer, Instant::now() + Duration::from_millis(after_ms));
                None
            }
            Output::CancelTimer(timer) => {
                self.timers.remove(&timer);
                None
            }
            Output::State(state) => {
                self.client.set_connection_state(state);
                None
            }
            Output::Event(event) => {
                if let SyncEvent::ClockSkew(ms) = event {
                    self.client
                        .skew_ms
                        .store(ms, std::sync::atomic::Ordering::Relaxed);
                }
                self.emit(event);
                None
            }
            // Outputs added to the engine later are ignored until handled here.
            _ => None,
        }
    }

    /// A local storage failure: report it and drop the connection, so the
    /// whole exchange is retried after a backoff.
    async fn local_failure(&mut self, what: String) -> Option<Input> {
        self.emit(SyncEvent::LocalError(what.clone()));
        if let Some(conn) = self.conn.take() {
            conn.close("local storage failed").await;
        }
        Some(Input::Closed(format!("local storage failed: {what}")))
    }

    /// Reads pending ops and turns them into wire ops. A CLEAR becomes one
    /// REMOVE per key it tombstoned that still carries its timestamp (the
    /// protocol has no CLEAR); a CLEAR with nothing left to send is marked
    /// synced at once.
    async fn load_pending(
        &mut self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<PendingOp>, bool), crate::ClientError> {
        let store = self.client.store.clone();
        let entries = store.pending_ops(after, limit).await?;
        let exhausted = entries.len() < limit;
        let mut ops = Vec::with_capacity(entries.len());
        let mut empty_clears = Vec::new();
        for entry in entries {
            if entry.op_type == OpType::Clear {
                let parts = self.expand_clear(&entry).await?;
                if parts.is_empty() {
                    empty_clears.push(entry.id);
                }
                ops.extend(parts);
            } else {
                ops.push(to_pending(&entry));
            }
        }
        if !empty_clears.is_empty() {
            store.mark_synced(&empty_clears).await?;
        }
        Ok((ops, exhausted))
    }

    /// The REMOVEs a CLEAR stands for, in parts of at most
    /// [`CLEAR_PART_BYTES`] so that each fits a frame (and a server's
    /// per-frame rate budget); all but the last part are `partial`.
    async fn expand_clear(&self, entry: &OpLogEntry) -> Result<Vec<PendingOp>, crate::ClientError> {
        let mut parts: Vec<PendingOp> = Vec::new();
        let mut part = PendingOp {
            id: entry.id,
            ops: Vec::new(),
            size: 0,
            partial: true,
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .client
                .store
                .dirty_records(&entry.map_name, after.as_deref(), PAGE)
                .await?;
            for r in &page {
                if r.timestamp == entry.timestamp && r.value.is_none() {
                    if part.size >= CLEAR_PART_BYTES {
                        let next = PendingOp {
                            id: entry.id,
                            ops: Vec::new(),
                            size: 0,
                            partial: true,
                        };
                        parts.push(std::mem::replace(&mut part, next));
                    }
                    part.size += r.key.len() + 64;
                    part.ops.push(client_op(
                        entry.id,
                        &entry.map_name,
                        &r.key,
                        WireOpType::Remove,
                        WireRecord::tombstone(r.timestamp.clone()),
                    ));
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(|r| r.key.clone());
        }
        if !part.ops.is_empty() {
            part.partial = false;
            parts.push(part);
        }
        Ok(parts)
    }

    /// Drops the map's clean records, keeps dirty ones, rebuilds its tree.
    async fn reset_map(&mut self, map: &str) -> Result<(), crate::ClientError> {
        let store = self.client.store.clone();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(map, after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.key.clone());
            let clean: Vec<String> = page
                .into_iter()
                .filter(|r| !r.dirty)
                .map(|r| r.key)
                .collect();
            if !clean.is_empty() {
                store.prune_clean(map, &clean).await?;
            }
            if !full {
                break;
            }
        }
        self.client.ws().invalidate_map(map);
        self.load_tree(map).await;
        Ok(())
    }
}

fn client_op(id: u64, map: &str, key: &str, op_type: WireOpType, record: WireRecord) -> ClientOp {
    ClientOp {
        // Strings, as TopGun's own client sends them.
        id: Some(OpId::Text(id.to_string())),
        map_name: map.to_owned(),
        key: key.to_owned(),
        op_type: Some(op_type),
        record: Some(record),
        write_concern: None,
        timeout: None,
    }
}

fn to_pending(entry: &OpLogEntry) -> PendingOp {
    let value = entry
        .value
        .as_deref()
        .map(|b| wire_value(b).unwrap_or(rmpv::Value::Nil));
    let size =
        entry.key.len() + entry.map_name.len() + entry.value.as_ref().map_or(0, Vec::len) + 64;
    let (op_type, record) = match value {
        Some(v) => (
            WireOpType::Put,
            WireRecord {
                value: Some(v),
                timestamp: entry.timestamp.clone(),
                ttl_ms: entry.ttl_ms,
            },
        ),
        None => (
            WireOpType::Remove,
            WireRecord::tombstone(entry.timestamp.clone()),
        ),
    };
    PendingOp {
        id: entry.id,
        ops: vec![client_op(
            entry.id,
            &entry.map_name,
            &entry.key,
            op_type,
            record,
        )],
        size,
        partial: false,
    }
}

/// Merges each run of [`Output::ApplyRemote`]s of one map, separated only
/// by frames to send and timer changes, into one apply placed where the
/// run ends: the requests go out first, and the merge costs one storage
/// transaction instead of one per frame. Any other output ends a run, so
/// everything that must follow a merge (a completed pull, a state, an
/// ack's bookkeeping) still does. Reordering a merge after sends is sound:
/// LWW merges commute, and nothing sent depends on them.
fn coalesce(outputs: Vec<Output>) -> Vec<Output> {
    let mut out = Vec::with_capacity(outputs.len());
    let mut run: Option<(String, Vec<(String, topgun_core::wire::WireRecord)>)> = None;
    for output in outputs {
        match output {
            Output::ApplyRemote { map, records } => match &mut run {
                Some((run_map, run_records)) if *run_map == map => run_records.extend(records),
                _ => {
                    if let Some((map, records)) = run.take() {
                        out.push(Output::ApplyRemote { map, records });
                    }
                    run = Some((map, records));
                }
            },
            output @ (Output::Send(_) | Output::SetTimer { .. } | Output::CancelTimer(_)) => {
                out.push(output);
            }
            output => {
                if let Some((map, records)) = run.take() {
                    out.push(Output::ApplyRemote { map, records });
                }
                out.push(output);
            }
        }
    }
    if let Some((map, records)) = run {
        out.push(Output::ApplyRemote { map, records });
    }
    out
}

/// The value of `future` if it is ready at its first poll.
fn now_or_never<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

async fn recv(
    conn: &mut Option<WsConnection>,
) -> Result<Incoming, topgun_sync::transport::TransportError> {
    match conn {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
