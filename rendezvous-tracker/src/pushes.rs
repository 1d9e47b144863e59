//! Which cards each connected node still has to be pushed, with no I/O.
//!
//! Every accepted card gets a change number. A node's cursor is the last change it has
//! acknowledged; it starts at the latest change when the node registers, since the
//! listing it asks for next holds everything before. A node has at most one push in
//! flight, of up to [`MAX_CARDS_PER_PAGE`] cards: cards accepted meanwhile wait for the
//! next one. So a thousand nodes joining at once cost each node a few pushes, not a
//! thousand, and a push that fails is sent again (after [`RETRY_AFTER`]) instead of lost.
//! Memory is one card per key, plus a cursor per connected node.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use raclette_node::network::identity::key_of;
use raclette_protocol::directory::PeerCard;
use raclette_protocol::wire::MAX_CARDS_PER_PAGE;
use raclette_protocol::{NetworkId, PublicKey};

/// The wait before pushing again to a node whose last push failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The pushes owed to connected nodes. `Id` names a push in flight (libp2p's request
/// id in the tracker), so that a late answer to an earlier connection's push is told
/// apart.
#[derive(Debug)]
pub struct Pushes<Id> {
    /// The latest card of each key, by its change number.
    changes: BTreeMap<u64, PeerCard>,
    /// Each key's change number in `changes`.
    change_of: HashMap<PublicKey, u64>,
    /// The last change number given.
    latest: u64,
    targets: HashMap<PeerId, Target<Id>>,
}

#[derive(Debug)]
struct Target<Id> {
    network: NetworkId,
    /// Its key: its own card is not pushed back to it.
    own: Option<PublicKey>,
    /// Changes up to this one were delivered (or listed).
    cursor: u64,
    /// The push on its way, and the last change it carries.
    in_flight: Option<(Id, u64)>,
    /// No push before this, after a failure.
    not_before: Option<Instant>,
}

impl<Id: PartialEq> Default for Pushes<Id> {
    fn default() -> Self {
        Self {
            changes: BTreeMap::new(),
            change_of: HashMap::new(),
            latest: 0,
            targets: HashMap::new(),
        }
    }
}

impl<Id: PartialEq> Pushes<Id> {
    /// `peer` registered for `network`: it is pushed the cards accepted from now on (the
    /// listing it asks for next has the rest). A node already known keeps its cursor.
    pub fn joined(&mut self, peer: PeerId, network: NetworkId) {
        let fresh = || Target {
            network,
            own: key_of(&peer),
            cursor: self.latest,
            in_flight: None,
            not_before: None,
        };
        match self.targets.get_mut(&peer) {
            Some(target) if target.network == network => {}
            // New, or moved to another network: the old one's changes are not its business.
            _ => {
                let target = fresh();
                self.targets.insert(peer, target);
            }
        }
    }

    /// `peer` disconnected: nothing more is owed to it.
    pub fn left(&mut self, peer: &PeerId) {
        self.targets.remove(peer);
    }

    /// A card was accepted: every other node of its network is owed it.
    pub fn accepted(&mut self, card: PeerCard) {
        self.latest += 1;
        if let Some(previous) = self.change_of.insert(card.key, self.latest) {
            self.changes.remove(&previous);
        }
        self.changes.insert(self.latest, card);
    }

    /// A card was removed from the directory (expired): it is no longer pushed.
    pub fn removed(&mut self, key: &PublicKey) {
        if let Some(change) = self.change_of.remove(key) {
            self.changes.remove(&change);
        }
    }

