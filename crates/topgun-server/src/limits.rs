//! The per-connection rate limit: a token bucket over ops.

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, at most `capacity` saved up.
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
            rate: f64::from(rate),
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `cost` tokens if the bucket holds that many (after refilling
    /// for the time passed); otherwise takes nothing and returns `false`.
    /// A cost above the capacity can never be paid.
    pub(crate) fn try_take(&mut self, cost: usize) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        // Op counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let cost = cost as f64;
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn refills_at_the_rate_up_to_the_capacity() {
        let mut bucket = TokenBucket::new(10, 20);
        assert!(bucket.try_take(20));
        assert!(!bucket.try_take(1));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take(5));
        assert!(!bucket.try_take(1));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(!bucket.try_take(21));
        assert!(bucket.try_take(20));
    }
}
