//! Proof-of-work arithmetic: 256-bit targets, their compact header form, work, and the
//! difficulty retarget.
//!
//! A header hash meets a target when the hash, read as a big-endian 256-bit integer, is
//! at most the target. Smaller targets are harder. The compact form is Bitcoin's `nBits`
//! (one exponent byte, three mantissa bytes); decoding rejects the negative and overflow
//! encodings Bitcoin tolerates, so every accepted compact value means one target.

use std::fmt;
use std::ops::Add;

use ruint::aliases::U256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{BlockHash, FixedBytes};

/// A target in the 4-byte compact form stored in headers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompactTarget(pub u32);

/// Why a compact value is not a usable target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactTargetError {
    /// The mantissa's sign bit is set.
    #[error("compact target {0:#010x} is negative")]
    Negative(u32),
    /// The value does not fit in 256 bits.
    #[error("compact target {0:#010x} overflows 256 bits")]
    Overflow(u32),
    /// The target is zero: no hash could meet it.
    #[error("compact target {0:#010x} is zero")]
    Zero(u32),
}

impl CompactTarget {
    /// The full target this compact value stands for.
    pub fn to_target(self) -> Result<Target, CompactTargetError> {
        let bits = self.0;
        let exponent = bits >> 24;
        let mantissa = bits & 0x007f_ffff;
        if bits & 0x0080_0000 != 0 {
            return Err(CompactTargetError::Negative(bits));
        }
        let value = if exponent <= 3 {
            U256::from(mantissa >> (8 * (3 - exponent)))
        } else {
            let shift = 8 * (exponent as usize - 3);
            let value = U256::from(mantissa);
            if shift >= 256 || value.bit_len() + shift > 256 {
                return Err(CompactTargetError::Overflow(bits));
            }
            value << shift
        };
        if value.is_zero() {
            return Err(CompactTargetError::Zero(bits));
        }
        Ok(Target(value))
    }
}

impl fmt::Display for CompactTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A 256-bit proof-of-work target.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(U256);

impl Target {
    /// The easiest possible target: every hash meets it.
    pub const MAX: Self = Self(U256::MAX);

    /// A target from its 32 big-endian bytes.
    pub fn from_be_bytes(bytes: [u8; 32]) -> Self {
        Self(U256::from_be_bytes(bytes))
    }

    /// The 32 big-endian bytes.
    pub fn to_be_bytes(self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// The target `2^256 / 2^bits`, i.e. about `2^bits` hashes expected per block.
    pub fn from_expected_hashes_log2(bits: u32) -> Self {
        assert!((1..=255).contains(&bits), "expected hashes must be 2^1..=2^255");
        Self(U256::MAX >> bits as usize)
    }

    /// Whether `hash`, read as a big-endian integer, is at most this target.
    pub fn is_met_by(&self, hash: &BlockHash) -> bool {
        U256::from_be_bytes(hash.to_bytes()) <= self.0
    }

    /// The compact form, rounding the target down to 24 significant bits (never
    /// easier than `self`).
    pub fn to_compact(self) -> CompactTarget {
        let mut size = self.0.bit_len().div_ceil(8) as u32;
        let mut mantissa: u32 = if size <= 3 {
            (self.0.to::<u64>() << (8 * (3 - size))) as u32
        } else {
            (self.0 >> (8 * (size as usize - 3))).to::<u64>() as u32
        };
        // The top mantissa bit is a sign bit: shift it out rather than go negative.
        if mantissa & 0x0080_0000 != 0 {
            mantissa >>= 8;
            size += 1;
        }
        CompactTarget(mantissa | (size << 24))
    }

    /// The work a block at this target represents: `2^256 / (target + 1)`, the expected
    /// number of hashes to find it.
    pub fn work(self) -> Work {
        if self.0 == U256::MAX {
            return Work(U256::from(1u8));
        }
        // 2^256 does not fit in 256 bits; (2^256 - t - 1) / (t + 1) + 1 is the same value.
        let divisor = self.0 + U256::from(1u8);
        Work((!self.0) / divisor + U256::from(1u8))
    }

    /// How many times harder than `easiest` this target is, for display.
    pub fn difficulty(self, easiest: Target) -> f64 {
        u256_to_f64(easiest.0) / u256_to_f64(self.0)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", hex::encode(self.to_be_bytes()))
    }
}

fn u256_to_f64(value: U256) -> f64 {
    value
        .as_limbs()
        .iter()
        .rev()
        .fold(0.0, |acc, limb| acc * 18_446_744_073_709_551_616.0 + *limb as f64)
}

/// Accumulated proof of work: the expected number of hashes behind a chain.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Work(U256);

impl Work {
    /// No work.
    pub const ZERO: Self = Self(U256::ZERO);

    /// The 32 big-endian bytes.
    pub fn to_be_bytes(self) -> [u8; 32] {
        self.0.to_be_bytes()
    }

    /// Work from its 32 big-endian bytes.
    pub fn from_be_bytes(bytes: [u8; 32]) -> Self {
        Self(U256::from_be_bytes(bytes))
    }

    /// An approximation for display and rate estimates.
    pub fn as_f64(self) -> f64 {
        u256_to_f64(self.0)
    }
}

impl Add for Work {
    type Output = Work;

    /// Saturating: no real chain gets near 2^256 hashes, and saturating keeps fork choice
    /// total instead of panicking on a forged header chain.
    fn add(self, other: Work) -> Work {
        Work(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Work {
    /// Decimal: the expected number of hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Work({})", self.0)
    }
}

impl Serialize for Work {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_be_bytes())
    }
}

impl<'de> Deserialize<'de> for Work {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(FixedBytes::<32>).map(Self::from_be_bytes)
    }
}

