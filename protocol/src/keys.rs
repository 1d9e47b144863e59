//! Account keys and ECDSA signatures over secp256k1 (libsecp256k1 through the
//! `secp256k1` crate).
//!
//! One keypair per node is both its libp2p identity and its wallet key: the PeerId
//! carries the public key, so a peer's name resolves to the key that money is sent to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::FixedBytes;

/// An account: a compressed secp256k1 public key (33 bytes on the wire).
///
/// Holding the parsed key means a decoded key is known to be a valid curve point, and
/// verification does not pay for decompression again; holding the encoding too makes
/// comparing, hashing and encoding keys free. Keys compare and hash by their encoding
/// alone (it determines the parsed form).
#[derive(Clone, Copy)]
pub struct PublicKey {
    compressed: [u8; 33],
    parsed: secp256k1::PublicKey,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.compressed == other.compressed
    }
}

impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.compressed.hash(state);
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.compressed.cmp(&other.compressed)
    }
}

/// The valid keys parsed lately, by their encoding (invalid ones are never kept). At
/// most [`ParsedKeys::CAPACITY`]: when full it starts afresh, so a flood of new keys
/// costs what it would without it.
struct ParsedKeys(std::sync::Mutex<KeyMap>);

type KeyMap = std::collections::HashMap<[u8; PublicKey::SIZE], secp256k1::PublicKey>;

impl ParsedKeys {
    const CAPACITY: usize = 8192;

    fn global() -> &'static Self {
        static KEYS: std::sync::OnceLock<ParsedKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| Self(Default::default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyMap> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, bytes: &[u8; PublicKey::SIZE]) -> Option<secp256k1::PublicKey> {
        self.lock().get(bytes).copied()
    }

    fn insert(&self, bytes: [u8; PublicKey::SIZE], parsed: secp256k1::PublicKey) {
        let mut keys = self.lock();
        if keys.len() >= Self::CAPACITY {
            keys.clear();
        }
        keys.insert(bytes, parsed);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Why bytes or text are not a key or signature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// Not a valid compressed point, secret scalar or compact signature.
    #[error("invalid {what}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
    },
    /// Text that is not hex.
    #[error("{what} is not hex: {source}")]
    Hex {
        /// What was being parsed.
        what: &'static str,
        /// The hex error.
        source: hex::FromHexError,
    },
}

impl PublicKey {
    /// Size of the compressed encoding.
    pub const SIZE: usize = 33;

