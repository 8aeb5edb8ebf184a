//! Several browser tabs on one IndexedDB database (feature `indexeddb`,
//! wasm32): every tab reads and writes the database itself; exactly one,
//! the **leader**, holds the server connection.
//!
//! - **Election**: each tab asks for the Web Lock `topgun:<database>`
//!   (`navigator.locks`); the browser grants it to one tab at a time and
//!   to the next in line when the holder closes or crashes. The holder
//!   starts sync; the lock is never given back while the tab lives. The
//!   leader posts a heartbeat every 500 ms; a follower in view that hears
//!   nothing for 1.5 s (the leader's tab was frozen or hangs, and keeps its
//!   lock) takes the lock from it (`steal`), and the old leader steps down
//!   when it runs again. A hidden follower does not: the browser throttles
//!   its timers, and a background leader's, until silence means nothing.
//! - **Without Web Locks** (a browser that lacks `navigator.locks`) the
//!   heartbeats are the election: a tab that hears no leader for 1.5 s
//!   claims the lead by writing a new epoch, waits one heartbeat, and
//!   leads if its epoch is still the stored one; a leader checks its epoch
//!   on every heartbeat and steps down when another tab's is newer. A
//!   leader that closes says so, and a follower claims at once.
//! - **Fencing**: the new leader increments an epoch in `meta_store`; its
//!   sync reads the op log through a store that checks the epoch first
//!   ([`FencedStore`]), so a leader that was superseded (its lock stolen
//!   while it was frozen) can never push again.
//! - **Changes**: every tab posts the changes it makes (its local writes;
//!   the leader also its merges of server records) on the
//!   `BroadcastChannel` `topgun:<database>`; the other tabs apply them to
//!   their working sets, events and live queries, and the leader tells its
//!   sync about a follower's write, which reaches the server within one
//!   push. A leader that has heard from no other tab is alone and posts
//!   no changes (a post costs about as much as a small write's own work);
//!   it keeps the changes it left unposted in the last 10 s (at most
//!   1,024). A tab that joins says `Hello` with the time it started
//!   opening (before it read anything); the leader answers the first
//!   `Hello` with the kept changes (`Unposted`), and posts them when it
//!   closes while still alone too, since a `Hello` may be on its way. A
//!   tab applies those made after it joined (less a second for the
//!   clocks), so its cache, live queries and subscribers hear of them; one
//!   made within that second may reach them twice. If a change left since
//!   then was lost rather than kept, `Lost` comes first. A later `Hello`
//!   from a tab that joined before the leader last left a change unposted
//!   is answered `Resync`: what that tab read may predate the change, so
//!   it is read again. Any message from another tab ends being alone, for
//!   good, and so does taking the lead from a silent leader (which may
//!   wake up and must hear of the changes made meanwhile).
//! - **Lost changes**: a tab whose relay falls behind its change feed (a
//!   `putMany` of more than the feed's 8,192 changes) posts `Lost`; the
//!   other tabs forget what they cached, their live queries read again,
//!   and their subscribers get
//!   [`RecvError::Missed`](crate::events::RecvError::Missed).
//!
//! Each tab stamps its writes with a node id of its own, so two tabs never
//! issue the same timestamp.

use crate::hub::{Change, ChangeFrame};
use crate::local::LocalData;
use crate::role::Role;
use crate::Origin;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::watch;
use topgun_core::Timestamp;
use topgun_storage::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, PruneSums, StorageError,
    Store, StoreRecord, StoreStats,
};
use topgun_sync::{ConnectionState, SyncHandle, SyncStatus};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

/// Meta key of the leader epoch.
const EPOCH_KEY: &str = "tabs.epoch";

