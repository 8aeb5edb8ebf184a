//! The sync engine: a state machine with no I/O.
//!
//! The driver ([`SyncDriver`](crate::SyncDriver)) feeds it [`Input`]s — connected,
//! a frame arrived, the connection closed, a timer fired, a local write
//! happened, pending ops were loaded — and carries out the [`Output`]s it
//! returns: send a frame, load pending ops, apply records to storage, mark
//! ops synced, set a timer, report a state or an event. Time comes in as an
//! argument, randomness from a seed, so tests drive it step by step.
//!
//! ```
//! use topgun_sync::{ConnectionState, Input, Output, SyncConfig, SyncEngine};
//! let mut engine = SyncEngine::new(SyncConfig::default());
//! engine.open_map("todos");
//! let out = engine.handle(0, Input::Start);
//! assert!(out.contains(&Output::Connect));
//! assert!(out.contains(&Output::State(ConnectionState::Connecting)));
//! ```

mod handlers;
mod pull;
mod push;

pub use handlers::SERVER_NODE_ID;
pub use push::PendingOp;

use crate::backoff::Backoff;
use crate::state::ConnectionState;
use pull::PullPhase;
use push::Push;
use std::collections::{BTreeMap, BTreeSet};
use topgun_core::merkle::{MerkleSums, MerkleTree};
use topgun_core::wire::{Message, WireRecord};
use topgun_core::Timestamp;

/// Tunables of the engine. `Default` gives the documented values.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Largest `OP_BATCH` payload in bytes, counted with the size each
    /// [`PendingOp`] carries (an upper bound, so a frame is smaller).
    /// Default 1.5 MiB, under the 2 MiB frame limit of TopGun's servers.
    pub max_batch_bytes: usize,
    /// Batches sent and not yet acknowledged, at most. Default 16 (with
    /// the server's group commit, more in flight means fewer round trips
    /// per op; see docs/decisions.md, "Sync performance").
    pub max_batches_in_flight: usize,
    /// Ops read from the log per load. Default 5,000.
    pub ops_per_load: usize,
    /// First reconnect delay. Default 1 s.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay. Default 30 s.
    pub backoff_max_ms: u64,
    /// Keep-alive interval. Default 5 s.
    pub ping_interval_ms: u64,
    /// No `PONG` for this long means the connection is dead. Default 15 s.
    pub pong_timeout_ms: u64,
    /// Without a token: how long to wait for `AUTH_REQUIRED` before
    /// assuming the server needs no auth; with one: for `AUTH_ACK` before
    /// going on. Default 300 ms.
    pub auth_grace_ms: u64,
    /// How long a local write waits for others to share its batch.
    /// Default 2 ms.
    pub push_delay_ms: u64,
    /// A pull that gets no answer for this long is abandoned (TopGun's
    /// server ignores requests for paths it lacks). Default 30 s.
    pub pull_timeout_ms: u64,
    /// Merkle bucket requests of one map sent and not yet answered, at
    /// most; bounds what the server buffers for this client during a pull
    /// (a server drops a client whose outgoing queue overflows). Default 64.
    pub pull_requests_in_flight: usize,
    /// How long a fetch of a pruned key waits for its leaf before it is
    /// answered anyway (a server may leave a request unanswered, or split a
    /// leaf over frames). Default 3 s.
    pub fetch_timeout_ms: u64,
    /// Seed of the reconnect jitter.
    pub jitter_seed: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_batch_bytes: 3 << 19,
            max_batches_in_flight: 16,
            ops_per_load: 5_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            ping_interval_ms: 5_000,
            pong_timeout_ms: 15_000,
            auth_grace_ms: 300,
            push_delay_ms: 2,
            pull_timeout_ms: 30_000,
            pull_requests_in_flight: 64,
            fetch_timeout_ms: 3_000,
            jitter_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// Timers the engine asks the driver to run. Setting a timer that is
/// already set moves its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Time to try connecting again.
    Reconnect,
    /// Time to send a `PING` (and check the last `PONG`).
    Ping,
    /// The wait for an auth answer is over.
    AuthGrace,
    /// Local writes waited long enough to share a batch.
    PushDelay,
    /// A Merkle pull got no answer for too long.
    PullTimeout,
    /// Time to resend unacknowledged batches after a server error.
    Resend,
    /// The oldest fetch of a pruned key waited long enough.
    FetchTimeout,
}

