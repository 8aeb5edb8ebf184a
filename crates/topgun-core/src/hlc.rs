//! Hybrid logical clock, exactly as TopGun defines it.
//!
//! A [`Timestamp`] is `{millis, counter, nodeId}`, totally ordered by
//! `millis`, then `counter`, then `node_id` compared byte-wise. Its string
//! form is `millis:counter:nodeId`.
//!
//! [`Hlc`] issues timestamps that never go backwards, and folds in remote
//! timestamps with [`Hlc::update`], refusing (or reporting) those that lie
//! further in the future than the configured drift bound. Wall-clock time is
//! injected through [`Clock`], so the clock works in a browser (where
//! `std::time` panics) and tests can drive time by hand.
//!
//! ```
//! use topgun_core::hlc::{Hlc, Timestamp};
//! let hlc = Hlc::new("node-a").unwrap();
//! let a = hlc.now();
//! let b = hlc.now();
//! assert!(b > a);
//! let parsed: Timestamp = a.to_string().parse().unwrap();
//! assert_eq!(parsed, a);
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// Default bound on how far a remote timestamp may lie ahead of the local
/// wall clock: 60 seconds, as in TopGun.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;

/// A hybrid logical clock timestamp.
///
/// Field order matters: the derived `Ord` compares `millis`, then `counter`,
/// then `node_id` byte-wise (Rust's `String` order), which is TopGun's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timestamp {
    /// Physical component: milliseconds since the Unix epoch.
    #[serde(deserialize_with = "crate::flex::u64")]
    pub millis: u64,
    /// Logical component, orders events within one millisecond.
    #[serde(deserialize_with = "crate::flex::u32")]
    pub counter: u32,
    /// The issuing node; breaks ties. Never contains `:`.
    pub node_id: String,
}

impl Timestamp {
    /// Builds a timestamp from its parts. The node id is not validated here;
    /// [`Timestamp::from_str`] and [`Hlc::new`] do validate it.
    pub fn new(millis: u64, counter: u32, node_id: impl Into<String>) -> Self {
        Self {
            millis,
            counter,
            node_id: node_id.into(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.millis, self.counter, self.node_id)
    }
}

impl FromStr for Timestamp {
    type Err = HlcError;

    /// Parses `millis:counter:nodeId`.
    ///
    /// # Errors
    /// [`HlcError::MalformedTimestamp`] when a part is missing, a number does
    /// not parse, or the node id is empty or contains `:`.
    fn from_str(s: &str) -> Result<Self, HlcError> {
        let bad = |why: &'static str| HlcError::MalformedTimestamp {
            input: s.to_owned(),
            why,
        };
        let mut parts = s.splitn(3, ':');
        let millis = parts.next().ok_or_else(|| bad("missing millis"))?;
        let counter = parts.next().ok_or_else(|| bad("missing counter"))?;
        let node_id = parts.next().ok_or_else(|| bad("missing node id"))?;
        let millis = millis.parse().map_err(|_| bad("millis is not a u64"))?;
        let counter = counter.parse().map_err(|_| bad("counter is not a u32"))?;
        validate_node_id(node_id).map_err(|_| bad("node id is empty or contains ':'"))?;
        Ok(Timestamp::new(millis, counter, node_id))
    }
}

fn validate_node_id(node_id: &str) -> Result<(), HlcError> {
    if node_id.is_empty() || node_id.contains(':') {
        return Err(HlcError::InvalidNodeId {
            node_id: node_id.to_owned(),
        });
    }
    Ok(())
}

/// Errors of the clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    /// A timestamp string was not `millis:counter:nodeId`.
    #[error("malformed timestamp {input:?}: {why}")]
    MalformedTimestamp {
        /// The string that failed to parse.
        input: String,
        /// What was wrong with it.
        why: &'static str,
    },
    /// A node id was empty or contained `:` (the string form's separator).
    #[error("invalid node id {node_id:?}: it must be non-empty and must not contain ':'")]
    InvalidNodeId {
        /// The rejected node id.
        node_id: String,
    },
    /// A remote timestamp lies too far ahead of the local wall clock
    /// (strict drift policy). The remote clock is likely wrong; the
    /// timestamp was not folded into the clock.
    #[error("remote timestamp {remote} is {drift_ms} ms ahead of the local clock (max drift {max_drift_ms} ms)")]
    ClockDrift {
        /// The offending timestamp.
        remote: Timestamp,
        /// How far ahead of the local wall clock it is.
        drift_ms: u64,
        /// The configured bound.
        max_drift_ms: u64,
    },
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current wall-clock time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The platform's wall clock: `SystemTime` on native targets,
/// `Date.now()` in the browser (where `std::time` panics).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(target_family = "wasm"))]
impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        // A clock set before 1970 reads as 0; u128 → u64 overflows in 584 million years.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(target_family = "wasm")]
impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        let now = js_sys::Date::now();
        // Date.now() is a whole number of milliseconds, non-negative after 1970.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        if now.is_finite() && now > 0.0 {
            now as u64
        } else {
            0
        }
    }
}