#[wasm_bindgen]
extern "C" {
    /// `navigator.locks.request(name, callback)`.
    #[wasm_bindgen(js_namespace = ["navigator", "locks"], js_name = request, catch)]
    fn request_lock(
        name: &str,
        callback: &Closure<dyn FnMut(JsValue) -> js_sys::Promise>,
    ) -> Result<js_sys::Promise, JsValue>;

    /// `navigator.locks.request(name, options, callback)`.
    #[wasm_bindgen(js_namespace = ["navigator", "locks"], js_name = request, catch)]
    fn request_lock_with(
        name: &str,
        options: &JsValue,
        callback: &Closure<dyn FnMut(JsValue) -> js_sys::Promise>,
    ) -> Result<js_sys::Promise, JsValue>;
}

/// How often the leader tab says it is alive.
const HEARTBEAT_MS: u64 = 500;
/// How much earlier than a `Hello`'s time a change left unposted still
/// has the leader answer `Resync` (tabs' clocks are the machine's, read a
/// little apart).
const HELLO_MARGIN_MS: u64 = 1_000;
/// How long a lone leader keeps the changes it left unposted.
const UNPOSTED_KEEP_MS: u64 = 10_000;
/// How many changes left unposted a lone leader keeps at most.
const UNPOSTED_KEEP: usize = 1_024;
/// How long followers wait without a word from the leader before one
/// takes the lock from it (a frozen or hung tab keeps its lock); checked
/// every [`HEARTBEAT_MS`], so a follower takes over within 2 s.
const LEADER_SILENCE_MS: u64 = 1_500;

/// What tabs post to each other.
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// Changes to apply, in order.
    Changes(Vec<ChangeFrame>),
    /// What a tab that just joined read may be stale: forget what is
    /// cached and read the database again.
    Resync,
    /// Changes the sender made at `at` (ms since the epoch) or before were
    /// lost on their way (it fell behind, or dropped changes it kept): a
    /// tab that joined before then, less [`HELLO_MARGIN_MS`], forgets
    /// what it cached, reads again, and tells its subscribers.
    Lost { at: u64 },
    /// The leader's connection state, which every tab shows.
    State(ConnectionState),
    /// A tab joined at `at` (ms since the epoch): the leader answers
    /// with the changes it left unposted since then, if any (see
    /// [`Unposted::answer_hello`]), then its state.
    Hello { at: u64 },
    /// Changes a lone leader did not post, in batches, each with the time
    /// (ms since the epoch) it was left unposted: a tab applies those left
    /// after it joined, less [`HELLO_MARGIN_MS`].
    Unposted(Vec<(u64, Vec<ChangeFrame>)>),
    /// The leader is alive.
    Heartbeat,
    /// The leader is closing: a follower may claim the lead now.
    Leaving,
}