    /// The pushes to send now: to every node with no push in flight, not waiting after a
    /// failure, that is owed cards. Each is marked in flight once `sent` names it.
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<PeerCard>, u64)> {
        let mut due = Vec::new();
        for (peer, target) in &mut self.targets {
            if target.in_flight.is_some() || target.not_before.is_some_and(|at| now < at) {
                continue;
            }
            let mut cards = Vec::new();
            let mut last = target.cursor;
            for (change, card) in self.changes.range(target.cursor + 1..) {
                if cards.len() == MAX_CARDS_PER_PAGE {
                    break;
                }
                last = *change;
                if card.network == target.network && Some(card.key) != target.own {
                    cards.push(card.clone());
                }
            }
            if cards.is_empty() {
                target.cursor = last; // only other networks' or its own: nothing owed
            } else {
                due.push((*peer, cards, last));
            }
        }
        due
    }

    /// The push to `peer` up to change `last` (from [`Pushes::due`]) left as `id`.
    pub fn sent(&mut self, peer: &PeerId, id: Id, last: u64) {
        if let Some(target) = self.targets.get_mut(peer) {
            target.in_flight = Some((id, last));
        }
    }

    /// `peer` acknowledged push `id`.
    pub fn delivered(&mut self, peer: &PeerId, id: &Id) {
        if let Some(target) = self.targets.get_mut(peer)
            && let Some((_, last)) = target.in_flight.take_if(|(sent, _)| sent == id)
        {
            target.cursor = last;
            target.not_before = None;
        }
    }

    /// Push `id` to `peer` failed: its cards go again after [`RETRY_AFTER`].
    pub fn failed(&mut self, peer: &PeerId, id: &Id, now: Instant) {
        if let Some(target) = self.targets.get_mut(peer)
            && target.in_flight.take_if(|(sent, _)| sent == id).is_some()
        {
            target.not_before = Some(now + RETRY_AFTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raclette_protocol::{Keypair, PeerName};

    fn key(i: u64) -> Keypair {
        let mut secret = [9u8; 32];
        secret[..8].copy_from_slice(&(i + 1).to_be_bytes());
        Keypair::from_secret_bytes(secret).expect("a valid scalar")
    }

    fn peer(i: u64) -> PeerId {
        raclette_node::network::identity::peer_id_of(&key(i).public())
    }

    fn card(i: u64, seq: u64) -> PeerCard {
        card_in(i, seq, dev())
    }

    fn card_in(i: u64, seq: u64, network: NetworkId) -> PeerCard {
        let name = PeerName::new(&format!("n{i}")).expect("a valid name");
        PeerCard::sign(&key(i), network, name, Vec::new(), seq)
    }

    fn dev() -> NetworkId {
        NetworkId::from_bytes([1; 32])
    }

    fn names(cards: &[PeerCard]) -> Vec<String> {
        let mut names: Vec<String> = cards.iter().map(|card| card.name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn given_many_cards_accepted_while_a_push_is_in_flight_then_they_go_together_in_the_next() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.joined(peer(0), dev());
        pushes.accepted(card(1, 1));
        let due = pushes.due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(names(&due[0].1), ["n1"]);
        pushes.sent(&peer(0), 7, due[0].2);
        for i in 2..300 {
            pushes.accepted(card(i, 1));
            assert!(pushes.due(now).is_empty(), "one push in flight at a time");
        }
        pushes.delivered(&peer(0), &7);
        let due = pushes.due(now);
        assert_eq!(due[0].1.len(), MAX_CARDS_PER_PAGE, "a push holds at most a page");
        pushes.sent(&peer(0), 8, due[0].2);
        pushes.delivered(&peer(0), &8);
        let due = pushes.due(now);
        assert_eq!(due[0].1.len(), 298 - MAX_CARDS_PER_PAGE, "then the rest");
        pushes.sent(&peer(0), 9, due[0].2);
        pushes.delivered(&peer(0), &9);
        assert!(pushes.due(now).is_empty(), "all delivered");
    }

    #[test]
    fn given_a_failed_push_then_its_cards_go_again_after_the_wait() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.joined(peer(0), dev());
        pushes.accepted(card(1, 1));
        let due = pushes.due(now);
        pushes.sent(&peer(0), 1, due[0].2);
        pushes.failed(&peer(0), &1, now);
        assert!(pushes.due(now).is_empty(), "not at once");
        let due = pushes.due(now + RETRY_AFTER);
        assert_eq!(names(&due[0].1), ["n1"], "the same card again");
    }

    #[test]
    fn given_a_node_then_never_pushed_its_own_card_cards_before_it_joined_or_other_networks() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.accepted(card(1, 1)); // before it joined: in its listing
        pushes.joined(peer(0), dev());
        pushes.accepted(card(0, 1)); // its own
        pushes.accepted(card_in(2, 1, NetworkId::from_bytes([2; 32])));
        assert!(pushes.due(now).is_empty());
        pushes.accepted(card(3, 1));
        assert_eq!(names(&pushes.due(now)[0].1), ["n3"]);
    }

    #[test]
    fn given_a_key_that_changes_its_card_twice_then_only_its_newest_card_is_pushed() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.joined(peer(0), dev());
        pushes.accepted(card(1, 1));
        pushes.accepted(card(1, 2));
        let due = pushes.due(now);
        assert_eq!(due[0].1.len(), 1);
        assert_eq!(due[0].1[0].seq, 2);
    }

    #[test]
    fn given_an_answer_to_an_earlier_connections_push_then_the_new_push_stays_in_flight() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.joined(peer(0), dev());
        pushes.accepted(card(1, 1));
        let last = pushes.due(now)[0].2;
        pushes.sent(&peer(0), 1, last);
        pushes.left(&peer(0));
        pushes.joined(peer(0), dev());
        pushes.accepted(card(2, 1));
        let last = pushes.due(now)[0].2;
        pushes.sent(&peer(0), 2, last);
        pushes.failed(&peer(0), &1, now); // the old push's failure arrives late
        assert!(pushes.due(now).is_empty(), "push 2 is still in flight");
        pushes.delivered(&peer(0), &2);
        assert!(pushes.due(now).is_empty());
    }

    #[test]
    fn given_an_expired_card_then_it_is_not_pushed() {
        let now = Instant::now();
        let mut pushes = Pushes::<u32>::default();
        pushes.joined(peer(0), dev());
        pushes.accepted(card(1, 1));
        pushes.removed(&key(1).public());
        assert!(pushes.due(now).is_empty());
    }
}
