//! What one source address may register. Keys are free, so without a limit one machine
//! could fill the directory with cards (each pushed to every node, each dialled by every
//! node). A source is the IP address a registration arrives from: it may hold at most
//! [`MAX_CARDS_PER_SOURCE`] distinct keys' cards and register at a bounded rate.
//! Loopback and private ranges can be exempt (`--exempt-private`), for tests and LANs
//! where many honest nodes share an address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use raclette_node::network::is_private;
use raclette_node::rate::TokenBuckets;

use raclette_protocol::PublicKey;

/// The most distinct keys one source address may register cards for.
pub const MAX_CARDS_PER_SOURCE: usize = 100;
/// Registrations one source may make at once.
pub const REGISTRATION_BURST: u32 = 30;
/// After a burst, one more registration is allowed this often.
pub const REGISTRATION_REFILL: Duration = Duration::from_secs(6);

/// Why a registration was refused by the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The source already holds its share of cards.
    #[error("{address} already registered cards for {cap} keys, the most one address may")]
    TooManyCards {
        /// The address.
        address: IpAddr,
        /// The cap in force.
        cap: usize,
    },
    /// The source registers too often.
    #[error("too many registrations from {address}; try again in {wait_secs} s")]
    TooFast {
        /// The address.
        address: IpAddr,
        /// When the next one is allowed.
        wait_secs: u64,
    },
}

/// Per-source counts: the keys registered from each address this run, and a token bucket
/// of registrations.
#[derive(Debug)]
pub struct SourceLimits {
    exempt_private: bool,
    cap: usize,
    keys: HashMap<IpAddr, HashSet<PublicKey>>,
    buckets: TokenBuckets<IpAddr>,
}

impl SourceLimits {
    /// Limits with `cap` keys per source; loopback and private sources are exempt when
    /// `exempt_private`.
    pub fn new(cap: usize, exempt_private: bool) -> Self {
        Self {
            exempt_private,
            cap,
            keys: HashMap::new(),
            buckets: TokenBuckets::new(REGISTRATION_BURST, REGISTRATION_REFILL),
        }
    }

    /// Whether `key` may register from `source` at `now`; counts it if so.
    pub fn admit(
        &mut self,
        source: IpAddr,
        key: PublicKey,
        now: Instant,
    ) -> Result<(), LimitRefusal> {
        if self.exempt_private && is_private(source) {
            return Ok(());
        }
        let keys = self.keys.entry(source).or_default();
        if !keys.contains(&key) && keys.len() >= self.cap {
            return Err(LimitRefusal::TooManyCards { address: source, cap: self.cap });
        }
        if let Err(wait) = self.buckets.take(source, now) {
            let wait_secs = wait.as_secs().max(1);
            return Err(LimitRefusal::TooFast { address: source, wait_secs });
        }
        keys.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use raclette_protocol::Keypair;

    use super::*;

    fn key(n: u32) -> PublicKey {
        let mut secret = [7u8; 32];
        secret[..4].copy_from_slice(&n.to_be_bytes());
        Keypair::from_secret_bytes(secret).expect("valid scalar").public()
    }

    #[test]
    fn given_one_public_source_then_its_101st_key_is_refused_and_known_keys_still_update() {
        let mut limits = SourceLimits::new(MAX_CARDS_PER_SOURCE, true);
        let source: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for n in 0..MAX_CARDS_PER_SOURCE as u32 {
            // Spread over time so the rate limit does not decide.
            let now = start + REGISTRATION_REFILL * n;
            assert_eq!(limits.admit(source, key(n), now), Ok(()), "key {n}");
        }
        let later = start + REGISTRATION_REFILL * 200;
        assert!(matches!(
            limits.admit(source, key(1000), later),
            Err(LimitRefusal::TooManyCards { .. })
        ));
        assert_eq!(limits.admit(source, key(3), later), Ok(()), "a known key updates its card");
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            limits.admit(other, key(1000), later),
            Ok(()),
            "another source has its own share"
        );
    }

    #[test]
    fn given_a_burst_of_registrations_then_the_excess_waits_for_the_refill() {
        let mut limits = SourceLimits::new(MAX_CARDS_PER_SOURCE, false);
        let source: IpAddr = "203.0.113.7".parse().unwrap();
        let now = Instant::now();
        for _ in 0..REGISTRATION_BURST {
            assert_eq!(limits.admit(source, key(1), now), Ok(()));
        }
        assert!(matches!(limits.admit(source, key(1), now), Err(LimitRefusal::TooFast { .. })));
        assert_eq!(limits.admit(source, key(1), now + REGISTRATION_REFILL), Ok(()));
    }

    #[test]
    fn given_private_sources_then_exempt_only_with_the_flag() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let mut exempt = SourceLimits::new(1, true);
        let mut strict = SourceLimits::new(1, false);
        let now = Instant::now();
        for n in 0..3 {
            assert_eq!(exempt.admit(loopback, key(n), now), Ok(()));
        }
        assert_eq!(strict.admit(loopback, key(0), now), Ok(()));
        assert!(strict.admit(loopback, key(1), now).is_err());
        for private in ["10.1.2.3", "192.168.1.9", "172.16.0.1", "fd00::1", "fe80::1", "::1"] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["203.0.113.7", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
