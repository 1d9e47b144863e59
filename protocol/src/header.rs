//! The block header in its fixed 96-byte binary layout.
//!
//! Proof of work is hashed over these bytes, not over CBOR, so every implementation
//! agrees on them byte for byte. The nonce comes last: the first 64 bytes form one
//! SHA-256 block whose state (the midstate) a miner computes once per template, and each
//! nonce then costs one compression for the second block plus one for the outer hash.
//!
//! | offset | size | field        | encoding                        |
//! |-------:|-----:|--------------|---------------------------------|
//! |      0 |    4 | version      | u32 little-endian               |
//! |      4 |    4 | bits         | compact target, u32 LE          |
//! |      8 |    8 | height       | u64 LE                          |
//! |     16 |   32 | prev         | parent block hash               |
//! |     48 |   32 | merkle_root  | root of the transaction ids     |
//! |     80 |    8 | time         | u64 LE, Unix time, milliseconds |
//! |     88 |    8 | nonce        | u64 LE                          |

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{BlockHash, FixedBytes, sha256d};
use crate::pow::CompactTarget;

/// The only header version defined so far.
pub const HEADER_VERSION: u32 = 1;

/// A block header. On the wire (inside CBOR) it is a 96-byte byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHeader {
    /// Header format version; must be [`HEADER_VERSION`].
    pub version: u32,
    /// The target this block's hash must meet, in compact form.
    pub bits: CompactTarget,
    /// Distance from genesis (genesis is 0).
    pub height: u64,
    /// Hash of the parent header. For genesis: the hash of the network parameters.
    pub prev: BlockHash,
    /// Merkle root of the block's transaction ids.
    pub merkle_root: [u8; 32],
    /// When the block was made, Unix time in milliseconds.
    pub time_ms: u64,
    /// The value miners vary.
    pub nonce: u64,
}

impl BlockHeader {
    /// Bytes in the encoded header.
    pub const SIZE: usize = 96;
    /// Offset of the nonce: everything before the first 64 bytes is the midstate.
    pub const NONCE_OFFSET: usize = 88;

    /// The fixed binary layout.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&self.version.to_le_bytes());
        out[4..8].copy_from_slice(&self.bits.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.height.to_le_bytes());
        out[16..48].copy_from_slice(self.prev.as_bytes());
        out[48..80].copy_from_slice(&self.merkle_root);
        out[80..88].copy_from_slice(&self.time_ms.to_le_bytes());
        out[88..96].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }

    /// Reads the fixed layout. Any 96 bytes are a header; validity is for the chain.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let array_at = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("32 bytes") };
        Self {
            version: u32_at(0),
            bits: CompactTarget(u32_at(4)),
            height: u64_at(8),
            prev: BlockHash::from_bytes(array_at(16)),
            merkle_root: array_at(48),
            time_ms: u64_at(80),
            nonce: u64_at(88),
        }
    }

    /// SHA-256d of the 96 bytes.
    pub fn hash(&self) -> BlockHash {
        BlockHash::from_bytes(sha256d(&self.to_bytes()))
    }
}

impl Serialize for BlockHeader {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for BlockHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_bytes(FixedBytes::<{ Self::SIZE }>)?;
        Ok(Self::from_bytes(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn header_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 96)) {
            let bytes: [u8; 96] = bytes.try_into().unwrap();
            prop_assert_eq!(BlockHeader::from_bytes(&bytes).to_bytes(), bytes);
        }
    }

    #[test]
    fn given_header_when_encoded_then_nonce_is_last_eight_bytes() {
        let header = BlockHeader {
            version: 1,
            bits: CompactTarget(0x2000ffff),
            height: 2,
            prev: BlockHash::ZERO,
            merkle_root: [3; 32],
            time_ms: 4,
            nonce: 0x0102030405060708,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[BlockHeader::NONCE_OFFSET..], &0x0102030405060708u64.to_le_bytes());
    }
}