/// Starts sync for a tab that became the leader.
pub(crate) type StartSync = Box<
    dyn Fn(
        Arc<LocalData>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<SyncHandle>>>>,
>;

/// One tab's part in its database's tab group.
pub(crate) struct Tabs {
    role: watch::Sender<Role>,
    sync: RefCell<Option<SyncHandle>>,
    channel: web_sys::BroadcastChannel,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_lock: Closure<dyn FnMut(JsValue) -> js_sys::Promise>,
    /// Resolving it gives the lock back (at close).
    release: RefCell<Option<js_sys::Function>>,
    /// The database connection this tab opened, closed with the tab.
    database: Option<topgun_storage::IndexedDbStore>,
    /// The lock's (and the channel's) name.
    name: String,
    /// Runs when the lock is taken from this tab.
    _on_stolen: Closure<dyn FnMut(JsValue)>,
    closed: std::cell::Cell<bool>,
    /// Whether the browser has Web Locks; without them the heartbeats
    /// elect the leader (see the module doc).
    locks: bool,
    fence: Rc<Fence>,
    start_sync: Rc<StartSync>,
    /// When this tab last heard from a leader (or claimed the lead); 0
    /// when, without Web Locks, no leader is known (none heard yet, or it
    /// left).
    heard: Rc<std::cell::Cell<u64>>,
    /// Whether this tab has heard from another one (see the module doc);
    /// a leader that has not posts no changes.
    company: Rc<std::cell::Cell<bool>>,
    /// The changes this tab left unposted while it led alone.
    unposted: Rc<RefCell<Unposted>>,
}

/// What a lone leader left unposted: when it last did, and the changes
/// it left in the last [`UNPOSTED_KEEP_MS`] (at most [`UNPOSTED_KEEP`]),
/// in batches by when, until the first `Hello` or the close takes them.
#[derive(Default)]
struct Unposted {
    /// When a change was last left unposted (0: never).
    last_at: u64,
    /// When a change left unposted was last lost, not kept: the relay fell
    /// behind the feed, or the batch was dropped as too old or too many
    /// (0: never).
    lost_at: u64,
    /// Whether the kept batches were taken (posted): a tab that says
    /// `Hello` after that may not have heard them.
    taken: bool,
    /// The changes kept, oldest first, in batches with when each was left.
    batches: std::collections::VecDeque<(u64, Vec<Arc<Change>>)>,
    /// How many changes `batches` holds.
    changes: usize,
}

impl Unposted {
    /// Keeps `batch`, left unposted at `at` (with changes before it lost
    /// if `lagged`), and forgets what is now too old or too many.
    fn keep(&mut self, at: u64, batch: Vec<Arc<Change>>, lagged: bool) {
        self.last_at = at;
        if lagged {
            self.lost_at = at;
        }
        if batch.is_empty() {
            return;
        }
        self.changes += batch.len();
        self.batches.push_back((at, batch));
        while let Some((first_at, first)) = self.batches.front() {
            if self.changes <= UNPOSTED_KEEP && first_at.saturating_add(UNPOSTED_KEEP_MS) >= at {
                break;
            }
            self.lost_at = self.lost_at.max(*first_at);
            self.changes -= first.len();
            self.batches.pop_front();
        }
    }

    /// What answers the `Hello` of a tab that joined at `since` (less the
    /// margin), before the leader's state:
    /// - before the kept batches are taken: `Lost` if a change left since
    ///   then was lost, and the batches (taken now), whose changes bring
    ///   the tab's cache and subscribers up to date;
    /// - after: `Resync` if a change was left unposted since then, as what
    ///   the tab read may predate it; its subscribers came after the
    ///   batches were posted, so they were owed none of it.
    fn answer_hello(&mut self, since: u64) -> Vec<Message> {
        let left_since = |at: u64| at != 0 && at >= since;
        if self.taken {
            return if left_since(self.last_at) {
                vec![Message::Resync]
            } else {
                Vec::new()
            };
        }
        let mut answer = Vec::new();
        if left_since(self.lost_at) {
            answer.push(Message::Lost { at: self.lost_at });
        }
        answer.extend(self.take_since(since));
        answer
    }

    /// Takes every kept batch: those left at or after `since` as frames
    /// to post (none if there are none), the others forgotten.
    fn take_since(&mut self, since: u64) -> Option<Message> {
        self.taken = true;
        self.changes = 0;
        let batches: Vec<(u64, Vec<ChangeFrame>)> = std::mem::take(&mut self.batches)
            .into_iter()
            .filter(|(at, _)| *at >= since)
            .map(|(at, batch)| (at, batch.iter().map(|c| ChangeFrame::from(&**c)).collect()))
            .collect();
        (!batches.is_empty()).then_some(Message::Unposted(batches))
    }
}

impl std::fmt::Debug for Tabs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tabs")
            .field("role", &*self.role.borrow())
            .finish_non_exhaustive()
    }
}