/// A clock that returns whatever time it was last set to; for tests and
/// simulations.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A manual clock reading `millis`.
    pub fn new(millis: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(millis))
    }
    /// Sets the time.
    pub fn set(&self, millis: u64) {
        self.0.store(millis, std::sync::atomic::Ordering::SeqCst);
    }
    /// Moves time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What [`Hlc::update`] does with a remote timestamp beyond the drift bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftPolicy {
    /// Refuse it with [`HlcError::ClockDrift`]; the clock is unchanged.
    #[default]
    Strict,
    /// Accept it (the clock jumps ahead) and report the drift in
    /// [`ClockUpdate::drift_ms`].
    Lenient,
}

/// The outcome of a successful [`Hlc::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockUpdate {
    /// Set when the remote timestamp exceeded the drift bound and was
    /// accepted anyway (lenient policy): how far ahead it was, in ms.
    pub drift_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    millis: u64,
    counter: u32,
}

/// A hybrid logical clock for one node. Cheap to share behind an `Arc`;
/// all methods take `&self`.
#[derive(Debug)]
pub struct Hlc {
    node_id: String,
    clock: Arc<dyn Clock>,
    max_drift_ms: u64,
    policy: DriftPolicy,
    state: Mutex<State>,
}

impl Hlc {
    /// A clock for `node_id` on the system wall clock, strict drift policy,
    /// 60 s max drift.
    ///
    /// # Errors
    /// [`HlcError::InvalidNodeId`] if the node id is empty or contains `:`.
    pub fn new(node_id: impl Into<String>) -> Result<Self, HlcError> {
        Self::with_clock(node_id, Arc::new(SystemClock))
    }

    /// A clock for `node_id` reading wall time from `clock`.
    ///
    /// # Errors
    /// [`HlcError::InvalidNodeId`] if the node id is empty or contains `:`.
    pub fn with_clock(node_id: impl Into<String>, clock: Arc<dyn Clock>) -> Result<Self, HlcError> {
        let node_id = node_id.into();
        validate_node_id(&node_id)?;
        Ok(Self {
            node_id,
            clock,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            policy: DriftPolicy::Strict,
            state: Mutex::new(State::default()),
        })
    }

    /// Sets the drift bound and what to do beyond it.
    #[must_use]
    pub fn with_drift(mut self, max_drift_ms: u64, policy: DriftPolicy) -> Self {
        self.max_drift_ms = max_drift_ms;
        self.policy = policy;
        self
    }

    /// This clock's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configured drift bound in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The wall clock this HLC reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two integers updated together; a panic elsewhere
        // cannot leave it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues a new timestamp, strictly greater than every timestamp this
    /// clock issued or observed before.
    ///
    /// If the wall clock is ahead of the last timestamp, the result is
    /// `(wall, 0)`; otherwise `(last, counter + 1)`. Should the counter
    /// overflow, the millisecond component moves forward by one instead.
    pub fn now(&self) -> Timestamp {
        let wall = self.clock.now_millis();
        let mut s = self.lock();
        if wall > s.millis {
            s.millis = wall;
            s.counter = 0;
        } else {
            bump(&mut s);
        }
        Timestamp::new(s.millis, s.counter, self.node_id.clone())
    }

    /// Folds a remote timestamp into the clock so that later local
    /// timestamps order after it.
    ///
    /// # Errors
    /// With [`DriftPolicy::Strict`], [`HlcError::ClockDrift`] when
    /// `remote.millis` is more than the max drift ahead of the wall clock;
    /// the clock is then left unchanged.
    pub fn update(&self, remote: &Timestamp) -> Result<ClockUpdate, HlcError> {
        let wall = self.clock.now_millis();
        let ahead = remote.millis.saturating_sub(wall);
        let mut drift_ms = None;
        if ahead > self.max_drift_ms {
            match self.policy {
                DriftPolicy::Strict => {
                    return Err(HlcError::ClockDrift {
                        remote: remote.clone(),
                        drift_ms: ahead,
                        max_drift_ms: self.max_drift_ms,
                    })
                }
                DriftPolicy::Lenient => drift_ms = Some(ahead),
            }
        }
        let mut s = self.lock();
        let max = s.millis.max(wall).max(remote.millis);
        if max == s.millis && max == remote.millis {
            s.counter = s.counter.max(remote.counter);
            bump(&mut s);
        } else if max == s.millis {
            bump(&mut s);
        } else if max == remote.millis {
            s.millis = remote.millis;
            s.counter = remote.counter;
            bump(&mut s);
        } else {
            s.millis = wall;
            s.counter = 0;
        }
        Ok(ClockUpdate { drift_ms })
    }
}

