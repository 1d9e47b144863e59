//! The node's copy of the directory and its conversation with trackers: register a
//! signed card, fetch the directory, take pushed cards, dial the peers it learns, and
//! keep everything in LMDB so the node works from its copy while trackers are down.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use raclette_protocol::directory::MAX_CARD_ADDRESSES;
use raclette_protocol::wire::{
    DirectoryPush, DirectoryPushAck, DirectoryRequest, DirectoryResponse, MAX_CARDS_PER_PAGE,
};
use raclette_protocol::{NetworkId, PeerCard, PublicKey, WireMessage};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::{Internal, Node, NodeExit, Notice, PeerView, now_ms};
use crate::network::identity::{key_of, peer_id_of};
use crate::network::{InboundRequest, Link, Penalty, Protocol, RequestError};
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
    /// Addresses changed since the last registration.
    stale_registration: bool,
    /// When each known peer that is not connected may be dialled again.
    redials: Backoff,
    /// The sequence number of our last card: each new one is higher, even if the clock
    /// steps back (trackers refuse a card older than the one they hold).
    last_seq: u64,
    seq_unsaved: bool,
}

/// Where the last card sequence number is kept.
const CARD_SEQ_KEY: &[u8] = b"card_seq";

/// The wait before dialling a known peer again after the first failed try; it doubles
/// with each further failure up to [`REDIAL_AT_MOST_EVERY`].
const REDIAL_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between dials of a known peer that stays unreachable.
const REDIAL_AT_MOST_EVERY: Duration = Duration::from_secs(300);

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
            redials: Backoff::new(REDIAL_AFTER, REDIAL_AT_MOST_EVERY),
            last_seq: reader
                .get(Table::Meta, CARD_SEQ_KEY)?
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_be_bytes),
            seq_unsaved: false,
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

    /// The card holding `name`, or a sentence naming the known peers.
    pub(super) fn resolve(&self, name: &str) -> Result<PeerCard, String> {
        if let Some(entry) = self.entries.get(&name.to_ascii_lowercase()) {
            return Ok(entry.card.clone());
        }
        let known = self.names();
        Err(if known.is_empty() {
            format!("unknown peer '{name}': no peers known yet")
        } else {
            format!("unknown peer '{name}'; known peers: {}", known.join(", "))
        })
    }

    /// Takes a card in (from a tracker); returns whether it was new or changed.
    pub(super) fn merge(
        &mut self,
        card: PeerCard,
        network: &NetworkId,
        now: u64,
    ) -> Result<bool, String> {
        card.check(network).map_err(|error| error.to_string())?;
        if let Some(address) = crate::network::identity::foreign_address(&card) {
            return Err(format!(
                "address {address} does not end in the card key's own /p2p/<PeerId>"
            ));
        }
        if card.key == self.own {
            return Ok(false);
        }
        let name = card.name.key();
        // A key's cards are ordered by `seq`, whatever name they carry: an older card
        // (replayed, or from a tracker that missed the update) never replaces a newer.
        if let Some(held) = self.by_key.get(&card.key).and_then(|held| self.entries.get(held))
            && held.card.seq >= card.seq
        {
            return Ok(false);
        }
        // The key may have held another name before: trackers let a key move.
        if let Some(previous) = self.by_key.insert(card.key, name.clone())
            && previous != name
        {
            self.entries.remove(&previous);
            self.removed.insert(previous);
        }
        if let Some(displaced) = self.entries.get(&name).map(|e| e.card.key)
            && displaced != card.key
        {
            self.by_key.remove(&displaced);
        }
        self.removed.remove(&name);
        self.entries.insert(name.clone(), DirectoryEntry { card, last_seen_ms: now });
        self.unsaved.insert(name);
        Ok(true)
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

    /// `peer` is connected: once it goes, dial it again without waiting.
    pub(super) fn connected(&mut self, peer: &PeerId) {
        self.redials.forget(peer);
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
                }
            })
            .collect();
        views.sort_by_key(|a| a.name.to_ascii_lowercase());
        views
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
        Ok(())
    }

    fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty() || !self.removed.is_empty() || self.seq_unsaved
    }
}

/// The multiaddrs of a card that parse.
fn addresses_of(card: &PeerCard) -> Vec<Multiaddr> {
    card.addresses.iter().filter_map(|text| text.parse().ok()).collect()
}

impl Node {
    /// Dials every peer in the stored directory (works with no tracker at all).
    pub(super) async fn dial_known_peers(&mut self) {
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = self
            .directory
            .cards()
            .map(|card| (peer_id_of(&card.key), addresses_of(card)))
            .collect();
        let now = Instant::now();
        for (peer, addresses) in targets {
            if !self.connected.contains_key(&peer)
                && !addresses.is_empty()
                && self.directory.redials.due(&peer, now)
            {
                self.directory.redials.tried(peer, now);
                self.client.dial(Some(peer), addresses).await;
            }
        }
    }