impl Tabs {
    /// Joins the tab group of `database` with `local` (on a
    /// [`FencedStore`]), as a follower until the lock is granted.
    /// `joined_at` (ms since the epoch) is earlier than anything `local`
    /// read from the store: its `Hello` says so.
    pub(crate) fn join(
        database: &str,
        local: &Arc<LocalData>,
        status: &Arc<SyncStatus>,
        fence: Rc<Fence>,
        start_sync: StartSync,
        opened: Option<topgun_storage::IndexedDbStore>,
        joined_at: u64,
    ) -> Result<Rc<Self>, StorageError> {
        let start_sync = Rc::new(start_sync);
        let name = format!("topgun:{database}");
        let channel = web_sys::BroadcastChannel::new(&name).map_err(js_failure)?;
        let role = watch::Sender::new(Role::Follower);

        let weak_local = Arc::downgrade(local);
        let is_leader = role.subscribe();
        let state = status.clone();
        let answer = channel.clone();
        let locks = locks_available();
        // Without Web Locks a tab that has heard no leader yet may claim at
        // its first heartbeat (0: "none heard"; a leader answers `Hello`
        // at once).
        let heard = Rc::new(std::cell::Cell::new(if locks {
            local.now_millis()
        } else {
            0
        }));
        let heard_here = heard.clone();
        let company = Rc::new(std::cell::Cell::new(false));
        let unposted = Rc::new(RefCell::new(Unposted::default()));
        let (company_here, unposted_here) = (company.clone(), unposted.clone());
        // Changes made at or after this were made after this tab joined,
        // less the clocks' margin (`Unposted` batches, `Lost`).
        let joined_since = joined_at.saturating_sub(HELLO_MARGIN_MS);
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                let Some(local) = weak_local.upgrade() else {
                    return;
                };
                let leader = *is_leader.borrow() == Role::Leader;
                let bytes = js_sys::Uint8Array::new(&event.data()).to_vec();
                let message = rmp_serde::from_slice::<Message>(&bytes);
                if message.is_ok() {
                    company_here.set(true);
                }
                match message {
                    Ok(Message::Heartbeat | Message::State(_)) => {
                        heard_here.set(local.now_millis());
                    }
                    // With Web Locks the lock passes on by itself.
                    Ok(Message::Leaving) if !locks => heard_here.set(0),
                    _ => {}
                }
                let apply = |changes: Vec<ChangeFrame>| {
                    for frame in changes {
                        let change = Change::from(frame);
                        let from_follower = change.origin == Origin::Local;
                        let map = change.map.clone();
                        local.apply_change(change);
                        if from_follower && leader {
                            local.signal_sync(&map);
                        }
                    }
                };
                match message {
                    Ok(Message::Changes(changes)) => apply(changes),
                    Ok(Message::Unposted(batches)) => {
                        let after_joining =
                            batches.into_iter().filter(|(at, _)| *at >= joined_since);
                        for (_, changes) in after_joining {
                            apply(changes);
                        }
                    }
                    Ok(Message::Resync) => local.forget_unseen_changes(),
                    Ok(Message::Lost { at }) => {
                        if at >= joined_since {
                            local.changes_missed();
                        }
                    }
                    Ok(Message::State(known)) if !leader => state.set_state(known),
                    Ok(Message::Hello { at }) if leader => {
                        let since = at.saturating_sub(HELLO_MARGIN_MS);
                        for message in unposted_here.borrow_mut().answer_hello(since) {
                            post(&answer, &message);
                        }
                        post(&answer, &Message::State(state.state()));
                    }
                    Ok(_) => {}
                    Err(_) => tracing::warn!("ignoring an undecodable message from another tab"),
                }
            },
        );
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));

        let tabs = Rc::new_cyclic(|this: &std::rc::Weak<Tabs>| {
            let weak = this.clone();
            let stolen_from = this.clone();
            let weak_local = Arc::downgrade(local);
            let on_lock = Closure::<dyn FnMut(JsValue) -> js_sys::Promise>::new(move |_lock| {
                // A tab can have two requests out (queued, then a steal):
                // a grant that finds it closed or leading already is
                // given back at once.
                let redundant = weak
                    .upgrade()
                    .is_none_or(|tabs| tabs.closed.get() || *tabs.role.borrow() == Role::Leader);
                if redundant {
                    return js_sys::Promise::resolve(&JsValue::UNDEFINED);
                }
                // Held until the promise resolves: at close, or never.
                let mut release = None;
                let held = js_sys::Promise::new(&mut |resolve, _reject| release = Some(resolve));
                if let (Some(tabs), Some(local)) = (weak.upgrade(), weak_local.upgrade()) {
                    *tabs.release.borrow_mut() = release;
                    tabs.lead(local);
                }
                held
            });
            let on_stolen = Closure::<dyn FnMut(JsValue)>::new(move |_error| {
                if let Some(tabs) = stolen_from.upgrade() {
                    tabs.step_down();
                }
            });
            Tabs {
                role,
                sync: RefCell::new(None),
                channel,
                _on_message: on_message,
                _on_lock: on_lock,
                release: RefCell::new(None),
                database: opened,
                name: name.clone(),
                _on_stolen: on_stolen,
                closed: std::cell::Cell::new(false),
                locks,
                fence,
                start_sync,
                heard,
                company,
                unposted,
            }
        });
        if tabs.locks {
            tabs.request(false)?;
        } else {
            tracing::info!("no Web Locks in this browser: tabs elect a leader by heartbeats");
        }
        tabs.watch_leader(local);
        tabs.relay(local);
        tabs.relay_state(status);
        post(&tabs.channel, &Message::Hello { at: joined_at });
        Ok(tabs)
    }

    /// Asks for the lock (taking it from its holder with `steal`); when
    /// it is taken from this tab later, the tab steps down.
    fn request(&self, steal: bool) -> Result<(), StorageError> {
        let held = if steal {
            let options = js_sys::Object::new();
            js_sys::Reflect::set(&options, &"steal".into(), &JsValue::TRUE).map_err(js_failure)?;
            request_lock_with(&self.name, &options, &self._on_lock)
        } else {
            request_lock(&self.name, &self._on_lock)
        }
        .map_err(js_failure)?;
        // Resolves when this tab gives the lock back; rejects when another
        // tab took it.
        let _ = held.catch(&self._on_stolen);
        Ok(())
    }

    /// The lock was taken from this tab (it was frozen or hung): it stops
    /// syncing — its epoch is stale, so its sync could not push anyway —
    /// and queues for the lock again.
    fn step_down(&self) {
        if self.closed.get() || *self.role.borrow() != Role::Leader {
            return;
        }
        tracing::warn!("another tab took over as the leader");
        self.role.send_replace(Role::Follower);
        self.release.borrow_mut().take();
        if let Some(sync) = self.sync.borrow_mut().take() {
            wasm_bindgen_futures::spawn_local(async move { sync.close().await });
        }
        if self.locks {
            if let Err(error) = self.request(false) {
                tracing::error!(%error, "could not queue for the leader lock again");
            }
        }
    }

    /// Makes this tab the leader: a new epoch, then sync. Without Web
    /// Locks the claim stands only if no other tab's epoch replaced it
    /// within one heartbeat (two tabs that claimed at once: the later
    /// write wins, and the other never starts syncing).
    fn lead(self: &Rc<Self>, local: Arc<LocalData>) {
        let tabs = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(error) = tabs.fence.take_over(local.store().as_ref()).await {
                tracing::error!(%error, "could not take over as the leader tab");
                return;
            }
            if !tabs.locks {
                let Some(pause) = local.sleep_until(local.now_millis() + HEARTBEAT_MS) else {
                    return;
                };
                pause.await;
                if tabs.fence.check(local.store().as_ref()).await.is_err() {
                    tracing::info!("another tab claimed the lead at the same time");
                    return;
                }
            }
            if tabs.closed.get() {
                return;
            }
            tabs.role.send_replace(Role::Leader);
            post(&tabs.channel, &Message::Heartbeat);
            let handle = (tabs.start_sync)(local).await;
            *tabs.sync.borrow_mut() = handle;
        });
    }

    /// The leader says it is alive every [`HEARTBEAT_MS`]; a follower that
    /// has not heard from it for [`LEADER_SILENCE_MS`] takes the lock (or,
    /// without Web Locks, claims the lead); a leader without Web Locks
    /// checks that its epoch is still the newest.
    fn watch_leader(self: &Rc<Self>, local: &Arc<LocalData>) {
        let weak = Rc::downgrade(self);
        let weak_local = Arc::downgrade(local);
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let Some(local) = weak_local.upgrade() else {
                    return;
                };
                let now = local.now_millis();
                let Some(pause) = local.sleep_until(now + HEARTBEAT_MS) else {
                    return;
                };
                drop(local);
                pause.await;
                let (Some(tabs), Some(local)) = (weak.upgrade(), weak_local.upgrade()) else {
                    return;
                };
                if tabs.closed.get() {
                    return;
                }
                let now = local.now_millis();
                if *tabs.role.borrow() == Role::Leader {
                    if !tabs.locks && tabs.fence.check(local.store().as_ref()).await.is_err() {
                        tabs.step_down();
                        tabs.heard.set(local.now_millis());
                        continue;
                    }
                    post(&tabs.channel, &Message::Heartbeat);
                } else if now.saturating_sub(tabs.heard.get()) > LEADER_SILENCE_MS
                    // A leader that left is replaced whatever this tab
                    // shows; a silent one only by a tab in view.
                    && (tabs.heard.get() == 0 || !page_hidden())
                {
                    tracing::warn!("no leader tab is heard; taking over");
                    tabs.heard.set(now);
                    // The silent leader may wake up: it must hear of the
                    // changes made meanwhile (see the module doc).
                    tabs.company.set(true);
                    if !tabs.locks {
                        tabs.lead(local);
                    } else if let Err(error) = tabs.request(true) {
                        tracing::error!(%error, "could not take the leader lock");
                    }
                }
            }
        });
    }

    /// Posts this tab's changes to the others: its own local writes, and,
    /// while it leads, the server records it merges.
    fn relay(self: &Rc<Self>, local: &Arc<LocalData>) {
        let mut changes = local.changes();
        let node_id = local.hlc().node_id().to_owned();
        let clock = local.hlc().clock().clone();
        let weak = Rc::downgrade(self);
        wasm_bindgen_futures::spawn_local(async move {
            use tokio::sync::broadcast::error::{RecvError, TryRecvError};
            loop {
                // Everything published by now goes in one message.
                let mut batch = Vec::new();
                let mut lagged = false;
                match changes.recv().await {
                    Ok(change) => batch.push(change),
                    Err(RecvError::Lagged(_)) => lagged = true,
                    Err(RecvError::Closed) => return,
                }
                loop {
                    match changes.try_recv() {
                        Ok(change) => batch.push(change),
                        Err(TryRecvError::Lagged(_)) => lagged = true,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                let Some(tabs) = weak.upgrade() else { return };
                let leader = *tabs.role.borrow() == Role::Leader;
                batch.retain(|change| match change.origin {
                    Origin::Local => change.timestamp.node_id == node_id,
                    Origin::Remote => leader,
                });
                if leader && !tabs.company.get() {
                    // Alone: nobody to tell yet (see the module doc).
                    if lagged || !batch.is_empty() {
                        tabs.unposted
                            .borrow_mut()
                            .keep(clock.now_millis(), batch, lagged);
                    }
                    continue;
                }
                if lagged {
                    let at = clock.now_millis();
                    post(&tabs.channel, &Message::Lost { at });
                }
                if !batch.is_empty() {
                    let own = batch
                        .iter()
                        .map(|change| ChangeFrame::from(&**change))
                        .collect();
                    post(&tabs.channel, &Message::Changes(own));
                }
            }
        });
    }

    /// While this tab leads, posts its connection state to the others.
    fn relay_state(self: &Rc<Self>, status: &Arc<SyncStatus>) {
        let mut states = status.watch_state();
        let weak = Rc::downgrade(self);
        wasm_bindgen_futures::spawn_local(async move {
            while states.changed().await.is_ok() {
                let state = *states.borrow_and_update();
                let Some(tabs) = weak.upgrade() else { return };
                if *tabs.role.borrow() == Role::Leader {
                    post(&tabs.channel, &Message::State(state));
                }
            }
        });
    }

    /// This tab's role, as it changes.
    pub(crate) fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The sync handle, while this tab leads.
    pub(crate) fn sync(&self) -> Option<SyncHandle> {
        self.sync.borrow().clone()
    }

    /// Leaves the group: stops sync, gives the lock to the next tab, closes
    /// the database connection this tab opened.
    pub(crate) async fn close(&self) {
        self.closed.set(true);
        let sync = self.sync.borrow_mut().take();
        if let Some(sync) = sync {
            sync.close().await;
        }
        // Changes made just before the close reach the other tabs: the
        // relay was woken for them before this point, so one turn of the
        // microtask queue lets it post them while the channel is open.
        let turn = js_sys::Promise::resolve(&JsValue::UNDEFINED);
        let _ = wasm_bindgen_futures::JsFuture::from(turn).await;
        if self.role.send_replace(Role::Follower) == Role::Leader {
            // Still alone: a tab that joined may not have been heard yet.
            if !self.company.get() {
                for message in self.unposted.borrow_mut().answer_hello(0) {
                    post(&self.channel, &message);
                }
            }
            post(&self.channel, &Message::Leaving);
        }
        self.channel.set_onmessage(None);
        self.channel.close();
        if let Some(release) = self.release.borrow_mut().take() {
            let _ = release.call0(&JsValue::NULL);
        }
        // Lets the database be deleted or upgraded by another tab.
        if let Some(database) = &self.database {
            database.close();
        }
    }
}

/// Whether `navigator.locks` exists (Web Locks: every current browser,
/// in a secure context).
fn locks_available() -> bool {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into());
    navigator
        .and_then(|n| js_sys::Reflect::get(&n, &"locks".into()))
        .is_ok_and(|locks| locks.is_object())
}

