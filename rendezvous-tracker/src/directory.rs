//! The directory: who holds which name on which network, and how to reach them.
//!
//! Plain functions over a store, so the rules are tested without a swarm: a name belongs
//! to the first key that registers it; that key may update its card with a higher
//! sequence number or move to another name (freeing the old one); nobody else can take
//! it.
//!
//! A card expires when its key has not been seen for [`CARD_EXPIRY`]: neither registered
//! nor connected. A node registers at every connection and stays connected while it
//! runs, so a name is only freed long after its owner stopped using it.

use std::ops::Bound;
use std::time::Duration;

use raclette_node::store::{
    ReadTables, Store, StoreError, StoreRead, StoreWrite, Table, WriteTables, decode,
};
use raclette_protocol::{NetworkId, PeerCard, PeerName, PublicKey};

/// How long a card lasts after its key was last seen (registered or connected).
pub const CARD_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A name claimed for the first time (or by a key that had another name).
    New,
    /// The owner's card replaced by a newer one.
    Updated,
    /// The same card again: nothing to tell the others.
    Unchanged,
}

/// Why a registration was refused: one sentence for the node's user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The card is malformed or not signed by its key.
    #[error("invalid card: {0}")]
    InvalidCard(String),
    /// The card's key is not the key of the connection that sent it.
    #[error("the card's key is not the key of the peer that sent it")]
    NotYourKey,
    /// Another key holds the name.
    #[error("name '{0}' is taken by another key")]
    NameTaken(String),
    /// An older card than the stored one.
    #[error("card sequence {found} is not above the stored {stored}")]
    Stale {
        /// The stored card's.
        stored: u64,
        /// The new card's.
        found: u64,
    },
}

fn name_key(network: &NetworkId, name: &PeerName) -> Vec<u8> {
    let mut key = network.as_bytes().to_vec();
    key.extend_from_slice(name.key().as_bytes());
    key
}

fn owner_key(network: &NetworkId, key: &PublicKey) -> Vec<u8> {
    let mut out = network.as_bytes().to_vec();
    out.extend_from_slice(&key.to_bytes());
    out
}

/// The directory over a store.
pub struct Directory<S: Store> {
    store: S,
}

impl<S: Store> Directory<S> {
    /// The directory kept in `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Registers `card`, sent over a connection authenticated as `sender` at `now_ms`.
    pub fn register(
        &self,
        sender: &PublicKey,
        card: &PeerCard,
        now_ms: u64,
    ) -> Result<Result<Registered, Refusal>, StoreError> {
        if let Err(error) = card.check(&card.network) {
            return Ok(Err(Refusal::InvalidCard(error.to_string())));
        }
        if card.key != *sender {
            return Ok(Err(Refusal::NotYourKey));
        }
        let mut writer = self.store.writer()?;
        let key = name_key(&card.network, &card.name);
        let existing: Option<PeerCard> = writer.value(Table::Directory, &key)?;
        let outcome = match &existing {
            Some(stored) if stored.key != card.key => {
                return Ok(Err(Refusal::NameTaken(card.name.to_string())));
            }
            Some(stored) if stored == card => {
                // Nothing to push, but the owner was seen.
                writer.put(
                    Table::DirectorySeen,
                    &owner_key(&card.network, &card.key),
                    &now_ms.to_be_bytes(),
                )?;
                writer.commit()?;
                return Ok(Ok(Registered::Unchanged));
            }
            Some(stored) if card.seq <= stored.seq => {
                return Ok(Err(Refusal::Stale { stored: stored.seq, found: card.seq }));
            }
            Some(_) => Registered::Updated,
            None => Registered::New,
        };
        let owner = owner_key(&card.network, &card.key);
        // A key moving to another name frees the old one; its sequence still rises.
        if let Some(previous) = writer.get(Table::DirectoryKeys, &owner)?
            && previous != card.name.key().as_bytes()
        {
            let mut old = card.network.as_bytes().to_vec();
            old.extend_from_slice(&previous);
            let old_card: Option<PeerCard> = writer.value(Table::Directory, &old)?;
            if let Some(stored) = old_card.filter(|stored| card.seq <= stored.seq) {
                return Ok(Err(Refusal::Stale { stored: stored.seq, found: card.seq }));
            }
            writer.delete(Table::Directory, &old)?;
        }
        writer.put_value(Table::Directory, &key, card)?;
        writer.put(Table::DirectoryKeys, &owner, card.name.key().as_bytes())?;
        writer.put(Table::DirectorySeen, &owner, &now_ms.to_be_bytes())?;
        writer.commit()?;
        Ok(Ok(outcome))
    }

    /// Notes that `key`'s owner on `network` was seen at `now_ms` (its connection ended),
    /// if it holds a card there.
    pub fn touch(
        &self,
        network: &NetworkId,
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let owner = owner_key(network, key);
        let mut writer = self.store.writer()?;
        if writer.get(Table::DirectoryKeys, &owner)?.is_some() {
            writer.put(Table::DirectorySeen, &owner, &now_ms.to_be_bytes())?;
            writer.commit()?;
        }
        Ok(())
    }

