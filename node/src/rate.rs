//! Token buckets: a burst at once, then a steady rate. Used wherever a peer, an address
//! or the node itself may do something only so often (tracker registrations, relay
//! circuits, dials).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A token bucket per key: `burst` at once, then one more every `refill`. Keys whose
/// bucket is full again are forgotten once many are held, so fresh identities cannot
/// grow it for ever.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    burst: u32,
    refill: Duration,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

/// Buckets held before full ones are forgotten.
const BUCKETS_KEPT: usize = 4096;

impl<K: std::hash::Hash + Eq + Copy> TokenBuckets<K> {
    /// `burst` tokens per key, one more every `refill` (not zero).
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self { burst, refill: refill.max(Duration::from_millis(1)), buckets: HashMap::new() }
    }

    /// Takes a token of `key` at `now`; or how long until the next one.
    pub fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= BUCKETS_KEPT {
            let (burst, refill) = (self.burst, self.refill);
            self.buckets.retain(|_, bucket| Self::refilled(bucket, burst, refill, now) < burst);
        }
        let bucket =
            self.buckets.entry(key).or_insert(Bucket { tokens: self.burst, refilled: now });
        if Self::refilled(bucket, self.burst, self.refill, now) == 0 {
            return Err((bucket.refilled + self.refill).saturating_duration_since(now));
        }
        bucket.tokens -= 1;
        Ok(())
    }

    /// Adds the tokens due by `now`; returns how many there are.
    fn refilled(bucket: &mut Bucket, burst: u32, refill: Duration, now: Instant) -> u32 {
        let due = now.duration_since(bucket.refilled).as_nanos() / refill.as_nanos();
        if due > 0 {
            let due = u32::try_from(due).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(due).min(burst);
            bucket.refilled =
                if bucket.tokens == burst { now } else { bucket.refilled + refill * due };
        }
        bucket.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_spent_burst_then_tokens_come_back_one_per_refill_up_to_the_burst() {
        let mut buckets = TokenBuckets::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take("a", start), Ok(()));
        }
        assert_eq!(buckets.take("a", start), Err(Duration::from_secs(10)));
        assert_eq!(buckets.take("b", start), Ok(()), "each key has its own bucket");
        assert_eq!(buckets.take("a", start + Duration::from_secs(10)), Ok(()));
        assert!(buckets.take("a", start + Duration::from_secs(11)).is_err());
        // A long rest refills to the burst, no further.
        let later = start + Duration::from_secs(1000);
        for _ in 0..3 {
            assert_eq!(buckets.take("a", later), Ok(()));
        }
        assert!(buckets.take("a", later).is_err());
    }

    #[test]
    fn given_many_keys_then_full_buckets_are_forgotten() {
        let mut buckets = TokenBuckets::new(1, Duration::from_secs(1));
        let start = Instant::now();
        for key in 0..BUCKETS_KEPT as u32 {
            buckets.take(key, start).expect("a fresh key");
        }
        // A second later every bucket is full again: the next key clears them.
        buckets.take(u32::MAX, start + Duration::from_secs(1)).expect("a fresh key");
        assert_eq!(buckets.buckets.len(), 1);
    }
}