/// Whether this page is out of view (a background tab). The browser
/// throttles a hidden page's timers, down to once a minute after a while,
/// so to a hidden follower every leader would look silent: only a tab in
/// view takes over from a silent leader, and the lead stays put while all
/// tabs are in the background.
fn page_hidden() -> bool {
    let document = js_sys::Reflect::get(&js_sys::global(), &"document".into());
    document
        .and_then(|d| js_sys::Reflect::get(&d, &"visibilityState".into()))
        .is_ok_and(|state| state.as_string().as_deref() == Some("hidden"))
}

/// Posts `message` to the other tabs, best effort.
fn post(channel: &web_sys::BroadcastChannel, message: &Message) {
    match rmp_serde::to_vec_named(message) {
        Ok(bytes) => {
            let bytes = js_sys::Uint8Array::from(bytes.as_slice());
            if let Err(error) = channel.post_message(&bytes) {
                tracing::warn!(?error, "could not post to the other tabs");
            }
        }
        Err(error) => tracing::warn!(%error, "could not encode a message to the other tabs"),
    }
}

fn js_failure(value: JsValue) -> StorageError {
    StorageError::Backend {
        backend: "indexeddb",
        during: "joining the other tabs",
        source: topgun_sync::js_message(&value).into(),
    }
}

