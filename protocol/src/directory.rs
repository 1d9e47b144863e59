//! The peer directory's records: a name bound to a key, with the addresses to reach it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::to_canonical_cbor;
use crate::hash::{NetworkId, tagged_hash};
use crate::keys::{Keypair, PublicKey, Signature};

/// Domain tag of the peer card signature hash.
pub const PEER_CARD_SIGHASH_TAG: &[u8] = b"raclette/peer-card/v1";
/// The most addresses one card may list: enough for TCP and QUIC on a few interfaces and
/// a relay or two, too few to make every node dial a victim's host many times.
pub const MAX_CARD_ADDRESSES: usize = 8;
/// The longest address (a multiaddr in text form).
pub const MAX_ADDRESS_BYTES: usize = 256;
/// The longest encoding of a valid card (one with the most and longest addresses is
/// under 2,300 bytes): what directory messages are sized by.
pub const MAX_CARD_BYTES: usize = 2560;
/// The longest name.
pub const MAX_NAME_CHARS: usize = 32;

/// A peer's name: 1 to 32 characters from `A-Z a-z 0-9 - _`.
///
/// Names are unique per network without regard to case ("Alice" and "alice" are the same
/// name), so one user cannot pass for another by changing a letter's case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(String);

/// Why text is not a peer name. The text is shown as [`shown`] makes it: it may come
/// from anyone, and the error goes into logs and into answers to peers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than 32 characters.
    #[error("a name is 1 to {MAX_NAME_CHARS} characters, '{0}' is not")]
    Length(String),
    /// A character outside letters, digits, '-' and '_'.
    #[error("a name may use letters, digits, '-' and '_' only, '{0}' does not")]
    Characters(String),
}

/// Characters of a refused name that its error shows, at most.
const SHOWN_CHARS: usize = 40;

/// `text` fit to show in an error: control characters and quotes escaped, and cut after
/// [`SHOWN_CHARS`] characters, so that a peer's 8 KiB name neither floods a log nor
/// writes terminal escapes into it.
fn shown(text: &str) -> String {
    let mut shown: String = text.chars().take(SHOWN_CHARS).flat_map(char::escape_debug).collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        shown.push_str(&format!("... ({} bytes)", text.len()));
    }
    shown
}

impl PeerName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() || name.len() > MAX_NAME_CHARS {
            return Err(NameError::Length(shown(name)));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(NameError::Characters(shown(name)));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on (lowercase).
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerName({})", self.0)
    }
}

impl Serialize for PeerName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A signed statement "this key is called NAME and can be reached at ADDRESSES".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCard {
    /// The network the card is for.
    pub network: NetworkId,
    /// The claimed name.
    pub name: PeerName,
    /// The peer's key (its PeerId and wallet).
    pub key: PublicKey,
    /// Multiaddrs in text form, each ending in `/p2p/<PeerId>`.
    pub addresses: Vec<String>,
    /// Newer cards from the same key carry a higher number (nodes use Unix ms).
    pub seq: u64,
    /// `key`'s signature over [`PeerCard::sighash`].
    pub signature: Signature,
}

#[derive(Serialize)]
struct UnsignedCard<'a> {
    network: &'a NetworkId,
    name: &'a PeerName,
    key: &'a PublicKey,
    addresses: &'a [String],
    seq: u64,
}

/// Why a card is refused regardless of who holds which name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// For another network.
    #[error("card is for network {found}, this is {expected}")]
    WrongNetwork {
        /// This network.
        expected: NetworkId,
        /// The card's.
        found: NetworkId,
    },
    /// The signature does not verify against the card's key.
    #[error("card signature does not verify")]
    BadSignature,
    /// Too many addresses, or one too long.
    #[error(
        "card lists {count} addresses (max {MAX_CARD_ADDRESSES}) or one longer than {MAX_ADDRESS_BYTES} bytes"
    )]
    Addresses {
        /// How many it lists.
        count: usize,
    },
}

impl PeerCard {
    /// Builds and signs a card.
    pub fn sign(
        key: &Keypair,
        network: NetworkId,
        name: PeerName,
        addresses: Vec<String>,
        seq: u64,
    ) -> Self {
        let digest = card_sighash(&UnsignedCard {
            network: &network,
            name: &name,
            key: &key.public(),
            addresses: &addresses,
            seq,
        });
        Self { network, name, key: key.public(), addresses, seq, signature: key.sign(&digest) }
    }

