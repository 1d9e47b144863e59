//! End-to-end encryption of the text a transaction carries.
//!
//! Only the sender and the receiver can read it: both derive the same key from ECDH of
//! their own secret and the other's public key. The scheme:
//!
//! 1. `x` = x coordinate of `sender_secret · receiver_public` (= `receiver_secret ·
//!    sender_public`), 32 bytes big-endian.
//! 2. `okm` = HKDF-SHA256(salt = a fresh random 16-byte salt, ikm = `x`,
//!    info = `"raclette/message/v1"` ‖ sender key (33 bytes) ‖ receiver key (33 bytes)),
//!    44 bytes: a 32-byte key then a 12-byte nonce.
//! 3. ChaCha20-Poly1305 with that key and nonce, no associated data. The output is the
//!    ciphertext followed by the 16-byte tag, so any change to it is detected.
//!
//! A fresh salt gives a fresh key and nonce per message. The transaction signature covers
//! salt and ciphertext, so nobody else can swap them either.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::{Keypair, PublicKey};

/// The longest message text, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bytes the AEAD tag adds.
pub const TAG_BYTES: usize = 16;
/// The longest ciphertext a valid transaction may carry.
pub const MAX_CIPHERTEXT_BYTES: usize = MAX_MESSAGE_BYTES + TAG_BYTES;
/// Bytes of random salt per message.
pub const SALT_BYTES: usize = 16;

const INFO_LABEL: &[u8] = b"raclette/message/v1";

/// A message as carried in a transaction: the salt and the ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedMessage {
    /// Random salt for the key derivation.
    #[serde(with = "serde_bytes")]
    pub salt: [u8; SALT_BYTES],
    /// ChaCha20-Poly1305 output: ciphertext then the 16-byte tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Why a message could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    /// The text is longer than the protocol allows.
    #[error("message is {len} bytes, the limit is {MAX_MESSAGE_BYTES}")]
    TooLong {
        /// Length of the text.
        len: usize,
    },
    /// This key is neither the sender's nor the receiver's.
    #[error("only the sender and the receiver can read this message")]
    NotAParty,
    /// Wrong key, or the salt or ciphertext was changed.
    #[error("message does not decrypt: wrong key or tampered ciphertext")]
    Tampered,
}

fn cipher(
    x: &[u8; 32],
    salt: &[u8; SALT_BYTES],
    sender: &PublicKey,
    receiver: &PublicKey,
) -> (ChaCha20Poly1305, [u8; 12]) {
    let mut info = Vec::with_capacity(INFO_LABEL.len() + 2 * PublicKey::SIZE);
    info.extend_from_slice(INFO_LABEL);
    info.extend_from_slice(&sender.to_bytes());
    info.extend_from_slice(&receiver.to_bytes());
    let mut okm = [0u8; 44];
    Hkdf::<Sha256>::new(Some(salt), x)
        .expand(&info, &mut okm)
        .expect("44 bytes is far below HKDF-SHA256's 8160-byte limit");
    let key = Key::from_slice(&okm[..32]);
    let nonce: [u8; 12] = okm[32..].try_into().expect("12 bytes");
    (ChaCha20Poly1305::new(key), nonce)
}

/// Encrypts `text` from `sender` to `receiver` with the caller's random `salt`.
pub fn encrypt(
    sender: &Keypair,
    receiver: &PublicKey,
    salt: [u8; SALT_BYTES],
    text: &[u8],
) -> Result<EncryptedMessage, EncryptionError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(EncryptionError::TooLong { len: text.len() });
    }
    let (aead, nonce) = cipher(&sender.shared_x(receiver), &salt, &sender.public(), receiver);
    let ciphertext = aead
        .encrypt(Nonce::from_slice(&nonce), text)
        .expect("ChaCha20-Poly1305 encryption of a bounded buffer cannot fail");
    Ok(EncryptedMessage { salt, ciphertext })
}

/// Decrypts a message between `sender` and `receiver` with `own`, which must be one of
/// them (the sender can read what it sent).
pub fn decrypt(
    own: &Keypair,
    sender: &PublicKey,
    receiver: &PublicKey,
    message: &EncryptedMessage,
) -> Result<Vec<u8>, EncryptionError> {
    let counterparty = if own.public() == *sender {
        receiver
    } else if own.public() == *receiver {
        sender
    } else {
        return Err(EncryptionError::NotAParty);
    };
    let (aead, nonce) = cipher(&own.shared_x(counterparty), &message.salt, sender, receiver);
    aead.decrypt(Nonce::from_slice(&nonce), message.ciphertext.as_slice())
        .map_err(|_| EncryptionError::Tampered)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::keys::tests::keypair;

    #[test]
    fn given_message_when_sender_or_receiver_decrypts_then_text_returns() {
        let (alice, bob) = (keypair(1), keypair(2));
        let sealed = encrypt(&alice, &bob.public(), [9; 16], b"hello bob").unwrap();
        assert_eq!(decrypt(&bob, &alice.public(), &bob.public(), &sealed).unwrap(), b"hello bob");
        assert_eq!(decrypt(&alice, &alice.public(), &bob.public(), &sealed).unwrap(), b"hello bob");
    }

    #[test]
    fn given_message_when_too_long_then_refused() {
        let long = vec![b'a'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            encrypt(&keypair(1), &keypair(2).public(), [0; 16], &long),
            Err(EncryptionError::TooLong { len: MAX_MESSAGE_BYTES + 1 })
        );
    }

    proptest! {
        #[test]
        fn third_key_cannot_decrypt(text in proptest::collection::vec(any::<u8>(), 0..200), salt in any::<[u8; 16]>(), third in 3u8..=255) {
            let (alice, bob, carol) = (keypair(1), keypair(2), keypair(third));
            let sealed = encrypt(&alice, &bob.public(), salt, &text).unwrap();
            prop_assert_eq!(decrypt(&carol, &alice.public(), &bob.public(), &sealed), Err(EncryptionError::NotAParty));
            // Carol pretending to be the receiver derives another key and fails the tag.
            prop_assert_eq!(decrypt(&carol, &alice.public(), &carol.public(), &sealed), Err(EncryptionError::Tampered));
        }

        #[test]
        fn any_change_to_ciphertext_or_salt_is_detected(text in proptest::collection::vec(any::<u8>(), 0..100), index in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (alice, bob) = (keypair(1), keypair(2));
            let sealed = encrypt(&alice, &bob.public(), [5; 16], &text).unwrap();
            let mut tampered = sealed.clone();
            let total = tampered.salt.len() + tampered.ciphertext.len();
            let at = index.index(total);
            if at < SALT_BYTES {
                tampered.salt[at] ^= 1 << bit;
            } else {
                tampered.ciphertext[at - SALT_BYTES] ^= 1 << bit;
            }
            prop_assert_eq!(decrypt(&bob, &alice.public(), &bob.public(), &tampered), Err(EncryptionError::Tampered));
        }
    }
}
