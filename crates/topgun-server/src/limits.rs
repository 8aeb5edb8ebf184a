//! The per-connection rate limit: a token bucket over ops, used as flow
//! control. A frame that finds too few tokens is not refused: after
//! handling it, the reader waits until the bucket has refilled enough and
//! meanwhile reads nothing more from that socket, so TCP pushes back on the
//! client.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, at most `capacity` saved up.
/// Tokens may go below zero (a debt that later frames wait out), so a
/// frame costing more than the capacity is paced too, never refused.
/// Time is tokio's, so tests with a paused clock drive it.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, capacity: u32) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            capacity,
            rate: f64::from(rate.max(1)),
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `cost` tokens and returns how long to wait before handling
    /// what they pay for: zero while the bucket holds them, otherwise the
    /// time until it has refilled enough (up to full; the rest of a cost
    /// above the capacity is a debt the next frames wait out).
    pub(crate) fn take(&mut self, cost: usize) -> Duration {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        // Op counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let cost = cost as f64;
        let short = cost.min(self.capacity) - self.tokens;
        self.tokens -= cost;
        if short > 0.0 {
            Duration::from_secs_f64(short / self.rate)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_rate_after_the_burst() {
        let mut bucket = TokenBucket::new(10, 20);
        assert_eq!(bucket.take(20), Duration::ZERO, "the burst is free");
        assert_eq!(bucket.take(5), ms(500), "then 5 tokens at 10/s");
        tokio::time::advance(ms(500)).await;
        assert_eq!(bucket.take(10), ms(1_000));
        tokio::time::advance(ms(1_000)).await;
        // Idle time refills up to the capacity only.
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(bucket.take(20), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_above_the_capacity_is_paced_not_refused() {
        let mut bucket = TokenBucket::new(10, 20);
        bucket.take(20);
        // Waits for a full bucket; the other 10 tokens are a debt.
        assert_eq!(bucket.take(30), ms(2_000));
        tokio::time::advance(ms(2_000)).await;
        assert_eq!(bucket.take(1), ms(1_100), "the debt, then the token");
    }
}
