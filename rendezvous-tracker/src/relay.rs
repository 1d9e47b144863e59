//! The circuit relay's limits, sized for what nodes use it for and so that a few
//! identities cannot hold every slot.
//!
//! Nodes use the relay in two ways: a relayed link that lasts until DCUtR upgrades it to
//! a direct one (seconds), and, between nodes whose NATs defeat hole punching, as their
//! only path (blocks and sync for as long as both run). A node holds one reservation per
//! tracker and a circuit per relayed peer, of which it keeps a bounded set.
//!
//! libp2p counts a peer's circuits as source or destination and lets it reach the cap
//! plus one. A circuit that ends (duration or bytes) is simply dialled again by the node.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, relay};

use raclette_node::network::is_private;
use raclette_node::rate::TokenBuckets;

/// Reservations held at once.
pub const MAX_RESERVATIONS: usize = 1024;
/// Reservations one peer may hold (one per tracker connection; two while it reconnects).
pub const MAX_RESERVATIONS_PER_PEER: usize = 2;
/// How long a reservation lasts before the node renews it.
pub const RESERVATION_DURATION: Duration = Duration::from_secs(3600);
/// Circuits held at once.
pub const MAX_CIRCUITS: usize = 1024;
/// Circuits one peer may be an end of (libp2p allows one more).
pub const MAX_CIRCUITS_PER_PEER: usize = 16;
/// The longest a circuit lasts.
pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(3600);
/// The most bytes a circuit carries, both directions together (four full sync pages).
pub const MAX_CIRCUIT_BYTES: u64 = 64 << 20;
/// Circuits one peer may open at once, then one more every [`CIRCUIT_REFILL_PER_PEER`].
pub const CIRCUIT_BURST_PER_PEER: u32 = 16;
/// See [`CIRCUIT_BURST_PER_PEER`].
pub const CIRCUIT_REFILL_PER_PEER: Duration = Duration::from_secs(10);
/// Circuits one public address may open at once (a home of many nodes behind one NAT),
/// then one more every [`CIRCUIT_REFILL_PER_IP`].
pub const CIRCUIT_BURST_PER_IP: u32 = 256;
/// See [`CIRCUIT_BURST_PER_IP`].
pub const CIRCUIT_REFILL_PER_IP: Duration = Duration::from_secs(1);
/// Reservations one peer may make at once, then one more every
/// [`RESERVATION_REFILL_PER_PEER`].
pub const RESERVATION_BURST_PER_PEER: u32 = 8;
/// See [`RESERVATION_BURST_PER_PEER`].
pub const RESERVATION_REFILL_PER_PEER: Duration = Duration::from_secs(60);
/// Reservations one public address may make at once, then one more every
/// [`RESERVATION_REFILL_PER_IP`].
pub const RESERVATION_BURST_PER_IP: u32 = 128;
/// See [`RESERVATION_BURST_PER_IP`].
pub const RESERVATION_REFILL_PER_IP: Duration = Duration::from_secs(5);

/// The relay's configuration; loopback and private sources skip the per-address rates
/// when `exempt_private` (tests, LANs), never the per-peer ones.
pub fn config(exempt_private: bool) -> relay::Config {
    let per_peer = |burst, refill| {
        let mut buckets = TokenBuckets::<PeerId>::new(burst, refill);
        Box::new(move |peer: PeerId, _: &Multiaddr, now: Instant| buckets.take(peer, now).is_ok())
            as Box<dyn relay::RateLimiter>
    };
    let per_ip = |burst, refill| {
        let mut buckets = TokenBuckets::<IpAddr>::new(burst, refill);
        Box::new(
            move |_: PeerId, address: &Multiaddr, now: Instant| match crate::server::source_ip(
                address,
            ) {
                Some(ip) if !(exempt_private && is_private(ip)) => buckets.take(ip, now).is_ok(),
                _ => true,
            },
        ) as Box<dyn relay::RateLimiter>
    };
    relay::Config {
        max_reservations: MAX_RESERVATIONS,
        max_reservations_per_peer: MAX_RESERVATIONS_PER_PEER,
        reservation_duration: RESERVATION_DURATION,
        reservation_rate_limiters: vec![
            per_peer(RESERVATION_BURST_PER_PEER, RESERVATION_REFILL_PER_PEER),
            per_ip(RESERVATION_BURST_PER_IP, RESERVATION_REFILL_PER_IP),
        ],
        max_circuits: MAX_CIRCUITS,
        max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: MAX_CIRCUIT_DURATION,
        max_circuit_bytes: MAX_CIRCUIT_BYTES,
        circuit_src_rate_limiters: vec![
            per_peer(CIRCUIT_BURST_PER_PEER, CIRCUIT_REFILL_PER_PEER),
            per_ip(CIRCUIT_BURST_PER_IP, CIRCUIT_REFILL_PER_IP),
        ],
    }
}
