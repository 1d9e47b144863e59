//! The node's copy of the directory and its conversation with trackers: register a
//! signed card, fetch the directory, take pushed cards, dial the peers it learns, and
//! keep everything in LMDB so the node works from its copy while trackers are down.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::{Multiaddr, PeerId};
use raclette_protocol::directory::MAX_CARD_ADDRESSES;
use raclette_protocol::wire::{
    DirectoryPush, DirectoryPushAck, DirectoryRequest, DirectoryResponse, MAX_CARDS_PER_PAGE,
};
use raclette_protocol::{NetworkId, PeerCard, PublicKey, WireMessage};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{Internal, Node, NodeExit, Notice, PeerView, now_ms};
use crate::backoff::Backoff;
use crate::network::OUTBOUND_TARGET;
use crate::network::identity::{key_of, peer_id_of};
use crate::network::{InboundRequest, Link, Penalty, Protocol, RequestError};
use crate::rate::TokenBuckets;
use crate::store::{Store, StoreError, StoreRead, StoreWrite, Table, WriteTables};

/// What a directory request was, to interpret its answer.
#[derive(Debug, Clone)]
pub(super) enum SentRequest {
    /// Our card.
    Register,
    /// A page of the directory.
    List,
}

/// One peer in the node's copy of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Its latest card.
    pub card: PeerCard,
    /// When it was last connected or announced, Unix ms.
    pub last_seen_ms: u64,
}

/// The node's copy of the directory.
#[derive(Debug)]
pub(super) struct DirectoryBook {
    own: PublicKey,
    entries: HashMap<String, DirectoryEntry>,
    by_key: HashMap<PublicKey, String>,
    unsaved: HashSet<String>,
    removed: HashSet<String>,
    /// Addresses changed since the last registration (or it failed): register again.
    stale_registration: bool,
    /// Where the listing of each tracker's directory stands.
    listings: HashMap<PeerId, Listing>,
    /// When each known peer that is not connected may be dialled again.
    redials: Backoff<PeerId>,
    /// Dials allowed now: a card listing must not make the node open hundreds of
    /// connections in one go.
    dials: TokenBuckets<()>,
    /// Outbound dials not yet answered, with when each began.
    dialing: HashMap<PeerId, Instant>,
    /// The sequence number of our last card: each new one is higher, even if the clock
    /// steps back (trackers refuse a card older than the one they hold).
    last_seq: u64,
    seq_unsaved: bool,
    /// Cards of other keys for a name this node first saw held by another key (another
    /// tracker's word, or a thief's): kept aside and shown, never bound to the name.
    conflicts: HashMap<String, Conflict>,
    /// Whether the node is still taking in its trackers' first listings: two keys for
    /// a name met then were seen at once, and the name alone cannot pick between them.
    settling: bool,
    /// The names bound while settling.
    bound_while_settling: HashSet<String>,
    /// What dialling each known peer takes, worked out once per card: parsing its
    /// addresses and deriving its PeerId cost far more than the pass over the directory
    /// that looks for peers to dial, which runs at every change.
    dial_info: HashMap<PublicKey, DialInfo>,
}

/// Where listing one tracker's directory stands. A listing goes on page by page until
/// done, however often a page fails (a tracker with a thousand nodes joining at once is
/// slow to answer), and is done again now and then: a push lost on the way is made up
/// for within [`RELIST_EVERY`].
#[derive(Debug, Clone)]
struct Listing {
    /// The name of the last card of the last page taken (`None`: from the start).
    after: Option<String>,
    /// A page is being asked for.
    in_flight: bool,
    /// When to ask (again) for the next page, or to list afresh once done.
    next_at: Instant,
    /// Whether the last page came.
    done: bool,
}

/// The wait before asking again for a page of the directory that failed.
const LIST_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often a complete listing is made again.
const RELIST_EVERY: Duration = Duration::from_secs(600);

/// A known peer, ready to dial.
#[derive(Debug, Clone)]
struct DialInfo {
    /// The card it was worked out from.
    seq: u64,
    peer: PeerId,
    addresses: Vec<Multiaddr>,
    /// Its [`address_group`].
    group: String,
}

/// Other keys that claim a name.
#[derive(Debug, Default)]
struct Conflict {
    /// Their newest cards, by key.
    cards: HashMap<PublicKey, PeerCard>,
    /// Their keys in the order they first claimed the name here (a claimant chooses
    /// its own `seq`, so only arrival can rank them).
    arrival: Vec<PublicKey>,
    /// Whether the first of them came with the name's first sighting: then no key is
    /// known to be the right one, and the name alone cannot pick.
    at_first_sight: bool,
}

/// How long after start a tracker's first listing can keep names open to a second key
/// seen with them at once.
const SETTLE_AT_MOST_AFTER: Duration = Duration::from_secs(30);

/// The most addresses of one card a node dials.
const MAX_DIAL_ADDRESSES: usize = 8;
/// The most direct addresses of one card on one host (its IP or DNS name) a node dials:
/// TCP and QUIC (and as many through one relay).
const MAX_DIAL_PER_HOST: usize = 2;

/// The shortest key prefix `send` takes in place of a name.
const MIN_KEY_PREFIX: usize = 6;

/// What taking a card in did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merged {
    /// A new peer, or a newer card of a known one.
    Changed,
    /// Nothing new.
    Unchanged,
    /// Another key already holds the name here: the card is kept aside as a conflict.
    Conflict,
}

/// Where the last card sequence number is kept.
const CARD_SEQ_KEY: &[u8] = b"card_seq";

