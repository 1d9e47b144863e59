//! SHA-256 based hashes and the typed 32-byte digests built on them.
//!
//! Every digest in the protocol has its own type (`BlockHash`, `TxId`, `NetworkId`) so a
//! block hash can never be passed where a transaction id is expected. All of them encode
//! as a 32-byte CBOR byte string and print as lowercase hex in natural byte order.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 applied twice: the hash of blocks and transactions.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    sha256(&sha256(data))
}

/// SHA-256d over a domain tag followed by `data`.
///
/// The same key signs transactions and peer cards; the tag keeps a signature made for one
/// from ever verifying as the other.
pub fn tagged_hash(tag: &[u8], data: &[u8]) -> [u8; 32] {
    let mut first = Sha256::new();
    first.update(tag);
    first.update(data);
    sha256(&first.finalize())
}

/// Why a hex string is not a 32-byte digest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseHashError {
    /// Not 64 characters.
    #[error("a hash is 64 hex characters, got {0}")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a hash is hex: {0}")]
    Hex(#[from] hex::FromHexError),
}

/// Defines a 32-byte digest newtype with hex display, parsing and byte-string serde.
macro_rules! hash_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The all-zero digest.
            pub const ZERO: Self = Self([0; 32]);

            /// Wraps raw digest bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw digest bytes.
            pub const fn to_bytes(self) -> [u8; 32] {
                self.0
            }

            /// The raw digest bytes, borrowed.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first `n` hex characters, for logs and tables.
            pub fn short(&self) -> String {
                let mut text = self.to_string();
                text.truncate(12);
                text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseHashError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 64 {
                    return Err(ParseHashError::Length(s.len()));
                }
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes)?;
                Ok(Self(bytes))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_bytes(FixedBytes::<32>).map(Self)
            }
        }
    };
}

hash_type!(
    /// The SHA-256d hash of a block header's fixed 96-byte layout.
    BlockHash
);
hash_type!(
    /// The SHA-256d hash of a transaction's canonical encoding, signature included.
    TxId
);
hash_type!(
    /// The hash of a network's genesis block. Every transaction, gossip topic and
    /// handshake names it, so nodes of different networks refuse each other.
    NetworkId
);

impl From<BlockHash> for NetworkId {
    fn from(genesis: BlockHash) -> Self {
        Self(genesis.0)
    }
}

/// Serde visitor for a byte string of exactly `N` bytes.
pub(crate) struct FixedBytes<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for FixedBytes<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of {N} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_known_input_when_hashing_twice_then_matches_reference() {
        // SHA-256d("hello") as published for Bitcoin tooling.
        assert_eq!(
            hex::encode(sha256d(b"hello")),
            "9595c9df90075148eb06860365df33584b75bff782a510c6cd4883a419833d50"
        );
    }

    #[test]
    fn given_hash_when_displayed_and_parsed_then_round_trips() {
        let hash = BlockHash::from_bytes(sha256(b"x"));
        assert_eq!(hash.to_string().parse::<BlockHash>(), Ok(hash));
        assert_eq!("abc".parse::<TxId>(), Err(ParseHashError::Length(3)));
        assert!("zz".repeat(32).parse::<TxId>().is_err());
    }
}