    /// Sends our card to a tracker (then, once registered, asks for the directory). The
    /// addresses come from the network task, so the card is built and sent from a spawned
    /// task: this loop never waits on the network loop, which may itself be waiting for
    /// this loop to take its events.
    pub(super) async fn register_with(&mut self, tracker: PeerId) {
        let seq = self.directory.next_seq(now_ms());
        self.directory.stale_registration = false;
        let (client, internal, keypair) =
            (self.client.clone(), self.internal.clone(), self.keypair.clone());
        let (network, name) = (self.chain.network(), self.config.name.clone());
        tokio::spawn(async move {
            let mut addresses: Vec<String> = client
                .addresses()
                .await
                .iter()
                .map(ToString::to_string)
                .filter(|text| text.len() <= raclette_protocol::directory::MAX_ADDRESS_BYTES)
                .collect();
            addresses.truncate(MAX_CARD_ADDRESSES);
            let card = PeerCard::sign(&keypair, network, name, addresses, seq);
            let result = client
                .request(tracker, Protocol::Directory, DirectoryRequest::Register(card).encode())
                .await;
            let _ = internal
                .send(Internal::DirectoryAnswer { tracker, request: SentRequest::Register, result })
                .await;
        });
    }

    fn directory_request(&self, tracker: PeerId, request: SentRequest, message: DirectoryRequest) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = client.request(tracker, Protocol::Directory, message.encode()).await;
            let _ = internal.send(Internal::DirectoryAnswer { tracker, request, result }).await;
        });
    }

    fn list_directory(&self, tracker: PeerId, after: Option<String>) {
        let request = DirectoryRequest::List {
            network: self.chain.network(),
            after,
            limit: MAX_CARDS_PER_PAGE as u32,
        };
        self.directory_request(tracker, SentRequest::List, request);
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
                return;
            }
            Err(error) => {
                debug!(%tracker, %error, ?request, "directory request failed");
                return;
            }
        };
        match (request, response) {
            (SentRequest::Register, DirectoryResponse::Registered) => {
                info!(%tracker, name = %self.config.name, "registered with the tracker");
                self.list_directory(tracker, None);
            }
            (SentRequest::Register, DirectoryResponse::NameTaken { name }) => {
                warn!(%tracker, %name, "the name is taken");
                let reason = format!(
                    "the tracker refused the name '{name}': another key holds it; choose another --name"
                );
                self.notify(Notice::NameRefused { reason: reason.clone() });
                self.exit = Some(NodeExit::NameRefused(reason));
            }
            (request, DirectoryResponse::Refused { reason }) => {
                // Not fatal: the node goes on with its own copy of the directory and tries
                // again when the tracker reconnects or its addresses change.
                warn!(%tracker, ?request, %reason, "the tracker refused");
            }
            (SentRequest::List, DirectoryResponse::Cards { cards, more }) => {
                let after = cards.last().map(|card| card.name.key());
                self.take_cards(cards, false).await;
                if more {
                    self.list_directory(tracker, after);
                }
            }
            (request, response) => {
                warn!(%tracker, ?request, ?response, "unexpected answer from the tracker")
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
            match self.directory.merge(card.clone(), &network, now_ms()) {
                Ok(true) => {
                    changed += 1;
                    if announce {
                        self.notify(Notice::PeerJoined { name });
                    }
                    let peer = peer_id_of(&card.key);
                    if !self.connected.contains_key(&peer) {
                        self.directory.redials.forget(&peer);
                        self.directory.redials.tried(peer, Instant::now());
                        self.client.dial(Some(peer), addresses_of(&card)).await;
                    }
                }
                Ok(false) => {}
                Err(error) => warn!(%name, %error, "ignored an invalid card"),
            }
        }
        self.persist_directory();
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
        self.dial_known_peers().await;
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
    fn given_an_older_card_of_a_key_under_another_name_then_the_newer_card_stays() {
        let store = MemoryStore::new();
        let own = Keypair::from_secret_bytes([1; 32]).expect("valid scalar");
        let mut book = DirectoryBook::load(&store.reader().expect("reader"), own.public())
            .expect("an empty directory");
        let alice = Keypair::from_secret_bytes([2; 32]).expect("valid scalar");

        assert_eq!(book.merge(card(&alice, "alice", 5), &NetworkId::ZERO, 0), Ok(true));
        assert_eq!(book.merge(card(&alice, "alicia", 3), &NetworkId::ZERO, 0), Ok(false));
        assert_eq!(book.merge(card(&alice, "alice", 5), &NetworkId::ZERO, 0), Ok(false));
        assert_eq!(book.names(), vec!["alice".to_string()]);

        assert_eq!(book.merge(card(&alice, "alicia", 6), &NetworkId::ZERO, 0), Ok(true));
        assert_eq!(book.names(), vec!["alicia".to_string()], "a key holds one name");
        assert_eq!(book.name_of(&alice.public()).as_deref(), Some("alicia"));
    }
}
