//! Exponential reconnect backoff with jitter.

/// Delays between reconnect attempts: `initial · 2^n`, capped at `max`,
/// each drawn uniformly from the upper half of that (so many clients that
/// lost one server do not come back in lockstep). Randomness comes from a
/// seeded generator, so tests are deterministic.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `initial_ms`, capped at `max_ms`, with jitter
    /// drawn from a generator seeded by `seed`.
    pub fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(initial_ms.max(1)),
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for jitter.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The delay before the next attempt, in ms; each call doubles the
    /// base until the cap.
    pub fn next_delay(&mut self) -> u64 {
        let base = self
            .initial_ms
            .saturating_mul(1u64 << self.attempt.min(40))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        half + self.next_random() % (base - half + 1)
    }

    /// The longest delay: used after an authentication failure, so a client
    /// with a bad token does not hammer the server.
    pub fn max_delay(&self) -> u64 {
        self.max_ms
    }

    /// Back to the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_jitter_and_caps() {
        let mut b = Backoff::new(1_000, 30_000, 42);
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000];
        for (d, base) in delays.iter().zip(bases) {
            assert!(
                *d >= base / 2 && *d <= base,
                "{d} not in [{}, {base}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= 1_000);
        let mut c = Backoff::new(1_000, 30_000, 7);
        let other: Vec<u64> = (0..8).map(|_| c.next_delay()).collect();
        assert_ne!(delays, other, "different seeds jitter differently");
    }
}
