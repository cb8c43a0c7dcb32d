//! Per-connection invocation rate limiting: a token bucket.

use tokio::time::Instant;

/// A limit on how often one connection may invoke hub methods.
///
/// ```
/// use signalbox::HubOptions;
/// use signalbox::hub::RateLimit;
///
/// let options = HubOptions::default().invocation_rate_limit(RateLimit::new(5.0, 10));
/// assert_eq!(options.invocation_rate_limit.map(|l| l.burst), Some(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained invocations per second.
    pub per_second: f64,
    /// Invocations allowed in a burst above the sustained rate.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` invocations sustained, `burst` more allowed at once.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The bucket of one connection.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            refilled: Instant::now(),
        }
    }

    /// Takes one token; `false` when the connection is over its limit.
    pub(crate) fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let capacity = f64::from(self.limit.burst.max(1));
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
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
    async fn allows_a_burst_then_the_sustained_rate() {
        let mut bucket = TokenBucket::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        assert!(bucket.try_take());
        assert!(bucket.try_take());
        assert!(bucket.try_take());
        assert!(!bucket.try_take(), "burst used up");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take(), "one token back after half a second");
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert!(bucket.try_take());
        }
        assert!(!bucket.try_take(), "refill is capped at the burst");
    }
}