/// The leader epoch this tab took over with, if any.
#[derive(Debug)]
pub(crate) struct Fence {
    /// Written after the epoch number, so that two tabs claiming the same
    /// number never both match what is stored.
    tab_id: String,
    /// The epoch as stored by this tab: the number (8 bytes, little
    /// endian), then `tab_id`.
    epoch: RefCell<Option<Vec<u8>>>,
}

/// The epoch number of a stored epoch (databases of older versions
/// stored the number alone).
fn decode_epoch(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| b.get(..8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

impl Fence {
    pub(crate) fn new(tab_id: &str) -> Self {
        Self {
            tab_id: tab_id.to_owned(),
            epoch: RefCell::new(None),
        }
    }

    /// Makes this tab's epoch the newest.
    async fn take_over(&self, store: &dyn Store) -> Result<(), StorageError> {
        let next = decode_epoch(store.meta_get(EPOCH_KEY).await?.as_deref()) + 1;
        let mut epoch = next.to_le_bytes().to_vec();
        epoch.extend_from_slice(self.tab_id.as_bytes());
        store.meta_put(EPOCH_KEY, epoch.clone()).await?;
        *self.epoch.borrow_mut() = Some(epoch);
        Ok(())
    }

    /// Fails unless this tab holds the newest epoch.
    async fn check(&self, store: &dyn Store) -> Result<(), StorageError> {
        let mine = self.epoch.borrow().clone();
        let Some(mine) = mine else {
            return Ok(());
        };
        if store.meta_get(EPOCH_KEY).await?.as_deref() == Some(mine.as_slice()) {
            Ok(())
        } else {
            Err(StorageError::Closed)
        }
    }
}

/// A store whose op-log reads and acknowledgements fail once another tab
/// took over (see the module doc): what a superseded leader's sync sees.
#[derive(Debug)]
pub(crate) struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Rc<Fence>,
}

impl FencedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, fence: Rc<Fence>) -> Self {
        Self { inner, fence }
    }
}