/// The wait before dialling a known peer again after the first failed try; it doubles
/// with each further failure up to [`REDIAL_AT_MOST_EVERY`].
const REDIAL_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between dials of a known peer that stays unreachable.
const REDIAL_AT_MOST_EVERY: Duration = Duration::from_secs(300);
/// Peers a node may dial at once; then one more every [`DIAL_REFILL`]. Peers over the
/// budget are dialled by the once-a-second redial pass as tokens come back.
pub const DIAL_BURST: u32 = 32;
/// See [`DIAL_BURST`].
pub const DIAL_REFILL: Duration = Duration::from_millis(250);
/// How many times a failed directory request is sent again.
const TRACKER_RETRIES: u32 = 3;
/// A dial not answered within this no longer holds an outbound slot.
const DIAL_PATIENCE: Duration = Duration::from_secs(10);

impl DirectoryBook {
    /// Loads the stored copy.
    pub(super) fn load<R: StoreRead + ?Sized>(
        reader: &R,
        own: PublicKey,
    ) -> Result<Self, StoreError> {
        let mut book = Self {
            own,
            entries: HashMap::new(),
            by_key: HashMap::new(),
            unsaved: HashSet::new(),
            removed: HashSet::new(),
            stale_registration: false,
            listings: HashMap::new(),
            redials: Backoff::new(REDIAL_AFTER, REDIAL_AT_MOST_EVERY),
            dials: TokenBuckets::new(DIAL_BURST, DIAL_REFILL),
            dialing: HashMap::new(),
            last_seq: reader
                .get(Table::Meta, CARD_SEQ_KEY)?
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_be_bytes),
            seq_unsaved: false,
            conflicts: HashMap::new(),
            settling: true,
            bound_while_settling: HashSet::new(),
            dial_info: HashMap::new(),
        };
        for entry in reader.values::<DirectoryEntry>(Table::Directory)? {
            let name = entry.card.name.key();
            book.by_key.insert(entry.card.key, name.clone());
            book.entries.insert(name, entry);
        }
        Ok(book)
    }

    /// The sequence number for a new card of ours: the time, or one more than the last.
    pub(super) fn next_seq(&mut self, now_ms: u64) -> u64 {
        self.last_seq = now_ms.max(self.last_seq + 1);
        self.seq_unsaved = true;
        self.last_seq
    }

    /// The name a key holds.
    pub(super) fn name_of(&self, key: &PublicKey) -> Option<String> {
        self.by_key
            .get(key)
            .and_then(|name| self.entries.get(name))
            .map(|e| e.card.name.to_string())
    }

    /// Every known name, for completion.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.entries.values().map(|e| e.card.name.to_string()).collect();
        names.sort();
        names
    }

    /// The card of the key first seen with `name` (or of the one key starting with
    /// `name`, at least six hex digits), or a sentence saying why there is none: an
    /// unknown name, with the known ones, or a name first seen with two keys at once.
    pub(super) fn resolve(&self, name: &str) -> Result<PeerCard, String> {
        let lower = name.to_ascii_lowercase();
        if let Some(entry) = self.entries.get(&lower) {
            if let Some(conflict) = self.conflicts.get(&lower)
                && conflict.at_first_sight
            {
                let keys: Vec<String> = std::iter::once(&entry.card.key)
                    .chain(conflict.cards.keys())
                    .map(short_key)
                    .collect();
                return Err(format!(
                    "'{name}' was claimed by {} keys at once ({}): send to one by its key, e.g. send {} AMOUNT",
                    keys.len(),
                    keys.join(", "),
                    keys[0]
                ));
            }
            return Ok(entry.card.clone());
        }
        if lower.len() >= MIN_KEY_PREFIX && lower.chars().all(|c| c.is_ascii_hexdigit()) {
            // A key is one peer, however many names it holds or claims.
            let mut matching: Vec<&PeerCard> = self
                .entries
                .values()
                .map(|entry| &entry.card)
                .chain(self.conflicts.values().flat_map(|conflict| conflict.cards.values()))
                .filter(|card| card.key.to_string().starts_with(&lower))
                .collect();
            matching.sort_by_key(|card| card.key.to_string());
            matching.dedup_by_key(|card| card.key);
            match matching.as_slice() {
                [card] => return Ok((*card).clone()),
                [] => {}
                _ => {
                    return Err(format!(
                        "the key prefix {name} matches several peers: type more of it"
                    ));
                }
            }
        }
        let known = self.names();
        Err(if known.is_empty() {
            format!("unknown peer '{name}': no peers known yet")
        } else {
            format!("unknown peer '{name}'; known peers: {}", known.join(", "))
        })
    }

    /// The first listings are in (or overdue): from now on, the key a name was first
    /// seen with keeps it, and a conflicting card is only shown beside it.
    pub(super) fn settle(&mut self) {
        self.settling = false;
        self.bound_while_settling.clear();
    }

    /// The other keys that claim `name`, short.
    pub(super) fn other_claims(&self, name: &str) -> Vec<String> {
        self.conflicts.get(&name.to_ascii_lowercase()).map_or_else(Vec::new, |conflict| {
            let mut keys: Vec<String> = conflict.cards.keys().map(short_key).collect();
            keys.sort();
            keys
        })
    }

    /// Takes a card in (from a tracker). A name stays with the key this node first saw
    /// holding it, whatever a tracker says later; another key's card for it is kept
    /// aside as a conflict, until the holder's own newer card moves it to another name.
    pub(super) fn merge(
        &mut self,
        card: PeerCard,
        network: &NetworkId,
        now: u64,
    ) -> Result<Merged, String> {
        card.check(network).map_err(|error| error.to_string())?;
        if let Some(address) = crate::network::identity::foreign_address(&card) {
            return Err(format!(
                "address {address} does not end in the card key's own /p2p/<PeerId>"
            ));
        }
        if card.key == self.own {
            return Ok(Merged::Unchanged);
        }
        let name = card.name.key();
        // A key's cards are ordered by `seq`, whatever name they carry: an older card
        // (replayed, or from a tracker that missed the update) never replaces a newer.
        if let Some(held) = self.by_key.get(&card.key).and_then(|held| self.entries.get(held))
            && held.card.seq >= card.seq
        {
            return Ok(Merged::Unchanged);
        }
        if let Some(holder) = self.entries.get(&name)
            && holder.card.key != card.key
        {
            let first_sight = self.settling && self.bound_while_settling.contains(&name);
            let conflict = self.conflicts.entry(name).or_default();
            if conflict.cards.is_empty() {
                conflict.at_first_sight = first_sight;
            }
            match conflict.cards.get(&card.key) {
                None => {
                    conflict.arrival.push(card.key);
                    conflict.cards.insert(card.key, card);
                }
                Some(held) if held.seq < card.seq => {
                    conflict.cards.insert(card.key, card);
                }
                Some(_) => {}
            }
            return Ok(Merged::Conflict);
        }
        // The key may have held another name before: trackers let a key move, and the
        // name it leaves goes to whoever else claimed it.
        if let Some(previous) = self.by_key.insert(card.key, name.clone())
            && previous != name
        {
            self.entries.remove(&previous);
            self.removed.insert(previous.clone());
            self.promote_claimant(&previous, now);
        }
        // A key holds one name: bound to this one, it claims no other.
        self.conflicts.retain(|_, conflict| {
            conflict.cards.remove(&card.key);
            conflict.arrival.retain(|key| *key != card.key);
            !conflict.cards.is_empty()
        });
        self.removed.remove(&name);
        if self.settling && !self.entries.contains_key(&name) {
            self.bound_while_settling.insert(name.clone());
        }
        self.entries.insert(name.clone(), DirectoryEntry { card, last_seen_ms: now });
        self.unsaved.insert(name);
        Ok(Merged::Changed)
    }

    /// `name` was left by its holder: the first other key that claimed it (and holds no
    /// other name here) takes it, with its newest card.
    fn promote_claimant(&mut self, name: &str, now: u64) {
        let Some(mut conflict) = self.conflicts.remove(name) else { return };
        let Some(position) = conflict.arrival.iter().position(|key| !self.by_key.contains_key(key))
        else {
            return;
        };
        let key = conflict.arrival.remove(position);
        let Some(winner) = conflict.cards.remove(&key) else { return };
        self.by_key.insert(winner.key, name.to_string());
        self.removed.remove(name);
        self.unsaved.insert(name.to_string());
        self.entries.insert(name.to_string(), DirectoryEntry { card: winner, last_seen_ms: now });
        if !conflict.cards.is_empty() {
            conflict.at_first_sight = false;
            self.conflicts.insert(name.to_string(), conflict);
        }
    }

    /// Records that a peer was connected or disconnected just now.
    pub(super) fn seen(&mut self, peer: &PeerId, now: u64) {
        let Some(key) = key_of(peer) else { return };
        if let Some(name) = self.by_key.get(&key)
            && let Some(entry) = self.entries.get_mut(name)
        {
            entry.last_seen_ms = now;
            self.unsaved.insert(name.clone());
        }
    }

    /// Whether the dial budget allows one more dial at `now` (and spends it).
    pub(super) fn may_dial(&mut self, now: Instant) -> bool {
        self.dials.take((), now).is_ok()
    }

    /// `peer` is connected: once it goes, dial it again without waiting.
    pub(super) fn connected(&mut self, peer: &PeerId) {
        self.redials.forget(peer);
        self.dialing.remove(peer);
    }

    /// Notes that our addresses changed: the card should be registered again.
    pub(super) fn addresses_changed(&mut self) {
        self.stale_registration = true;
    }

    /// Every peer with its connection state, by name. A connected peer is seen `now`.
    pub(super) fn views(&self, connected: &HashMap<PeerId, Link>, now: u64) -> Vec<PeerView> {
        let mut views: Vec<PeerView> = self
            .entries
            .values()
            .map(|entry| {
                let peer = peer_id_of(&entry.card.key);
                let link = connected.get(&peer).copied();
                PeerView {
                    name: entry.card.name.to_string(),
                    key: entry.card.key.to_string(),
                    peer_id: peer.to_string(),
                    connected: link.is_some(),
                    link: link.map(Link::as_str),
                    addresses: entry.card.addresses.clone(),
                    last_seen: if link.is_some() { now } else { entry.last_seen_ms },
                    also_claimed_by: self.other_claims(entry.card.name.as_str()),
                }
            })
            .collect();
        views.sort_by_key(|a| a.name.to_ascii_lowercase());
        views
    }

    /// The addresses to dial `key`'s owner at, if its card is known.
    pub(super) fn addresses_for(&self, key: &PublicKey) -> Vec<Multiaddr> {
        self.cards().find(|card| card.key == *key).map(addresses_of).unwrap_or_default()
    }

    /// How many peers it lists.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Brings [`DirectoryBook::dial_info`] up to date with the cards.
    fn refresh_dial_info(&mut self) {
        let cache = &mut self.dial_info;
        cache.retain(|key, _| self.by_key.contains_key(key));
        for entry in self.entries.values() {
            let card = &entry.card;
            if cache.get(&card.key).is_none_or(|info| info.seq != card.seq) {
                let addresses = addresses_of(card);
                let info = DialInfo {
                    seq: card.seq,
                    peer: peer_id_of(&card.key),
                    group: address_group(&addresses),
                    addresses,
                };
                cache.insert(card.key, info);
            }
        }
    }

    /// Every card, for dialling.
    pub(super) fn cards(&self) -> impl Iterator<Item = &PeerCard> {
        self.entries.values().map(|entry| &entry.card)
    }

    /// Writes what changed.
    pub(super) fn persist<W: WriteTables + ?Sized>(
        &mut self,
        writer: &mut W,
    ) -> Result<(), StoreError> {
        for name in self.removed.drain() {
            writer.delete(Table::Directory, name.as_bytes())?;
        }
        for name in self.unsaved.drain() {
            if let Some(entry) = self.entries.get(&name) {
                writer.put_value(Table::Directory, name.as_bytes(), entry)?;
            }
        }
        if self.seq_unsaved {
            writer.put(Table::Meta, CARD_SEQ_KEY, &self.last_seq.to_be_bytes())?;
            self.seq_unsaved = false;
        }
        Ok(())
    }

    fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty() || !self.removed.is_empty() || self.seq_unsaved
    }
}