/// What happened, as told to the engine.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// The application wants to sync: connect.
    Start,
    /// The transport connected.
    Connected,
    /// A frame arrived and decoded (see [`Input::frame`]).
    Frame(Box<Message>),
    /// A frame arrived that did not decode (garbage, truncated, …).
    BadFrame(String),
    /// The transport closed or failed to connect.
    Closed(String),
    /// A timer fired.
    Timer(TimerKind),
    /// A local write was stored; pending ops should go up soon.
    LocalChange,
    /// Answer to [`Output::LoadPending`]: the next pending ops in id order;
    /// `exhausted` when the log has no more after them.
    PendingLoaded {
        /// The ops.
        ops: Vec<PendingOp>,
        /// Whether the log ended.
        exhausted: bool,
    },
    /// Answer to [`Output::ResetMap`]: the map's synced data is dropped and
    /// its tree rebuilt; pull again.
    MapResetDone(String),
    /// The device lost its network: disconnect, do not retry until online.
    NetworkOffline,
    /// The device has a network again: reconnect now.
    NetworkOnline,
    /// Stop syncing: disconnect and stay offline.
    Stop,
    /// The application read `key` of `map` and the store no longer has it
    /// (pruned to stay under quota): bring its leaf from the server if the
    /// key is known to exist there. Always answered by
    /// [`Output::Fetched`].
    Fetch {
        /// The map.
        map: String,
        /// The key read.
        key: String,
    },
}

