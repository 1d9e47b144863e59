//! Amounts of money: an integer count of the smallest unit, never a float.
//!
//! One coin is `10^DECIMALS` units. Every operation that could overflow is checked and
//! says so; consensus code never uses plain `+` on amounts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Digits after the decimal point: one coin is 100,000,000 units.
pub const DECIMALS: u32 = 8;

/// Units in one coin.
pub const UNITS_PER_COIN: u64 = 10u64.pow(DECIMALS);

/// An amount in the smallest unit. Encodes as a CBOR unsigned integer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    /// Nothing.
    pub const ZERO: Self = Self(0);
    /// The largest representable amount.
    pub const MAX: Self = Self(u64::MAX);

    /// An amount of `units` smallest units.
    pub const fn from_units(units: u64) -> Self {
        Self(units)
    }

    /// An amount of whole coins; `None` if it does not fit.
    pub const fn from_coins(coins: u64) -> Option<Self> {
        match coins.checked_mul(UNITS_PER_COIN) {
            Some(units) => Some(Self(units)),
            None => None,
        }
    }

    /// The number of smallest units.
    pub const fn units(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(units) => Some(Self(units)),
            None => None,
        }
    }

    /// `self - other`, or `None` if `other` is larger.
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        match self.0.checked_sub(other.0) {
            Some(units) => Some(Self(units)),
            None => None,
        }
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    /// Coins with up to eight decimals and no trailing zeros: `5`, `5.25`, `0.00000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_COIN;
        let fraction = self.0 % UNITS_PER_COIN;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:0width$}", width = DECIMALS as usize);
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Why text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    /// Empty input.
    #[error("an amount cannot be empty")]
    Empty,
    /// A character other than digits and one decimal point.
    #[error("'{0}' is not a number (use digits and at most one '.', like 5 or 5.25)")]
    NotANumber(String),
    /// More decimals than the unit allows.
    #[error("'{0}' has more than {DECIMALS} decimals")]
    TooPrecise(String),
    /// Larger than the largest amount.
    #[error("'{0}' is too large")]
    TooLarge(String),
}

impl FromStr for Amount {
    type Err = ParseAmountError;

    /// Parses decimal coins: `5`, `5.25`, `.5`, `0.00000001`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ParseAmountError::Empty);
        }
        let not_a_number = || ParseAmountError::NotANumber(text.to_owned());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || !all_digits(fraction) || (whole.is_empty() && fraction.is_empty())
        {
            return Err(not_a_number());
        }
        if fraction.len() > DECIMALS as usize {
            return Err(ParseAmountError::TooPrecise(text.to_owned()));
        }
        let too_large = || ParseAmountError::TooLarge(text.to_owned());
        let whole_units = if whole.is_empty() {
            0
        } else {
            whole
                .parse::<u64>()
                .map_err(|_| too_large())?
                .checked_mul(UNITS_PER_COIN)
                .ok_or_else(too_large)?
        };
        let fraction_units = if fraction.is_empty() {
            0
        } else {
            let scale = 10u64.pow(DECIMALS - fraction.len() as u32);
            fraction.parse::<u64>().map_err(|_| not_a_number())? * scale
        };
        whole_units.checked_add(fraction_units).map(Self).ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn given_decimal_text_when_parsed_then_gives_units() {
        let cases = [
            ("5", 500_000_000),
            ("5.25", 525_000_000),
            ("0.00000001", 1),
            (".5", 50_000_000),
            ("7.", 700_000_000),
            ("0", 0),
        ];
        for (text, units) in cases {
            assert_eq!(text.parse::<Amount>(), Ok(Amount::from_units(units)), "{text}");
        }
    }

    #[test]
    fn given_bad_text_when_parsed_then_says_why() {
        assert_eq!("".parse::<Amount>(), Err(ParseAmountError::Empty));
        for text in ["abc", "-1", "1.2.3", ".", "1e5", " 1", "+1"] {
            assert!(
                matches!(text.parse::<Amount>(), Err(ParseAmountError::NotANumber(_))),
                "{text}"
            );
        }
        assert!(matches!("0.000000001".parse::<Amount>(), Err(ParseAmountError::TooPrecise(_))));
        assert!(matches!("184467440738".parse::<Amount>(), Err(ParseAmountError::TooLarge(_))));
        assert!(matches!(
            "99999999999999999999999".parse::<Amount>(),
            Err(ParseAmountError::TooLarge(_))
        ));
    }

    #[test]
    fn given_amounts_when_adding_past_max_then_none() {
        assert_eq!(Amount::MAX.checked_add(Amount::from_units(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_units(1)), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(units in any::<u64>()) {
            let amount = Amount::from_units(units);
            prop_assert_eq!(amount.to_string().parse::<Amount>(), Ok(amount));
        }
    }
}