/// The first twelve hex digits of a key, as `peers` shows it.
fn short_key(key: &PublicKey) -> String {
    key.to_string()[..12].to_string()
}

/// The addresses our card lists: at most [`MAX_CARD_ADDRESSES`], those most useful to a
/// stranger first (public, then relayed, then private, then loopback), each kind in the
/// order given.
fn card_addresses(addresses: Vec<Multiaddr>) -> Vec<String> {
    let rank = |address: &Multiaddr| {
        if crate::network::is_relayed(address) {
            return 1;
        }
        let ip = address.iter().next().and_then(|first| match first {
            AddrProtocol::Ip4(ip) => Some(std::net::IpAddr::from(ip)),
            AddrProtocol::Ip6(ip) => Some(ip.into()),
            _ => None,
        });
        match ip {
            Some(ip) if ip.is_loopback() => 3,
            Some(ip) if crate::network::is_private(ip) => 2,
            _ => 0,
        }
    };
    let mut addresses: Vec<(u8, String)> = addresses
        .iter()
        .map(|address| (rank(address), address.to_string()))
        .filter(|(_, text)| text.len() <= raclette_protocol::directory::MAX_ADDRESS_BYTES)
        .collect();
    addresses.sort_by_key(|(rank, _)| *rank); // stable: each kind keeps its order
    addresses.into_iter().take(MAX_CARD_ADDRESSES).map(|(_, text)| text).collect()
}