    /// The digest the key signs.
    pub fn sighash(&self) -> [u8; 32] {
        card_sighash(&UnsignedCard {
            network: &self.network,
            name: &self.name,
            key: &self.key,
            addresses: &self.addresses,
            seq: self.seq,
        })
    }

    /// Checks network, addresses and signature.
    pub fn check(&self, network: &NetworkId) -> Result<(), CardError> {
        if self.network != *network {
            return Err(CardError::WrongNetwork { expected: *network, found: self.network });
        }
        if self.addresses.len() > MAX_CARD_ADDRESSES
            || self.addresses.iter().any(|address| address.len() > MAX_ADDRESS_BYTES)
        {
            return Err(CardError::Addresses { count: self.addresses.len() });
        }
        self.key.verify(&self.sighash(), &self.signature).map_err(|_| CardError::BadSignature)
    }
}

fn card_sighash(card: &UnsignedCard<'_>) -> [u8; 32] {
    tagged_hash(PEER_CARD_SIGHASH_TAG, &to_canonical_cbor(card))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::keypair;

    #[test]
    fn given_names_when_validated_then_only_allowed_ones_pass() {
        for good in ["alice", "Bob_2", "x", "a-b", &"n".repeat(32)] {
            assert!(PeerName::new(good).is_ok(), "{good}");
        }
        assert!(matches!(PeerName::new(""), Err(NameError::Length(_))));
        assert!(matches!(PeerName::new(&"n".repeat(33)), Err(NameError::Length(_))));
        for bad in ["al ice", "é", "a.b", "a/b"] {
            assert!(matches!(PeerName::new(bad), Err(NameError::Characters(_))), "{bad}");
        }
        assert_eq!(PeerName::new("Alice").unwrap().key(), PeerName::new("alice").unwrap().key());
    }

    #[test]
    fn given_a_huge_name_with_control_characters_then_its_error_is_short_and_escaped() {
        let hostile = format!("\u{1b}[31mevil\n{}", "x".repeat(8192));
        let message = PeerName::new(&hostile).unwrap_err().to_string();
        assert!(message.len() < 160, "{} bytes: {message}", message.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.contains("(8202 bytes)"), "{message}");
        let message = PeerName::new("al ice").unwrap_err().to_string();
        assert!(message.contains("'al ice' does not"), "an honest typo is shown as typed");
    }

    #[test]
    fn given_card_when_changed_after_signing_then_refused() {
        let network = NetworkId::from_bytes([1; 32]);
        let card = PeerCard::sign(
            &keypair(1),
            network,
            PeerName::new("alice").unwrap(),
            vec!["/ip4/1.2.3.4/tcp/1".into()],
            1,
        );
        assert_eq!(card.check(&network), Ok(()));
        let mut renamed = card.clone();
        renamed.name = PeerName::new("mallory").unwrap();
        assert_eq!(renamed.check(&network), Err(CardError::BadSignature));
        let mut stolen = card.clone();
        stolen.key = keypair(2).public();
        assert_eq!(stolen.check(&network), Err(CardError::BadSignature));
        assert!(matches!(card.check(&NetworkId::ZERO), Err(CardError::WrongNetwork { .. })));
    }

    #[test]
    fn given_the_largest_valid_card_then_it_fits_its_bound_and_one_more_address_is_refused() {
        let network = NetworkId::from_bytes([1; 32]);
        let address = |i: usize| {
            format!(
                "/dns4/{}",
                char::from(b'a' + i as u8).to_string().repeat(MAX_ADDRESS_BYTES - 6)
            )
        };
        let largest = PeerCard::sign(
            &keypair(1),
            network,
            PeerName::new(&"n".repeat(MAX_NAME_CHARS)).unwrap(),
            (0..MAX_CARD_ADDRESSES).map(address).collect(),
            u64::MAX,
        );
        assert!(largest.addresses.iter().all(|a| a.len() == MAX_ADDRESS_BYTES));
        assert_eq!(largest.check(&network), Ok(()));
        let size = to_canonical_cbor(&largest).len();
        assert!(size <= MAX_CARD_BYTES, "{size} bytes");
        let mut addresses = largest.addresses.clone();
        addresses.push("/ip4/1.2.3.4/tcp/1".into());
        let too_many = PeerCard::sign(&keypair(1), network, largest.name.clone(), addresses, 1);
        assert_eq!(too_many.check(&network), Err(CardError::Addresses { count: 9 }));
    }
}
