//! Canonical CBOR: one encoding per value, decoded with a size limit into typed errors.
//!
//! Values are encoded with cbor4ii's serde support (structs as maps with text keys in
//! declaration order, enums as single-entry maps, byte strings for keys and hashes,
//! shortest-form integers and lengths). Decoding accepts only that exact encoding: after
//! decoding, the value is encoded again and the bytes must match. So an id computed from
//! received bytes always equals the id the sender computed, and no field can be
//! smuggled in through an unknown key, a duplicate key or a long-form integer.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why received bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than this message type may be; not even parsed.
    #[error("message is {len} bytes, the limit is {max}")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// The limit for this message type.
        max: usize,
    },
    /// Not CBOR of the expected shape, or a field fails its own check (a public key
    /// that is not a curve point, a name with forbidden characters, ...).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Valid CBOR for the type, but not its canonical encoding (extra bytes, unknown
    /// or reordered keys, non-shortest integers).
    #[error("message is not canonically encoded")]
    NonCanonical,
}

/// Encodes `value` as canonical CBOR.
pub fn to_canonical_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value)
        .expect("encoding our own types into a Vec only fails when memory runs out")
}

/// Whether `bytes` stop inside a CBOR data item (nothing at all included): what arrives
/// when the stream a message came on ends before the message does.
///
/// A stream's reader cannot tell a sender that closed its stream from one that dropped it
/// half-way (timed out, or lost its connection): yamux reads a reset stream as a plain
/// end. Bytes cut short are therefore no proof of a malformed message.
pub fn is_cut_short(bytes: &[u8]) -> bool {
    use cbor4ii::core::dec::{Decode, IgnoredAny};
    use cbor4ii::core::error::DecodeError as Core;
    use cbor4ii::core::utils::SliceReader;
    matches!(IgnoredAny::decode(&mut SliceReader::new(bytes)), Err(Core::Eof { .. }))
}

/// Decodes canonical CBOR of at most `max` bytes.
pub fn decode_canonical<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversized { len: bytes.len(), max });
    }
    let value: T = cbor4ii::serde::from_slice(bytes)
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if to_canonical_cbor(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_every_prefix_of_a_message_then_only_the_whole_is_not_cut_short() {
        let params = crate::NetworkParams::dev();
        let block = to_canonical_cbor(&params.genesis());
        assert!(!is_cut_short(&block));
        for len in 0..block.len() {
            assert!(is_cut_short(&block[..len]), "prefix of {len} of {} bytes", block.len());
        }
    }

    #[test]
    fn given_whole_items_that_are_no_message_then_they_are_not_cut_short() {
        // Wrong shape, trailing bytes, a reserved byte: malformed, but not cut short.
        for bytes in [&[0x01][..], &[0x01, 0x02], &[0xff], &[0x1c]] {
            assert!(!is_cut_short(bytes), "{bytes:02x?}");
        }
    }
}
