//! Per-principal rate limit: a token bucket per subject, refilled continuously. Answers 429
//! with `Retry-After` when empty. In memory, per process (a shared limiter belongs to the
//! Redis adapter).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most subjects tracked before idle buckets are swept (bounds memory under many principals).
const BUCKETS_MAX: usize = 100_000;

/// Token buckets keyed by subject.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` tokens per second, at most `burst` saved; `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `subject` at `now`; `Err(seconds)` to wait if there is none.
    pub fn check(&self, subject: &str, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(subject) {
            let burst = self.burst;
            let rate = self.per_second;
            // Forget subjects whose bucket has refilled: they lose nothing.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets
            .entry(subject.to_string())
            .or_insert((self.burst, now));
        let refilled = (*tokens
            + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(((1.0 - refilled) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_empties_and_refills_per_subject() {
        let r = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            r.check("a", t0).unwrap();
        }
        assert_eq!(r.check("a", t0), Err(1));
        r.check("b", t0)
            .expect("another subject has its own bucket");
        r.check("a", t0 + Duration::from_millis(600))
            .expect("refilled");
        assert!(RateLimiter::new(0, 0).check("a", t0).is_ok(), "0 disables");
    }
}