#[async_trait(?Send)]
impl Store for FencedStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        self.inner.write_local(write).await
    }
    async fn write_local_checked(
        &self,
        write: LocalWrite,
    ) -> Result<(OpId, Option<StoreRecord>), StorageError> {
        self.inner.write_local_checked(write).await
    }
    async fn write_local_checked_many(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Vec<Result<(OpId, Option<StoreRecord>), StorageError>> {
        self.inner.write_local_checked_many(writes).await
    }
    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.inner.get(map_name, key).await
    }
    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        self.inner.get_many(map_name, keys).await
    }
    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.scan(map_name, after, limit).await
    }
    async fn scan_stamps(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.inner.scan_stamps(map_name, after, limit).await
    }
    async fn count_records(&self, map_name: &str) -> Result<u64, StorageError> {
        self.inner.count_records(map_name).await
    }
    async fn scan_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.scan_in_store_order(map_name, after, limit).await
    }
    async fn scan_stamps_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.inner
            .scan_stamps_in_store_order(map_name, after, limit)
            .await
    }
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.dirty_records(map_name, after, limit).await
    }
    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.fence.check(self.inner.as_ref()).await?;
        self.inner.pending_ops(after, limit).await
    }
    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.fence.check(self.inner.as_ref()).await?;
        self.inner.mark_synced(ids).await
    }
    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.fence.check(self.inner.as_ref()).await?;
        self.inner.acknowledge(ids).await
    }
    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        self.inner.drop_synced_ops().await
    }
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.inner.apply_remote(records).await
    }
    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.inner.apply_remote_relaxed(records).await
    }
    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        self.inner.clear_map(map_name, timestamp).await
    }
    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        self.inner.prune_clean(map_name, keys, sums).await
    }
    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        self.inner.is_pruned(map_name, key).await
    }
    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.inner.map_names().await
    }
    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        self.inner.merkle_leaves(map_name).await
    }
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.meta_get(key).await
    }
    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.inner.meta_put(key, value).await
    }
    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.inner.stats().await
    }
}