fn bump(s: &mut State) {
    match s.counter.checked_add(1) {
        Some(c) => s.counter = c,
        None => {
            s.millis = s.millis.saturating_add(1);
            s.counter = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manual(at: u64) -> (Arc<ManualClock>, Hlc) {
        let clock = Arc::new(ManualClock::new(at));
        let hlc = Hlc::with_clock("me", clock.clone()).unwrap();
        (clock, hlc)
    }

    #[test]
    fn now_follows_the_wall_clock_and_counts_within_a_millisecond() {
        let (clock, hlc) = manual(1_000);
        assert_eq!(hlc.now(), Timestamp::new(1_000, 0, "me"));
        assert_eq!(hlc.now(), Timestamp::new(1_000, 1, "me"));
        clock.set(900); // wall clock goes backwards: logical time does not
        assert_eq!(hlc.now(), Timestamp::new(1_000, 2, "me"));
        clock.set(2_000);
        assert_eq!(hlc.now(), Timestamp::new(2_000, 0, "me"));
    }

    #[test]
    fn update_takes_the_max_with_counter_rules() {
        let (_clock, hlc) = manual(1_000);
        hlc.update(&Timestamp::new(1_500, 7, "other")).unwrap();
        assert_eq!(hlc.now(), Timestamp::new(1_500, 9, "me"));
        // Remote at the same millis as ours: max counter + 1.
        hlc.update(&Timestamp::new(1_500, 20, "other")).unwrap();
        assert_eq!(hlc.now(), Timestamp::new(1_500, 22, "me"));
        // Remote behind: ours + 1.
        hlc.update(&Timestamp::new(10, 99, "other")).unwrap();
        assert_eq!(hlc.now(), Timestamp::new(1_500, 24, "me"));
    }

    #[test]
    fn strict_drift_rejects_and_leaves_the_clock_alone() {
        let (_clock, hlc) = manual(1_000);
        let far = Timestamp::new(1_000 + DEFAULT_MAX_DRIFT_MS + 1, 0, "x");
        let err = hlc.update(&far).unwrap_err();
        assert!(
            matches!(
                err,
                HlcError::ClockDrift {
                    drift_ms: 60_001,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("60001 ms ahead"), "{err}");
        assert_eq!(hlc.now(), Timestamp::new(1_000, 0, "me"));
        // Exactly at the bound is fine.
        let edge = Timestamp::new(1_000 + DEFAULT_MAX_DRIFT_MS, 0, "x");
        assert_eq!(hlc.update(&edge).unwrap().drift_ms, None);
    }

    #[test]
    fn lenient_drift_accepts_and_reports() {
        let clock = Arc::new(ManualClock::new(0));
        let hlc = Hlc::with_clock("me", clock)
            .unwrap()
            .with_drift(10, DriftPolicy::Lenient);
        let out = hlc.update(&Timestamp::new(100, 3, "x")).unwrap();
        assert_eq!(out.drift_ms, Some(100));
        assert_eq!(hlc.now(), Timestamp::new(100, 5, "me"));
    }

    #[test]
    fn counter_overflow_moves_millis_forward() {
        let (_clock, hlc) = manual(5);
        hlc.update(&Timestamp::new(5, u32::MAX, "x")).unwrap();
        assert_eq!(hlc.now(), Timestamp::new(6, 1, "me"));
    }

    #[test]
    fn parse_and_display() {
        let t = Timestamp::new(1_700_000_000_000, 3, "node-1");
        assert_eq!(t.to_string(), "1700000000000:3:node-1");
        assert_eq!("1700000000000:3:node-1".parse::<Timestamp>().unwrap(), t);
        for bad in [
            "",
            "1",
            "1:2",
            "1:2:",
            "x:2:n",
            "1:y:n",
            "1:2:a:b",
            "-1:2:n",
            "1:4294967296:n",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert!(
                matches!(err, HlcError::MalformedTimestamp { .. }),
                "{bad:?} gave {err:?}"
            );
        }
        assert!(Hlc::new("a:b").is_err());
        assert!(Hlc::new("").is_err());
    }

    #[test]
    fn order_is_millis_counter_then_node_bytes() {
        let a = Timestamp::new(1, 5, "z");
        let b = Timestamp::new(2, 0, "a");
        let c = Timestamp::new(2, 1, "a");
        let d = Timestamp::new(2, 1, "b");
        let e = Timestamp::new(2, 1, "ba");
        assert!(a < b && b < c && c < d && d < e);
        // Byte-wise, not locale: uppercase sorts before lowercase.
        assert!(Timestamp::new(0, 0, "Z") < Timestamp::new(0, 0, "a"));
    }

    proptest! {
        #[test]
        fn issued_timestamps_strictly_increase(
            steps in proptest::collection::vec((0u64..3_000, any::<bool>(), 0u64..3_000, 0u32..5), 1..200)
        ) {
            let (clock, hlc) = manual(1_000);
            let mut last = hlc.now();
            for (wall, remote_step, remote_millis, remote_counter) in steps {
                clock.set(wall);
                if remote_step {
                    let remote = Timestamp::new(remote_millis, remote_counter, "peer");
                    if hlc.update(&remote).is_ok() {
                        let next = hlc.now();
                        prop_assert!(next > remote);
                        prop_assert!(next > last);
                        last = next;
                    }
                } else {
                    let next = hlc.now();
                    prop_assert!(next > last);
                    last = next;
                }
            }
        }

        #[test]
        fn string_form_round_trips(millis: u64, counter: u32, node in "[^:]{1,20}") {
            let t = Timestamp::new(millis, counter, node);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }
}