impl Input {
    /// [`Input::Frame`] of a message.
    pub fn frame(msg: Message) -> Self {
        Input::Frame(Box::new(msg))
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Open a connection; answer with [`Input::Connected`] or [`Input::Closed`].
    Connect,
    /// Close the connection (no [`Input::Closed`] needed afterwards).
    Disconnect(String),
    /// Send a frame.
    Send(Message),
    /// Read up to `limit` unsynced ops with id greater than `after`;
    /// answer with [`Input::PendingLoaded`].
    LoadPending {
        /// Cursor: the last id already loaded.
        after: Option<u64>,
        /// Most ops to read.
        limit: usize,
    },
    /// Merge records from the server by LWW (never dirty), update the
    /// HLC from their timestamps and emit remote change events (records
    /// refused are reported).
    ApplyRemote {
        /// The map.
        map: String,
        /// `(key, record)` pairs; tombstones have `value: nil`.
        records: Vec<(String, WireRecord)>,
    },
    /// These ops are acknowledged: mark them synced.
    MarkSynced(Vec<u64>),
    /// Drop the map's synced records with their leaf sums (keep dirty ones
    /// and pending ops), read the sums, then send [`Input::MapResetDone`].
    ResetMap(String),
    /// Fold a server timestamp into the HLC.
    ObserveTimestamp(Timestamp),
    /// Run `timer` in `after_ms` milliseconds.
    SetTimer {
        /// Which timer.
        timer: TimerKind,
        /// Delay.
        after_ms: u64,
    },
    /// Cancel a timer.
    CancelTimer(TimerKind),
    /// The connectivity state changed.
    State(ConnectionState),
    /// Something the application should hear about.
    Event(SyncEvent),
    /// An [`Input::Fetch`] is over: its leaf was merged (this comes after
    /// that leaf's [`Output::ApplyRemote`]), there was nothing to fetch,
    /// or the connection ended first. Read the store again.
    Fetched {
        /// The map.
        map: String,
        /// The key.
        key: String,
    },
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The server refused the token (or required one and none was given).
    /// The client retries only at the longest backoff.
    AuthFailed(String),
    /// The server rejected one op; it will not be sent again.
    OpRejected {
        /// The op-log id.
        op_id: u64,
        /// The server's reason.
        reason: String,
        /// The server's code (403 forbidden, …).
        code: Option<u32>,
    },
    /// The server sent an `ERROR` frame.
    ServerError {
        /// HTTP-like code (400, 413, 429, 500, …).
        code: u32,
        /// Its message.
        message: String,
    },
    /// The server sent something this client cannot use (a frame that does
    /// not decode, an answer to a question never asked, …).
    ProtocolError(String),
    /// A map's Merkle pull finished on this connection.
    PullComplete(String),
    /// Estimated server clock minus local clock, from `PONG`, in ms.
    ClockSkew(i64),
    /// The connection closed.
    Disconnected(String),
    /// Local storage failed during sync; the exchange is retried after a
    /// backoff.
    LocalError(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Waiting for the server's verdict or the grace period.
    Pending,
    /// The connection may sync.
    Done,
}

/// The sync engine for one client. See the module docs.
#[derive(Debug)]
pub struct SyncEngine {
    config: SyncConfig,
    state: ConnectionState,
    token: Option<String>,
    backoff: Backoff,
    trees: BTreeMap<String, MerkleSums>,
    pulls: BTreeMap<String, PullPhase>,
    push: Push,
    auth: Option<Auth>,
    stopped: bool,
    network_down: bool,
    last_pong_ms: u64,
    skew_ms: i64,
    push_timer_set: bool,
    /// A resend after a server error is scheduled: the other in-flight
    /// batches' errors (one per batch) wait for it instead of growing the
    /// backoff each.
    resend_set: bool,
    /// Retryable `ERROR`s received since the last resend: each answers one
    /// batch in flight (the server answers every batch, in order, with an
    /// ack or an error).
    batch_errors: usize,
    /// When the scheduled resend first found batches still unanswered.
    resend_waiting_since: Option<u64>,
    client_id: String,
    /// Fetches of pruned keys waiting for their leaf, by map and leaf path.
    fetches: BTreeMap<(String, String), Fetch>,
}

/// The keys waiting for one leaf, each with the time it stops waiting.
#[derive(Debug)]
struct Fetch {
    keys: Vec<(String, u64)>,
    /// A frame of the leaf arrived since the last request: a key that
    /// joins now needs a request of its own (it may not be in the frames
    /// still to come).
    frame_seen: bool,
}

impl SyncEngine {
    /// A stopped engine in state `Offline`; feed it [`Input::Start`].
    pub fn new(config: SyncConfig) -> Self {
        let backoff = Backoff::new(
            config.backoff_initial_ms,
            config.backoff_max_ms,
            config.jitter_seed,
        );
        Self {
            config,
            state: ConnectionState::Offline,
            token: None,
            backoff,
            trees: BTreeMap::new(),
            pulls: BTreeMap::new(),
            push: Push::default(),
            auth: None,
            stopped: true,
            network_down: false,
            last_pong_ms: 0,
            skew_ms: 0,
            push_timer_set: false,
            resend_set: false,
            batch_errors: 0,
            resend_waiting_since: None,
            client_id: String::new(),
            fetches: BTreeMap::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Sets the token sent in `AUTH` on the next (re)connection.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Sets the id (the client's node id) that makes this client's map
    /// subscriptions distinct from other clients' (see [`subscription_id`]).
    pub fn set_client_id(&mut self, id: &str) {
        self.client_id = id.to_owned();
    }

    /// The last clock-skew estimate (server minus local, ms).
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// Adds a map to sync. Returns the frames to send now if connected
    /// (its pull and subscription); nothing if offline.
    pub fn open_map(&mut self, map: &str) -> Vec<Output> {
        if self.trees.contains_key(map) {
            return Vec::new();
        }
        self.trees.insert(map.to_owned(), MerkleSums::default());
        self.pulls.insert(map.to_owned(), PullPhase::Idle);
        let mut out = Vec::new();
        if self.auth == Some(Auth::Done) {
            self.start_pull(map, &mut out);
            self.update_online(&mut out);
        }
        out
    }

    /// Names of the maps being synced.
    pub fn maps(&self) -> impl Iterator<Item = &str> {
        self.trees.keys().map(String::as_str)
    }

    /// The Merkle hashes of a synced map, as last set.
    pub fn tree(&self, map: &str) -> Option<&MerkleSums> {
        self.trees.get(map)
    }

    /// Sets a map's Merkle hashes, read from the store's leaf sums. The
    /// driver reads them before each pull can start (on connecting, on
    /// opening the map, after resetting it); a pull compares against that
    /// snapshot. Writes after it only make the walk ask for a leaf more
    /// (LWW merges of what the store already has change nothing), and
    /// what the server has that the snapshot lacks still differs.
    pub fn set_tree(&mut self, map: &str, tree: MerkleSums) {
        if let Some(slot) = self.trees.get_mut(map) {
            *slot = tree;
        }
    }

    /// Feeds one input at wall time `now_ms`; returns what to do, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                self.stopped = false;
                if matches!(
                    self.state,
                    ConnectionState::Offline | ConnectionState::Initial
                ) {
                    self.connect(&mut out);
                }
            }
            Input::Stop => {
                self.stopped = true;
                self.drop_connection("stopped by the application", false, &mut out);
            }
            Input::NetworkOffline => {
                self.network_down = true;
                self.drop_connection("the network is offline", false, &mut out);
            }
            Input::NetworkOnline => {
                self.network_down = false;
                if !self.stopped && self.state == ConnectionState::Offline {
                    out.push(Output::CancelTimer(TimerKind::Reconnect));
                    self.connect(&mut out);
                }
            }
            Input::Connected => self.on_connected(now_ms, &mut out),
            // Offline, no connection is open or being opened: this close is
            // of one already lost (say a second merge of it failed), and
            // must neither push the reconnect further back nor reconnect
            // after a drop that chose not to.
            Input::Closed(_) if self.state == ConnectionState::Offline => {}
            Input::Closed(reason) => {
                out.push(Output::Event(SyncEvent::Disconnected(reason.clone())));
                self.connection_lost(&reason, &mut out);
            }
            Input::BadFrame(why) => {
                out.push(Output::Event(SyncEvent::ProtocolError(format!(
                    "undecodable frame: {why}"
                ))));
                let reason = format!("the server sent an undecodable frame ({why})");
                out.push(Output::Event(SyncEvent::Disconnected(reason.clone())));
                out.push(Output::Disconnect(reason.clone()));
                self.connection_lost(&reason, &mut out);
            }
            Input::Frame(msg) => self.on_frame(now_ms, *msg, &mut out),
            Input::Timer(t) => self.on_timer(now_ms, t, &mut out),
            Input::LocalChange => {
                if self.auth == Some(Auth::Done) {
                    self.push.exhausted = false;
                    self.push.changed_while_loading = self.push.loading;
                    if !self.push_timer_set {
                        self.push_timer_set = true;
                        out.push(Output::SetTimer {
                            timer: TimerKind::PushDelay,
                            after_ms: self.config.push_delay_ms,
                        });
                    }
                    self.set_state(ConnectionState::Syncing, &mut out);
                }
            }
            Input::PendingLoaded { ops, exhausted } => {
                self.push.loading = false;
                if self.auth == Some(Auth::Done) {
                    if let Some(last) = ops.last() {
                        self.push.cursor = Some(last.id);
                    }
                    self.push.exhausted = exhausted && !self.push.changed_while_loading;
                    self.push.changed_while_loading = false;
                    self.push.queued.extend(ops);
                    self.pump(&mut out);
                }
            }
            Input::Fetch { map, key } => self.fetch(now_ms, map, key, &mut out),
            Input::MapResetDone(map) => {
                if self.auth == Some(Auth::Done) && self.trees.contains_key(&map) {
                    self.start_pull(&map, &mut out);
                }
            }
        }
        out
    }

    /// Asks for the leaf of a key the store pruned under its quota (the
    /// caller knows it did: the store's leaf sums keep pruned records, so a
    /// pull does not bring them back unasked). One request per leaf,
    /// however many keys of it are waiting; answered at once for a map not
    /// synced or while not connected.
    fn fetch(&mut self, now_ms: u64, map: String, key: String, out: &mut Vec<Output>) {
        let path = MerkleTree::path_of(&key);
        if !self.trees.contains_key(&map) || self.auth != Some(Auth::Done) {
            out.push(Output::Fetched { map, key });
            return;
        }
        let deadline_ms = now_ms.saturating_add(self.config.fetch_timeout_ms);
        if self.fetches.is_empty() {
            out.push(Output::SetTimer {
                timer: TimerKind::FetchTimeout,
                after_ms: self.config.fetch_timeout_ms,
            });
        }
        let fetch = self
            .fetches
            .entry((map.clone(), path.clone()))
            .or_insert(Fetch {
                keys: Vec::new(),
                frame_seen: true,
            });
        fetch.keys.push((key, deadline_ms));
        if fetch.frame_seen {
            fetch.frame_seen = false;
            out.push(Output::Send(Message::MerkleReqBucket(
                topgun_core::wire::MerkleReqBucket {
                    map_name: map,
                    path,
                },
            )));
        }
    }

    /// Records of the leaf at `path` of `map` arrived (and were merged):
    /// the fetches of those keys are over. Others of that leaf keep
    /// waiting for a later frame of it (a large leaf comes in parts) or
    /// their deadline.
    fn fetched(
        &mut self,
        map: &str,
        path: &str,
        arrived: &BTreeSet<String>,
        out: &mut Vec<Output>,
    ) {
        let waiting = (map.to_owned(), path.to_owned());
        let Some(fetch) = self.fetches.get_mut(&waiting) else {
            return;
        };
        fetch.frame_seen = true;
        fetch.keys.retain(|(key, _)| {
            if arrived.contains(key) {
                out.push(Output::Fetched {
                    map: map.to_owned(),
                    key: key.clone(),
                });
                false
            } else {
                true
            }
        });
        if fetch.keys.is_empty() {
            self.fetches.remove(&waiting);
        }
    }

    /// Answers the fetches whose deadline passed (`all`: every fetch) and
    /// sets the timer for the next deadline.
    fn expire_fetches(&mut self, now_ms: u64, all: bool, out: &mut Vec<Output>) {
        for ((map, _), fetch) in &mut self.fetches {
            fetch.keys.retain(|(key, deadline_ms)| {
                if all || *deadline_ms <= now_ms {
                    out.push(Output::Fetched {
                        map: map.clone(),
                        key: key.clone(),
                    });
                    false
                } else {
                    true
                }
            });
        }
        self.fetches.retain(|_, fetch| !fetch.keys.is_empty());
        let next = self
            .fetches
            .values()
            .flat_map(|f| f.keys.iter().map(|(_, deadline_ms)| *deadline_ms))
            .min();
        if let Some(next) = next {
            out.push(Output::SetTimer {
                timer: TimerKind::FetchTimeout,
                after_ms: next.saturating_sub(now_ms),
            });
        }
    }

    fn set_state(&mut self, state: ConnectionState, out: &mut Vec<Output>) {
        if self.state != state {
            self.state = state;
            out.push(Output::State(state));
        }
    }

    fn connect(&mut self, out: &mut Vec<Output>) {
        if self.stopped || self.network_down {
            return;
        }
        self.set_state(ConnectionState::Connecting, out);
        out.push(Output::Connect);
    }

    /// Tears the connection state down and schedules a reconnect (unless
    /// stopped or offline).
    fn connection_lost(&mut self, _reason: &str, out: &mut Vec<Output>) {
        self.reset_connection(out);
        self.set_state(ConnectionState::Offline, out);
        if !self.stopped && !self.network_down {
            let delay = self.backoff.next_delay();
            out.push(Output::SetTimer {
                timer: TimerKind::Reconnect,
                after_ms: delay,
            });
        }
    }

    fn drop_connection(&mut self, reason: &str, reconnect: bool, out: &mut Vec<Output>) {
        if self.state != ConnectionState::Offline {
            out.push(Output::Disconnect(reason.to_owned()));
        }
        out.push(Output::CancelTimer(TimerKind::Reconnect));
        if reconnect {
            self.connection_lost(reason, out);
        } else {
            self.reset_connection(out);
            self.set_state(ConnectionState::Offline, out);
        }
    }

    /// Forgets everything tied to the connection: unacknowledged batches
    /// are resent after the next connect (the server treats a resent op
    /// as a no-op).
    fn reset_connection(&mut self, out: &mut Vec<Output>) {
        self.auth = None;
        self.expire_fetches(0, true, out);
        self.push = Push::default();
        self.push_timer_set = false;
        self.resend_set = false;
        self.batch_errors = 0;
        self.resend_waiting_since = None;
        for phase in self.pulls.values_mut() {
            *phase = PullPhase::Idle;
        }
        for t in [
            TimerKind::Ping,
            TimerKind::AuthGrace,
            TimerKind::PushDelay,
            TimerKind::PullTimeout,
            TimerKind::Resend,
            TimerKind::FetchTimeout,
        ] {
            out.push(Output::CancelTimer(t));
        }
    }

    fn on_connected(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.stopped || self.network_down {
            out.push(Output::Disconnect("not syncing".into()));
            return;
        }
        self.set_state(ConnectionState::Syncing, out);
        self.auth = Some(Auth::Pending);
        self.last_pong_ms = now_ms;
        if let Some(token) = &self.token {
            out.push(Output::Send(Message::Auth(topgun_core::wire::Auth {
                token: token.clone(),
                protocol_version: None,
                device_token: None,
            })));
        } else {
            // Without a token, say hello as TopGun's own client does: a server
            // without auth answers at once (`DEVICE_ACK`, or any frame), so the
            // grace period is only the fallback for servers that stay silent.
            out.push(Output::Send(Message::DeviceHello(
                topgun_core::wire::DeviceHello { device_token: None },
            )));
        }
        out.push(Output::SetTimer {
            timer: TimerKind::AuthGrace,
            after_ms: self.config.auth_grace_ms,
        });
        out.push(Output::SetTimer {
            timer: TimerKind::Ping,
            after_ms: self.config.ping_interval_ms,
        });
    }

    /// Auth is settled: push, pull, subscribe.
    fn authenticated(&mut self, out: &mut Vec<Output>) {
        if self.auth == Some(Auth::Done) {
            return;
        }
        self.auth = Some(Auth::Done);
        self.backoff.reset();
        out.push(Output::CancelTimer(TimerKind::AuthGrace));
        self.push = Push::default();
        self.pump(out);
        let maps: Vec<String> = self.trees.keys().cloned().collect();
        for map in &maps {
            self.start_pull(map, out);
        }
        self.update_online(out);
    }

    /// Keeps the push pipeline full: sends queued batches while the window
    /// allows, and loads more from the log when the queue runs low.
    fn pump(&mut self, out: &mut Vec<Output>) {
        while self.push.in_flight.len() < self.config.max_batches_in_flight {
            let Some((frame, batch)) = self.push.next_batch(self.config.max_batch_bytes) else {
                break;
            };
            out.push(Output::Send(frame));
            self.push.in_flight.push_back(batch);
        }
        if !self.push.loading && !self.push.exhausted && self.push.queued.is_empty() {
            self.push.loading = true;
            out.push(Output::LoadPending {
                after: self.push.cursor,
                limit: self.config.ops_per_load,
            });
        }
        self.update_online(out);
    }

    fn start_pull(&mut self, map: &str, out: &mut Vec<Output>) {
        self.pulls.insert(map.to_owned(), PullPhase::AwaitRoot);
        // Subscribe first, then read the root: a change committed between
        // the two is then either in the pull or in an event, never in neither.
        out.push(Output::Send(Message::QuerySub(
            topgun_core::wire::QuerySub {
                query_id: subscription_id(map, &self.client_id),
                map_name: map.to_owned(),
                // The subscription is only for realtime events: the pull
                // brings the data. One result (rather than none: `limit: 0`
                // reads as "no limit" to TopGun's own server) keeps the
                // QUERY_RESP from resending up to a page of the map on
                // every reconnect.
                query: topgun_core::wire::Query {
                    limit: Some(1),
                    ..topgun_core::wire::Query::default()
                },
                fields: None,
            },
        )));
        out.push(Output::Send(Message::SyncInit(
            topgun_core::wire::SyncInit {
                map_name: map.to_owned(),
                root_hash: None,
                bucket_hashes: None,
                last_sync_timestamp: None,
            },
        )));
        out.push(Output::SetTimer {
            timer: TimerKind::PullTimeout,
            after_ms: self.config.pull_timeout_ms,
        });
    }

    /// `Online` once authenticated, every sent op is acknowledged, the log
    /// has nothing more, and every map's pull is complete.
    fn update_online(&mut self, out: &mut Vec<Output>) {
        if self.auth != Some(Auth::Done) {
            return;
        }
        let pulled = self.pulls.values().all(PullPhase::is_done);
        if pulled {
            out.push(Output::CancelTimer(TimerKind::PullTimeout));
        }
        let next = if pulled && self.push.is_idle() {
            ConnectionState::Online
        } else {
            ConnectionState::Syncing
        };
        self.set_state(next, out);
    }
}

/// The `queryId` of the subscription that carries a map's realtime events
/// to client `client`. It must differ between clients: TopGun's server keys
/// subscriptions by `queryId` alone, server-wide, so a second client using
/// the same id replaces the first one's subscription (and the first stops
/// getting `SERVER_EVENT`s).
pub fn subscription_id(map: &str, client: &str) -> String {
    format!("map:{map}:{client}")
}

#[cfg(test)]
mod tests;