    /// Removes the cards whose key was last seen more than `expiry` before `now_ms` and is
    /// not `connected` now, freeing their names; returns them. A card with no record of
    /// when it was seen (kept by an older tracker) gets one now, so it is kept a full
    /// `expiry` more.
    pub fn expire(
        &self,
        now_ms: u64,
        expiry: Duration,
        connected: impl Fn(&PublicKey) -> bool,
    ) -> Result<Vec<PeerCard>, StoreError> {
        let deadline = now_ms.saturating_sub(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX));
        let mut writer = self.store.writer()?;
        let mut owners = Vec::new();
        writer.scan(
            Table::DirectoryKeys,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            &mut |key, name| {
                owners.push((key.to_vec(), name.to_vec()));
                true
            },
        )?;
        let mut removed = Vec::new();
        for (owner, name) in owners {
            let seen = writer.get(Table::DirectorySeen, &owner)?;
            let seen = seen
                .as_deref()
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes);
            let Some(seen) = seen else {
                writer.put(Table::DirectorySeen, &owner, &now_ms.to_be_bytes())?;
                continue;
            };
            let card_key = [&owner[..32], &name[..]].concat();
            let card: Option<PeerCard> = writer.value(Table::Directory, &card_key)?;
            if seen >= deadline || card.as_ref().is_some_and(|card| connected(&card.key)) {
                continue;
            }
            writer.delete(Table::Directory, &card_key)?;
            writer.delete(Table::DirectoryKeys, &owner)?;
            writer.delete(Table::DirectorySeen, &owner)?;
            removed.extend(card);
        }
        writer.commit()?;
        Ok(removed)
    }

    /// Cards of `network` in name order after `after` (a lowercase name), at most `limit`;
    /// and whether more follow.
    pub fn list(
        &self,
        network: &NetworkId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PeerCard>, bool), StoreError> {
        let reader = self.store.reader()?;
        let start = match after {
            Some(name) => {
                let mut key = network.as_bytes().to_vec();
                key.extend_from_slice(name.as_bytes());
                key
            }
            None => network.as_bytes().to_vec(),
        };
        let mut end = network.as_bytes().to_vec();
        end.push(0xff); // names are ASCII, so every name of the network sorts below this
        let lower = if after.is_some() {
            Bound::Excluded(start.as_slice())
        } else {
            Bound::Included(start.as_slice())
        };
        let mut raw = Vec::new();
        reader.scan(
            Table::Directory,
            (lower, Bound::Excluded(end.as_slice())),
            false,
            &mut |_, value| {
                raw.push(value.to_vec());
                raw.len() <= limit
            },
        )?;
        let more = raw.len() > limit;
        raw.truncate(limit);
        let cards = raw
            .iter()
            .map(|bytes| decode(Table::Directory, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((cards, more))
    }

    /// The card holding `name` on `network`.
    pub fn lookup(
        &self,
        network: &NetworkId,
        name: &PeerName,
    ) -> Result<Option<PeerCard>, StoreError> {
        self.store.reader()?.value(Table::Directory, &name_key(network, name))
    }

    /// Every card of every network (for the tracker's API).
    pub fn all(&self) -> Result<Vec<PeerCard>, StoreError> {
        self.store.reader()?.values(Table::Directory)
    }
}

#[cfg(test)]
mod tests {
    use raclette_node::store::MemoryStore;
    use raclette_protocol::Keypair;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes([n; 32]).unwrap()
    }

    fn card(owner: &Keypair, name: &str, seq: u64) -> PeerCard {
        let network = NetworkId::from_bytes([1; 32]);
        PeerCard::sign(
            owner,
            network,
            PeerName::new(name).unwrap(),
            vec![format!("/ip4/10.0.0.{seq}/tcp/1")],
            seq,
        )
    }

    #[test]
    fn given_name_claimed_when_another_key_asks_then_refused_and_owner_can_update() {
        let directory = Directory::new(MemoryStore::new());
        let (alice, mallory) = (key(1), key(2));
        assert_eq!(
            directory.register(&alice.public(), &card(&alice, "alice", 1), NOW).unwrap(),
            Ok(Registered::New)
        );
        assert_eq!(
            directory.register(&mallory.public(), &card(&mallory, "Alice", 5), NOW).unwrap(),
            Err(Refusal::NameTaken("Alice".into()))
        );
        assert_eq!(
            directory.register(&alice.public(), &card(&alice, "alice", 1), NOW).unwrap(),
            Ok(Registered::Unchanged)
        );
        assert_eq!(
            directory.register(&alice.public(), &card(&alice, "alice", 0), NOW).unwrap(),
            Err(Refusal::Stale { stored: 1, found: 0 })
        );
        assert_eq!(
            directory.register(&alice.public(), &card(&alice, "alice", 2), NOW).unwrap(),
            Ok(Registered::Updated)
        );
        let network = NetworkId::from_bytes([1; 32]);
        let stored = directory.lookup(&network, &PeerName::new("ALICE").unwrap()).unwrap().unwrap();
        assert_eq!(stored.addresses, vec!["/ip4/10.0.0.2/tcp/1".to_string()]);
    }

    #[test]
    fn given_forged_or_stolen_card_then_refused() {
        let directory = Directory::new(MemoryStore::new());
        let (alice, mallory) = (key(1), key(2));
        let mut forged = card(&alice, "alice", 1);
        forged.seq = 9;
        assert!(matches!(
            directory.register(&alice.public(), &forged, NOW).unwrap(),
            Err(Refusal::InvalidCard(_))
        ));
        // Mallory replays Alice's genuine card over her own connection.
        assert_eq!(
            directory.register(&mallory.public(), &card(&alice, "alice", 1), NOW).unwrap(),
            Err(Refusal::NotYourKey)
        );
    }

    #[test]
    fn given_key_moving_to_new_name_with_an_older_seq_then_refused() {
        let directory = Directory::new(MemoryStore::new());
        let alice = key(1);
        directory.register(&alice.public(), &card(&alice, "alice", 5), NOW).unwrap().unwrap();
        assert_eq!(
            directory.register(&alice.public(), &card(&alice, "alicia", 4), NOW).unwrap(),
            Err(Refusal::Stale { stored: 5, found: 4 })
        );
    }

    #[test]
    fn given_key_moving_to_new_name_then_old_name_freed() {
        let directory = Directory::new(MemoryStore::new());
        let (alice, bob) = (key(1), key(2));
        directory.register(&alice.public(), &card(&alice, "alice", 1), NOW).unwrap().unwrap();
        directory.register(&alice.public(), &card(&alice, "alicia", 2), NOW).unwrap().unwrap();
        assert_eq!(
            directory.register(&bob.public(), &card(&bob, "alice", 1), NOW).unwrap(),
            Ok(Registered::New)
        );
    }

    #[test]
    fn given_many_cards_when_listing_pages_then_all_in_order_once() {
        let directory = Directory::new(MemoryStore::new());
        let network = NetworkId::from_bytes([1; 32]);
        for i in 1..=25u8 {
            let owner = key(i);
            directory
                .register(&owner.public(), &card(&owner, &format!("peer{i:02}"), 1), NOW)
                .unwrap()
                .unwrap();
        }
        // Another network's card is not listed.
        let other = key(99);
        let foreign = PeerCard::sign(
            &other,
            NetworkId::from_bytes([2; 32]),
            PeerName::new("zed").unwrap(),
            vec![],
            1,
        );
        directory.register(&other.public(), &foreign, NOW).unwrap().unwrap();
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (cards, more) = directory.list(&network, after.as_deref(), 10).unwrap();
            names.extend(cards.iter().map(|c| c.name.to_string()));
            after = cards.last().map(|c| c.name.key());
            if !more {
                break;
            }
        }
        assert_eq!(names, (1..=25).map(|i| format!("peer{i:02}")).collect::<Vec<_>>());
    }

    #[test]
    fn given_a_card_unseen_past_the_expiry_then_removed_and_its_name_freed() {
        let directory = Directory::new(MemoryStore::new());
        let (alice, bob, carol) = (key(1), key(2), key(3));
        directory.register(&alice.public(), &card(&alice, "alice", 1), NOW).unwrap().unwrap();
        directory.register(&bob.public(), &card(&bob, "bob", 1), NOW).unwrap().unwrap();
        directory.register(&carol.public(), &card(&carol, "carol", 1), NOW).unwrap().unwrap();
        let expiry = Duration::from_secs(90 * 24 * 3600);
        let day = 24 * 3600 * 1000;
        // Bob registers again on day 60; carol stays connected all along.
        directory.register(&bob.public(), &card(&bob, "bob", 1), NOW + 60 * day).unwrap().unwrap();
        let connected = |key: &PublicKey| *key == carol.public();
        assert!(directory.expire(NOW + 89 * day, expiry, connected).unwrap().is_empty());
        let removed = directory.expire(NOW + 91 * day, expiry, connected).unwrap();
        assert_eq!(removed.iter().map(|c| c.name.to_string()).collect::<Vec<_>>(), ["alice"]);
        let network = NetworkId::from_bytes([1; 32]);
        let names = |d: &Directory<MemoryStore>| {
            d.list(&network, None, 10)
                .unwrap()
                .0
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&directory), ["bob", "carol"]);
        // Alice's name is free: mallory may take it now, not before.
        let mallory = key(4);
        assert_eq!(
            directory
                .register(&mallory.public(), &card(&mallory, "alice", 1), NOW + 91 * day)
                .unwrap(),
            Ok(Registered::New)
        );
        // Carol disconnects on day 95: her card lasts 90 days from then.
        directory.touch(&network, &carol.public(), NOW + 95 * day).unwrap();
        let nobody = |_: &PublicKey| false;
        assert!(
            directory
                .expire(NOW + 184 * day, expiry, nobody)
                .unwrap()
                .iter()
                .all(|c| c.name.as_str() != "carol")
        );
        let late = directory.expire(NOW + 186 * day, expiry, nobody).unwrap();
        assert!(late.iter().any(|c| c.name.as_str() == "carol"), "{late:?}");
    }
}