/// The retarget rule: scale `previous` by how long the window actually took against how
/// long it should have taken, bounded to `max_factor` either way and never easier than
/// `limit`.
pub fn retarget(
    previous: Target,
    actual_span_ms: u64,
    expected_span_ms: u64,
    max_factor: u64,
    limit: Target,
) -> Target {
    assert!(expected_span_ms > 0 && max_factor > 0, "network parameters are validated");
    let actual = actual_span_ms
        .clamp((expected_span_ms / max_factor).max(1), expected_span_ms.saturating_mul(max_factor));
    // previous * actual / expected without a 512-bit product: split previous = q·e + r.
    let expected = U256::from(expected_span_ms);
    let (quotient, remainder) = previous.0.div_rem(expected);
    let scaled = quotient
        .checked_mul(U256::from(actual))
        .and_then(|high| high.checked_add(remainder * U256::from(actual) / expected));
    match scaled {
        Some(value) if value < limit.0 && !value.is_zero() => Target(value),
        Some(value) if value.is_zero() => Target(U256::from(1u8)),
        _ => limit,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn target(hex_be: &str) -> Target {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(format!("{hex_be:0>64}"), &mut bytes).expect("test hex");
        Target::from_be_bytes(bytes)
    }

    #[test]
    fn given_bitcoin_genesis_bits_when_decoded_then_matches_known_target() {
        let decoded = CompactTarget(0x1d00ffff).to_target().expect("valid");
        assert_eq!(decoded, target("ffff0000000000000000000000000000000000000000000000000000"));
        assert_eq!(decoded.to_compact(), CompactTarget(0x1d00ffff));
        // Bitcoin's work for its genesis block is 0x100010001.
        assert_eq!(decoded.work().to_string(), 0x1_0001_0001u64.to_string());
    }

    #[test]
    fn given_invalid_compact_values_when_decoded_then_typed_error() {
        assert_eq!(
            CompactTarget(0x0480_0001).to_target(),
            Err(CompactTargetError::Negative(0x0480_0001))
        );
        assert_eq!(
            CompactTarget(0x2300_0001).to_target(),
            Err(CompactTargetError::Overflow(0x2300_0001))
        );
        assert_eq!(
            CompactTarget(0x2201_0000).to_target(),
            Err(CompactTargetError::Overflow(0x2201_0000))
        );
        assert_eq!(
            CompactTarget(0x0300_0000).to_target(),
            Err(CompactTargetError::Zero(0x0300_0000))
        );
        assert_eq!(
            CompactTarget(0x0100_00ff).to_target(),
            Err(CompactTargetError::Zero(0x0100_00ff))
        );
    }

    #[test]
    fn given_hash_equal_to_target_when_checked_then_met_and_one_more_is_not() {
        let t = target("00ff");
        assert!(t.is_met_by(&BlockHash::from_bytes(t.to_be_bytes())));
        let mut above = t.to_be_bytes();
        above[31] = 0;
        above[30] = 1;
        assert!(!t.is_met_by(&BlockHash::from_bytes(above)));
    }

    #[test]
    fn given_max_target_when_work_computed_then_one() {
        assert_eq!(Target::MAX.work().to_string(), "1");
        assert_eq!(Target::from_expected_hashes_log2(1).work().to_string(), "2");
    }

    #[test]
    fn given_window_too_fast_or_slow_when_retargeting_then_bounded_by_factor() {
        let limit = Target::MAX;
        let start = Target::from_expected_hashes_log2(20);
        let start_value = U256::from_be_bytes(start.to_be_bytes());
        let four_times_harder = retarget(start, 1, 1000, 4, limit);
        assert_eq!(
            U256::from_be_bytes(four_times_harder.to_be_bytes()),
            start_value / U256::from(4)
        );
        let four_times_easier = retarget(start, 1_000_000, 1000, 4, limit);
        assert_eq!(
            U256::from_be_bytes(four_times_easier.to_be_bytes()),
            start_value * U256::from(4)
        );
        assert_eq!(retarget(start, 1000, 1000, 4, limit), start);
        let capped = retarget(Target::from_expected_hashes_log2(1), 4000, 1000, 4, target("ff"));
        assert_eq!(capped, target("ff"));
    }

    proptest! {
        #[test]
        fn compact_round_trips_through_target(bytes in any::<[u8; 32]>()) {
            let t = Target::from_be_bytes(bytes);
            prop_assume!(t.0 > U256::ZERO);
            let compact = t.to_compact();
            let back = compact.to_target();
            prop_assume!(back.is_ok()); // tiny targets round to zero
            let back = back.unwrap();
            prop_assert!(back <= t, "compact form never makes a target easier");
            prop_assert_eq!(back.to_compact(), compact);
            prop_assert_eq!(back.to_compact().to_target(), Ok(back));
        }

        #[test]
        fn work_grows_as_target_shrinks(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (Target::from_be_bytes(a), Target::from_be_bytes(b));
            let (small, large) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(small.work() >= large.work());
        }

        #[test]
        fn halving_target_doubles_work(shift in 1u32..250) {
            let t = Target::from_expected_hashes_log2(shift);
            let harder = Target::from_expected_hashes_log2(shift + 1);
            prop_assert_eq!(harder.work().0, t.work().0 * U256::from(2u8));
        }
    }
}
