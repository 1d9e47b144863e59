//! Exponential backoff per peer, for what the node retries on its own: dialling a known
//! peer that is offline, catching up from a peer whose last attempt led nowhere.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When each peer may be tried again: after `first`, doubling with each further failure
/// up to `cap`; a success starts its schedule afresh.
#[derive(Debug)]
pub struct Backoff<P> {
    first: Duration,
    cap: Duration,
    /// Failed tries so far and when the next one may start, per peer.
    schedule: HashMap<P, (u32, Instant)>,
}

impl<P: Hash + Eq> Backoff<P> {
    /// Waits `first` after the first failure, doubling up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap, schedule: HashMap::new() }
    }

    /// Whether `peer` may be tried at `now`.
    pub fn due(&self, peer: &P, now: Instant) -> bool {
        self.schedule.get(peer).is_none_or(|(_, next)| now >= *next)
    }

    /// A try of `peer` started (or failed) at `now`: the next waits longer.
    pub fn tried(&mut self, peer: P, now: Instant) {
        let tries = self.schedule.get(&peer).map_or(0, |(tries, _)| *tries);
        let wait = self.first.saturating_mul(1 << tries.min(16)).min(self.cap);
        self.schedule.insert(peer, (tries + 1, now + wait));
    }

    /// `peer` succeeded: try it at once next time.
    pub fn forget(&mut self, peer: &P) {
        self.schedule.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_peer_that_keeps_failing_then_waits_double_to_the_cap_and_reset_on_success() {
        let peer = 1u32;
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let start = Instant::now();
        assert!(backoff.due(&peer, start), "a peer never tried is due");
        let mut at = start;
        let mut waits = Vec::new();
        for _ in 0..8 {
            backoff.tried(peer, at);
            let (_, next) = backoff.schedule[&peer];
            assert!(!backoff.due(&peer, next - Duration::from_millis(1)));
            assert!(backoff.due(&peer, next));
            waits.push((next - at).as_secs());
            at = next;
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert!(backoff.due(&2, start), "other peers are not held back");
        backoff.forget(&peer);
        assert!(backoff.due(&peer, start), "a success starts afresh");
    }
}