/// The network neighbourhood of a peer, from the first address it is dialled at: the
/// relay for a relayed one, the /16 of a public IPv4 address, the /32 of a public IPv6
/// one, the name of a DNS one, and one group for every loopback and private address.
/// Outbound peers spread across groups, so one operator's block of addresses cannot
/// take every slot.
fn address_group(addresses: &[Multiaddr]) -> String {
    let Some(first) = addresses.first() else { return String::new() };
    let relayed = crate::network::is_relayed(first);
    let group = match first.iter().next() {
        Some(AddrProtocol::Ip4(ip)) if !crate::network::is_private(ip.into()) => {
            let [a, b, ..] = ip.octets();
            format!("{a}.{b}")
        }
        Some(AddrProtocol::Ip6(ip)) if !crate::network::is_private(ip.into()) => {
            let [a, b, ..] = ip.segments();
            format!("{a:x}:{b:x}")
        }
        Some(AddrProtocol::Ip4(_) | AddrProtocol::Ip6(_)) => "local".into(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    if relayed { format!("relay {group}") } else { group }
}

/// The addresses of a card a node dials: those that parse, at most
/// [`MAX_DIAL_ADDRESSES`], and at most [`MAX_DIAL_PER_HOST`] for any one host. A card can
/// name any host with the owner's PeerId at the end; without these caps one card would
/// have every node in the network dial a victim once per address it lists.
fn addresses_of(card: &PeerCard) -> Vec<Multiaddr> {
    let mut per_host: HashMap<String, usize> = HashMap::new(); // "host relayed?" → count
    card.addresses
        .iter()
        .filter_map(|text| text.parse::<Multiaddr>().ok())
        .filter(|address| {
            // A relayed path is counted apart from direct ones: the relay is the host.
            let host = address.iter().next().map(|first| first.to_string()).unwrap_or_default();
            let relayed = crate::network::is_relayed(address);
            let count = per_host.entry(format!("{host} {relayed}")).or_default();
            *count += 1;
            *count <= MAX_DIAL_PER_HOST
        })
        .take(MAX_DIAL_ADDRESSES)
        .collect()
}

/// Sends a directory request to a tracker; one that times out or fails on a live
/// connection is sent again, [`TRACKER_RETRIES`] times at most, waiting a second, then
/// two, then four: a busy tracker (a thousand nodes joining at once) must not leave a
/// node unregistered or with half a listing until it reconnects.
async fn ask_tracker(
    client: &crate::network::Client,
    tracker: PeerId,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    let mut wait = Duration::from_secs(1);
    let mut tries = 0;
    loop {
        let result = client.request(tracker, Protocol::Directory, bytes.clone()).await;
        match result {
            Err(RequestError::Timeout | RequestError::Failed(_)) if tries < TRACKER_RETRIES => {
                tries += 1;
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            result => return result,
        }
    }
}

impl<S: Store> Node<S> {
    /// Keeps [`OUTBOUND_TARGET`] outbound peers (works with no tracker at all): while
    /// fewer are connected or being dialled, dials known peers that are not connected and
    /// whose backoff has passed, in random order, each time from the address group least
    /// represented among the outbound peers, within the dial budget. Every other peer
    /// stays in the directory, reachable on demand.
    pub(super) async fn dial_known_peers(&mut self) {
        let now = Instant::now();
        self.directory.dialing.retain(|_, since| now.duration_since(*since) < DIAL_PATIENCE);
        let busy = self.outbound.len() + self.directory.dialing.len();
        let mut wanted = OUTBOUND_TARGET.saturating_sub(busy);
        if wanted == 0 {
            return;
        }
        let mut used: HashMap<String, usize> = HashMap::new();
        let mut candidates = Vec::new();
        self.directory.refresh_dial_info();
        for info in self.directory.dial_info.values() {
            let peer = info.peer;
            if self.outbound.contains(&peer) {
                *used.entry(info.group.clone()).or_default() += 1;
            } else if !self.connected.contains_key(&peer)
                && !self.directory.dialing.contains_key(&peer)
                && !info.addresses.is_empty()
                && self.directory.redials.due(&peer, now)
            {
                candidates.push((peer, info.group.clone(), info.addresses.clone()));
            }
        }
        candidates.shuffle(&mut rand::thread_rng());
        while wanted > 0 && !candidates.is_empty() {
            let rarest = (0..candidates.len())
                .min_by_key(|i| used.get(&candidates[*i].1).copied().unwrap_or(0))
                .unwrap_or(0);
            if !self.directory.may_dial(now) {
                break; // the rest wait for the next pass
            }
            let (peer, group, addresses) = candidates.swap_remove(rarest);
            *used.entry(group).or_default() += 1;
            self.directory.redials.tried(peer, now);
            self.directory.dialing.insert(peer, now);
            self.client.dial(Some(peer), addresses).await;
            wanted -= 1;
        }
    }

    /// Sends our card to a tracker (then, once registered, asks for the directory). The
    /// addresses come from the network task, so the card is built and sent from a spawned
    /// task: this loop never waits on the network loop, which may itself be waiting for
    /// this loop to take its events.
    pub(super) async fn register_with(&mut self, tracker: PeerId) {
        let seq = self.directory.next_seq(now_ms());
        // Saved before the card leaves: a crash and a clock stepped back must not reuse it.
        self.persist_directory();
        self.directory.stale_registration = false;
        let (client, internal, keypair) =
            (self.client.clone(), self.internal.clone(), self.keypair.clone());
        let (network, name) = (self.chain.network(), self.config.name.clone());
        tokio::spawn(async move {
            let addresses = card_addresses(client.addresses().await);
            let card = PeerCard::sign(&keypair, network, name, addresses, seq);
            let result =
                ask_tracker(&client, tracker, DirectoryRequest::Register(card).encode()).await;
            let _ = internal
                .send(Internal::DirectoryAnswer { tracker, request: SentRequest::Register, result })
                .await;
        });
    }

    fn directory_request(&self, tracker: PeerId, request: SentRequest, message: DirectoryRequest) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = ask_tracker(&client, tracker, message.encode()).await;
            let _ = internal.send(Internal::DirectoryAnswer { tracker, request, result }).await;
        });
    }

    /// Asks `tracker` for the page of its directory after the last one taken.
    fn list_directory(&mut self, tracker: PeerId) {
        let now = Instant::now();
        let listing = self.directory.listings.entry(tracker).or_insert_with(|| Listing {
            after: None,
            in_flight: false,
            next_at: now,
            done: false,
        });
        if listing.done {
            *listing = Listing { after: None, in_flight: false, next_at: now, done: false };
        }
        listing.in_flight = true;
        let request = DirectoryRequest::List {
            network: self.chain.network(),
            after: listing.after.clone(),
            limit: MAX_CARDS_PER_PAGE as u32,
        };
        self.directory_request(tracker, SentRequest::List, request);
    }

    /// Lists the connected trackers' directories that are due: a listing that stopped
    /// on a failed page goes on, a complete one is done again every [`RELIST_EVERY`].
    fn continue_listings(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .directory
            .listings
            .iter()
            .filter(|(tracker, listing)| {
                self.trackers.get(tracker).copied().unwrap_or(false)
                    && !listing.in_flight
                    && now >= listing.next_at
            })
            .map(|(tracker, _)| *tracker)
            .collect();
        for tracker in due {
            self.list_directory(tracker);
        }
    }

    pub(super) async fn on_directory_answer(
        &mut self,
        tracker: PeerId,
        request: SentRequest,
        result: Result<Vec<u8>, RequestError>,
    ) {
        let response = match result.map(|bytes| DirectoryResponse::decode(&bytes)) {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                warn!(%tracker, %error, "malformed answer from the tracker");
                self.directory_request_failed(tracker, request);
                return;
            }
            Err(error) => {
                debug!(%tracker, %error, ?request, "directory request failed");
                self.directory_request_failed(tracker, request);
                return;
            }
        };
        match (request, response) {
            (SentRequest::Register, DirectoryResponse::Registered) => {
                info!(%tracker, name = %self.config.name, "registered with the tracker");
                self.name_refused_by.remove(&tracker);
                self.directory.listings.remove(&tracker); // afresh
                self.list_directory(tracker);
            }
            (SentRequest::Register, DirectoryResponse::NameTaken { name }) => {
                warn!(%tracker, %name, "the name is taken at this tracker");
                self.name_refused_by.insert(tracker);
                // Only when no tracker will have it does the node stop: with one that
                // does, its peers still find it by name.
                if self.trackers.keys().all(|known| self.name_refused_by.contains(known)) {
                    let reason = format!(
                        "the tracker refused the name '{name}': another key holds it; choose another --name"
                    );
                    self.notify(Notice::NameRefused { reason: reason.clone() });
                    self.exit = Some(NodeExit::NameRefused(reason));
                } else {
                    self.notify(Notice::NameContested {
                        reason: format!("tracker {tracker} gives the name '{name}' to another key"),
                    });
                }
            }
            (request, DirectoryResponse::Refused { reason }) => {
                // Not fatal: the node goes on with its own copy of the directory and tries
                // again when the tracker reconnects or its addresses change (or, for a
                // page of the listing, after a wait).
                warn!(%tracker, ?request, %reason, "the tracker refused");
                if let SentRequest::List = request {
                    self.directory_request_failed(tracker, request);
                }
            }
            (SentRequest::List, DirectoryResponse::Cards { cards, more }) => {
                if let Some(listing) = self.directory.listings.get_mut(&tracker) {
                    listing.in_flight = false;
                    if let Some(last) = cards.last() {
                        listing.after = Some(last.name.key());
                    }
                    listing.done = !more;
                    listing.next_at =
                        Instant::now() + if more { Duration::ZERO } else { RELIST_EVERY };
                }
                self.take_cards(cards, false).await;
                if more {
                    self.list_directory(tracker);
                } else {
                    self.first_listings.remove(&tracker);
                    if self.first_listings.is_empty() {
                        self.directory.settle();
                    }
                }
            }
            (request, response) => {
                warn!(%tracker, ?request, ?response, "unexpected answer from the tracker");
                self.directory_request_failed(tracker, request);
            }
        }
    }

    /// A directory request got no usable answer (after its retries): a registration is
    /// sent again at the next housekeeping, a listing goes on after a wait.
    fn directory_request_failed(&mut self, tracker: PeerId, request: SentRequest) {
        match request {
            SentRequest::Register => self.directory.stale_registration = true,
            SentRequest::List => {
                if let Some(listing) = self.directory.listings.get_mut(&tracker) {
                    listing.in_flight = false;
                    listing.next_at = Instant::now() + LIST_RETRY_AFTER;
                }
            }
        }
    }

    /// Cards pushed by a tracker the moment it accepted them.
    pub(super) async fn on_directory_push(&mut self, request: InboundRequest) {
        let accepted = match DirectoryPush::decode(&request.bytes) {
            Ok(push) => self.take_cards(push.cards, true).await,
            Err(error) => {
                self.client
                    .penalize(
                        request.peer,
                        Penalty::LowTolerance,
                        format!("malformed push: {error}"),
                    )
                    .await;
                0
            }
        };
        self.client.respond(request.token, DirectoryPushAck { accepted }.encode()).await;
    }

    /// Merges cards, dials the peers that are new or moved; returns how many changed.
    async fn take_cards(&mut self, cards: Vec<PeerCard>, announce: bool) -> u32 {
        let mut changed = 0;
        let network = self.chain.network();
        for card in cards {
            let name = card.name.to_string();
            if card.name.key() == self.config.name.key() && card.key != self.keypair.public() {
                warn!(%name, key = %card.key, "another key claims this node's own name: ignored");
                continue;
            }
            match self.directory.merge(card.clone(), &network, now_ms()) {
                Ok(Merged::Changed) => {
                    changed += 1;
                    if announce {
                        self.notify(Notice::PeerJoined { name });
                    }
                    let peer = peer_id_of(&card.key);
                    // New or moved: a candidate for an outbound slot at once.
                    self.directory.redials.forget(&peer);
                }
                Ok(Merged::Unchanged) => {}
                Ok(Merged::Conflict) => warn!(
                    %name,
                    key = %card.key,
                    "another key claims a name this node knows with a key seen first: kept aside"
                ),
                Err(error) => warn!(%name, %error, "ignored an invalid card"),
            }
        }
        self.persist_directory();
        if changed > 0 {
            self.dial_known_peers().await;
        }
        changed
    }

    fn persist_directory(&mut self) {
        if !self.directory.has_unsaved() {
            return;
        }
        let result = (|| {
            let mut writer = self.chain.store().writer()?;
            self.directory.persist(&mut writer)?;
            writer.commit()
        })();
        if let Err(error) = result {
            self.fatal(error);
        }
    }

    /// Once a second: register again after an address change; save last-seen times;
    /// dial the known peers that are not connected and whose backoff has passed.
    pub(super) async fn directory_housekeeping(&mut self) {
        if self.started.elapsed() > SETTLE_AT_MOST_AFTER {
            self.directory.settle(); // a tracker that is down does not hold names open
        }
        self.dial_known_peers().await;
        self.continue_listings();
        if self.directory.stale_registration {
            let connected: Vec<PeerId> =
                self.trackers.iter().filter(|(_, up)| **up).map(|(p, _)| *p).collect();
            for tracker in connected {
                self.register_with(tracker).await;
            }
        }
        self.persist_directory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Store};
    use raclette_protocol::{Keypair, PeerName};

    fn card(key: &Keypair, name: &str, seq: u64) -> PeerCard {
        let address = format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer_id_of(&key.public()));
        let name = PeerName::new(name).expect("a valid name");
        PeerCard::sign(key, NetworkId::ZERO, name, vec![address], seq)
    }

    #[test]
    fn given_a_restart_after_the_clock_stepped_back_then_the_card_seq_still_rises() {
        let store = MemoryStore::new();
        let own = Keypair::from_secret_bytes([1; 32]).expect("valid scalar");
        let load = || DirectoryBook::load(&store.reader().expect("reader"), own.public());
        let mut book = load().expect("an empty directory");
        let first = book.next_seq(10_000_000);
        assert!(book.has_unsaved());
        let mut writer = store.writer().expect("writer");
        book.persist(&mut writer).expect("persisted");
        writer.commit().expect("committed");
        assert!(!book.has_unsaved(), "an idle node has nothing to commit");

        // The node restarts with the clock an hour behind.
        let mut again = load().expect("the stored directory");
        assert!(!again.has_unsaved());
        let second = again.next_seq(10_000_000 - 3_600_000);
        assert!(second > first, "{second} after {first}");
    }

    fn empty_book(store: &MemoryStore) -> DirectoryBook {
        let own = Keypair::from_secret_bytes([1; 32]).expect("valid scalar");
        DirectoryBook::load(&store.reader().expect("reader"), own.public())
            .expect("an empty directory")
    }

    fn key(byte: u8) -> Keypair {
        Keypair::from_secret_bytes([byte; 32]).expect("valid scalar")
    }

    #[test]
    fn given_a_known_name_when_another_key_claims_it_then_kept_aside_and_the_first_key_keeps_it() {
        let store = MemoryStore::new();
        let mut book = empty_book(&store);
        let (alice, mallory) = (key(2), key(3));
        let network = NetworkId::ZERO;
        assert_eq!(book.merge(card(&alice, "alice", 5), &network, 1_000), Ok(Merged::Changed));
        book.settle();
        // Mallory registers "alice" at another tracker, later, with a higher seq.
        let later = 61_000;
        assert_eq!(book.merge(card(&mallory, "alice", 9), &network, later), Ok(Merged::Conflict));
        assert_eq!(book.resolve("alice").expect("alice").key, alice.public());
        let mallory_short = mallory.public().to_string()[..12].to_string();
        assert_eq!(book.other_claims("alice"), vec![mallory_short.clone()]);
        let views = book.views(&HashMap::new(), later);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].key, alice.public().to_string());
        assert_eq!(views[0].also_claimed_by, vec![mallory_short.clone()]);
        // Her key prefix still reaches Mallory's card, if the user really means her.
        assert_eq!(book.resolve(&mallory_short).expect("by key").key, mallory.public());
        // A restart keeps the first key: the binding is stored.
        let mut writer = store.writer().expect("writer");
        book.persist(&mut writer).expect("persisted");
        writer.commit().expect("committed");
        let mut again = empty_book(&store);
        assert_eq!(again.merge(card(&mallory, "alice", 9), &network, later), Ok(Merged::Conflict));
        assert!(again.resolve("alice").is_ok(), "a stored name was not seen at once with her");
        assert_eq!(again.resolve("alice").expect("alice").key, alice.public());
    }

    #[test]
    fn given_two_keys_for_a_name_at_first_sight_then_the_name_is_ambiguous_and_a_key_prefix_picks()
    {
        let store = MemoryStore::new();
        let mut book = empty_book(&store);
        let (alice, mallory) = (key(2), key(3));
        let network = NetworkId::ZERO;
        book.merge(card(&mallory, "alice", 9), &network, 1_000).expect("valid");
        book.merge(card(&alice, "alice", 5), &network, 1_500).expect("valid");
        let error = book.resolve("alice").expect_err("ambiguous");
        assert!(error.contains("claimed by 2 keys at once"), "{error}");
        let prefix = &alice.public().to_string()[..10];
        assert_eq!(book.resolve(prefix).expect("by key").key, alice.public());
        assert!(book.resolve("02").is_err(), "too short a prefix is not a key");
    }

    #[test]
    fn given_the_holder_moves_to_another_name_then_the_claimant_gets_the_name() {
        let store = MemoryStore::new();
        let mut book = empty_book(&store);
        let (alice, bob) = (key(2), key(3));
        let network = NetworkId::ZERO;
        book.merge(card(&alice, "alice", 5), &network, 1_000).expect("valid");
        book.merge(card(&bob, "alice", 6), &network, 100_000).expect("valid");
        assert_eq!(book.merge(card(&alice, "alicia", 7), &network, 200_000), Ok(Merged::Changed));
        assert_eq!(book.resolve("alice").expect("alice").key, bob.public());
        assert_eq!(book.resolve("alicia").expect("alicia").key, alice.public());
        assert!(book.other_claims("alice").is_empty());
    }

    #[test]
    fn given_a_claimant_that_took_another_name_then_it_never_holds_two_names() {
        let store = MemoryStore::new();
        let mut book = empty_book(&store);
        let (alice, mallory, bob) = (key(2), key(3), key(4));
        let network = NetworkId::ZERO;
        book.merge(card(&alice, "alice", 5), &network, 1_000).expect("valid");
        book.settle();
        book.merge(card(&mallory, "alice", 9), &network, 2_000).expect("valid");
        book.merge(card(&bob, "alice", u64::MAX), &network, 3_000).expect("valid");
        // Mallory settles for another name: her claim on "alice" is gone.
        assert_eq!(book.merge(card(&mallory, "mallory", 12), &network, 4_000), Ok(Merged::Changed));
        assert_eq!(book.other_claims("alice"), vec![bob.public().to_string()[..12].to_string()]);
        // Alice moves on: bob, the claimant left, takes the name (not by his huge seq:
        // he is the first claimant holding no other name).
        book.merge(card(&alice, "alicia", 13), &network, 5_000).expect("valid");
        assert_eq!(book.resolve("alice").expect("alice").key, bob.public());
        assert_eq!(book.resolve("mallory").expect("mallory").key, mallory.public());
        assert_eq!(book.names(), ["alice", "alicia", "mallory"]);
        // Each key's prefix names one peer.
        let prefix = &mallory.public().to_string()[..8];
        assert_eq!(book.resolve(prefix).expect("by key").key, mallory.public());
    }

    #[test]
    fn given_a_card_naming_a_victim_many_times_then_a_node_dials_it_at_most_twice() {
        let mallory = key(9);
        let peer = peer_id_of(&mallory.public());
        let mut addresses: Vec<String> =
            (1..=14).map(|port| format!("/ip4/203.0.113.9/tcp/{port}/p2p/{peer}")).collect();
        addresses.push(format!("/ip4/198.51.100.4/tcp/4001/p2p/{peer}"));
        addresses.push(format!("/ip4/198.51.100.4/udp/4001/quic-v1/p2p/{peer}"));
        let name = PeerName::new("mallory").expect("a valid name");
        let card = PeerCard::sign(&mallory, NetworkId::ZERO, name, addresses, 1);
        let dialled = addresses_of(&card);
        let on_victim = dialled.iter().filter(|a| a.to_string().contains("203.0.113.9")).count();
        assert_eq!(on_victim, MAX_DIAL_PER_HOST);
        assert_eq!(dialled.len(), 4, "{dialled:?}");
        assert!(dialled.len() <= MAX_DIAL_ADDRESSES);
    }

    #[test]
    fn given_an_older_card_of_a_key_under_another_name_then_the_newer_card_stays() {
        let store = MemoryStore::new();
        let own = Keypair::from_secret_bytes([1; 32]).expect("valid scalar");
        let mut book = DirectoryBook::load(&store.reader().expect("reader"), own.public())
            .expect("an empty directory");
        let alice = Keypair::from_secret_bytes([2; 32]).expect("valid scalar");

        assert_eq!(book.merge(card(&alice, "alice", 5), &NetworkId::ZERO, 0), Ok(Merged::Changed));
        assert_eq!(
            book.merge(card(&alice, "alicia", 3), &NetworkId::ZERO, 0),
            Ok(Merged::Unchanged)
        );
        assert_eq!(
            book.merge(card(&alice, "alice", 5), &NetworkId::ZERO, 0),
            Ok(Merged::Unchanged)
        );
        assert_eq!(book.names(), vec!["alice".to_string()]);

        assert_eq!(book.merge(card(&alice, "alicia", 6), &NetworkId::ZERO, 0), Ok(Merged::Changed));
        assert_eq!(book.names(), vec!["alicia".to_string()], "a key holds one name");
        assert_eq!(book.name_of(&alice.public()).as_deref(), Some("alicia"));
    }

    #[test]
    fn given_more_addresses_than_a_card_holds_then_public_and_relayed_ones_are_kept_first() {
        let peer = PeerId::random();
        let relay = PeerId::random();
        let parse = |text: String| text.parse::<Multiaddr>().expect("a multiaddr");
        let mut given = Vec::new();
        for port in 1..=3 {
            given.push(parse(format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")));
            given.push(parse(format!("/ip4/192.168.1.5/tcp/{port}/p2p/{peer}")));
        }
        given.push(parse(format!("/ip4/198.51.100.9/tcp/7000/p2p/{relay}/p2p-circuit/p2p/{peer}")));
        given.push(parse(format!("/ip4/203.0.113.5/tcp/4001/p2p/{peer}")));
        given.push(parse(format!("/ip6/fd00::5/tcp/4001/p2p/{peer}")));
        given.push(parse(format!("/ip4/203.0.113.5/udp/4001/quic-v1/p2p/{peer}")));
        let listed = card_addresses(given);
        assert_eq!(listed.len(), MAX_CARD_ADDRESSES);
        assert!(listed[0].starts_with("/ip4/203.0.113.5/tcp/4001"), "{listed:?}");
        assert!(listed[1].starts_with("/ip4/203.0.113.5/udp/4001"), "{listed:?}");
        assert!(listed[2].contains("/p2p-circuit/"), "{listed:?}");
        let private =
            listed[3..].iter().filter(|a| a.contains("192.168.") || a.contains("fd00")).count();
        assert_eq!(private, 4, "every private address fits, then loopback: {listed:?}");
        assert!(listed[7].starts_with("/ip4/127.0.0.1/tcp/1/"), "{listed:?}");
    }

    #[test]
    fn given_a_listing_of_many_new_cards_then_the_dial_budget_admits_a_burst_then_a_trickle() {
        let store = MemoryStore::new();
        let mut book = empty_book(&store);
        let now = Instant::now();
        let admitted = (0..100).filter(|_| book.may_dial(now)).count();
        assert_eq!(admitted, DIAL_BURST as usize);
        assert!(!book.may_dial(now + DIAL_REFILL / 2));
        assert!(book.may_dial(now + DIAL_REFILL));
    }
}