    /// Parses a compressed key. Decompressing costs a square root, nine tenths of what
    /// decoding a block of transfers costs, and the same few keys come back in every
    /// block and transfer: the keys parsed lately are remembered ([`ParsedKeys`]).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Result<Self, KeyError> {
        if let Some(parsed) = ParsedKeys::global().get(bytes) {
            return Ok(Self { compressed: *bytes, parsed });
        }
        let parsed = secp256k1::PublicKey::from_byte_array_compressed(*bytes)
            .map_err(|_| KeyError::Invalid { what: "public key" })?;
        ParsedKeys::global().insert(*bytes, parsed);
        Ok(Self::from_parsed(parsed))
    }

    fn from_parsed(parsed: secp256k1::PublicKey) -> Self {
        Self { compressed: parsed.serialize(), parsed }
    }

    /// The 33-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.compressed
    }

    /// The first hex characters, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.to_bytes()[..6])
    }

    /// The underlying libsecp256k1 key.
    pub fn inner(&self) -> &secp256k1::PublicKey {
        &self.parsed
    }

    /// Checks `signature` over the 32-byte `digest`. libsecp256k1 only accepts low-S
    /// signatures, so a malleated (high-S) copy of a valid signature fails here.
    pub fn verify(&self, digest: &[u8; 32], signature: &Signature) -> Result<(), SignatureError> {
        secp256k1::ecdsa::verify(
            &signature.0,
            secp256k1::Message::from_digest(*digest),
            &self.parsed,
        )
        .map_err(|_| SignatureError)
    }
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; Self::SIZE];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|source| KeyError::Hex { what: "public key", source })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_bytes(FixedBytes::<{ Self::SIZE }>)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An ECDSA signature in the 64-byte compact form (r ‖ s, big-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(secp256k1::ecdsa::Signature);

impl Signature {
    /// Size of the compact encoding.
    pub const SIZE: usize = 64;

    /// Parses a compact signature. High-S values parse (so they can be reported as an
    /// invalid signature rather than as garbage) but never verify.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Result<Self, KeyError> {
        secp256k1::ecdsa::Signature::from_compact(bytes)
            .map(Self)
            .map_err(|_| KeyError::Invalid { what: "signature" })
    }

    /// The 64-byte compact encoding.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.0.serialize_compact()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_bytes()))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_bytes(FixedBytes::<{ Self::SIZE }>)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// A node's private key with its public key. `Debug` shows only the public half, and
/// nothing in this crate prints the secret.
#[derive(Clone)]
pub struct Keypair {
    secret: secp256k1::SecretKey,
    public: PublicKey,
}

impl Keypair {
    /// A keypair from 32 secret bytes (for example from the node's key file, or from
    /// a random source chosen by the caller).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let secret = secp256k1::SecretKey::from_secret_bytes(bytes)
            .map_err(|_| KeyError::Invalid { what: "secret key" })?;
        let public = PublicKey::from_parsed(secp256k1::PublicKey::from_secret_key(&secret));
        Ok(Self { secret, public })
    }

    /// The 32 secret bytes, for writing the key file. Never log them.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_secret_bytes()
    }

    /// The public key: the account address.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs a 32-byte digest (RFC 6979 nonce, low-S).
    pub fn sign(&self, digest: &[u8; 32]) -> Signature {
        Signature(secp256k1::ecdsa::sign(secp256k1::Message::from_digest(*digest), &self.secret))
    }

    /// The x coordinate of the shared point `secret · their_key` (ECDH).
    pub(crate) fn shared_x(&self, their_key: &PublicKey) -> [u8; 32] {
        let point = secp256k1::ecdh::shared_secret_point(&their_key.parsed, &self.secret);
        let mut x = [0u8; 32];
        x.copy_from_slice(&point[..32]);
        x
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic test keypair: the secret scalar is `n`.
    pub(crate) fn keypair(n: u8) -> Keypair {
        let mut secret = [0u8; 32];
        secret[31] = n;
        Keypair::from_secret_bytes(secret).expect("1..=255 are valid secret scalars")
    }

    #[test]
    fn given_a_key_parsed_again_then_the_remembered_one_is_the_same_and_invalid_bytes_still_fail() {
        let bytes = keypair(11).public().to_bytes();
        let (first, again) = (PublicKey::from_bytes(&bytes), PublicKey::from_bytes(&bytes));
        let (first, again) = (first.unwrap(), again.unwrap());
        assert!(ParsedKeys::global().get(&bytes).is_some(), "remembered");
        assert_eq!(again.inner(), first.inner());
        assert_eq!(again.inner().serialize(), bytes);
        assert_eq!(again.to_bytes(), bytes);
        let invalid = [0x05; 33];
        for _ in 0..2 {
            assert!(PublicKey::from_bytes(&invalid).is_err());
        }
        assert!(ParsedKeys::global().get(&invalid).is_none(), "invalid keys are not kept");
    }

    #[test]
    fn given_more_keys_than_the_memo_holds_then_it_stays_within_its_capacity() {
        let memo = ParsedKeys(Default::default());
        let parsed = *keypair(12).public().inner();
        for n in 0..ParsedKeys::CAPACITY + 100 {
            let mut bytes = [0u8; 33];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            memo.insert(bytes, parsed);
            assert!(memo.len() <= ParsedKeys::CAPACITY);
        }
        assert_eq!(memo.len(), 100, "started afresh once full");
    }

    #[test]
    fn given_signature_when_digest_changes_then_verification_fails() {
        let key = keypair(1);
        let signature = key.sign(&[7; 32]);
        assert_eq!(key.public().verify(&[7; 32], &signature), Ok(()));
        assert_eq!(key.public().verify(&[8; 32], &signature), Err(SignatureError));
        assert_eq!(keypair(2).public().verify(&[7; 32], &signature), Err(SignatureError));
    }

    #[test]
    fn given_high_s_twin_of_valid_signature_when_verified_then_rejected() {
        let key = keypair(3);
        let signature = key.sign(&[9; 32]);
        let mut bytes = signature.to_bytes();
        // s' = n - s: the same signature mathematically, the malleated encoding.
        let order = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .expect("constant hex");
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let diff = order[i] as i16 - bytes[32 + i] as i16 - borrow;
            bytes[32 + i] = diff.rem_euclid(256) as u8;
            borrow = i16::from(diff < 0);
        }
        let high_s = Signature::from_bytes(&bytes).expect("still a well-formed compact signature");
        assert_eq!(key.public().verify(&[9; 32], &high_s), Err(SignatureError));
    }

    #[test]
    fn given_keypair_when_debug_printed_then_secret_absent() {
        let key = keypair(5);
        let printed = format!("{key:?}");
        assert!(!printed.contains(&hex::encode(key.secret_bytes())));
        assert!(printed.contains(&key.public().to_string()));
    }

    #[test]
    fn given_public_key_when_hex_round_trips_then_equal() {
        let public = keypair(4).public();
        assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        assert!("05".repeat(33).parse::<PublicKey>().is_err(), "05 is no point prefix");
    }
}
