//! Network parameters and the genesis block "RacletteCheese" they determine.
//!
//! A network is fully described by its [`NetworkParams`]. The genesis block is computed
//! from them and from nothing else (fixed text, fixed timestamp), so every node that
//! starts a network creates the very same block, and its hash is the network id. The
//! genesis header's `prev` field holds the hash of the parameters' canonical encoding:
//! two networks that differ in any parameter (difficulty, reward, ...) get different ids
//! and refuse each other.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::block::{Block, merkle_root};
use crate::encoding::to_canonical_cbor;
use crate::hash::{BlockHash, NetworkId, sha256d};
use crate::header::{BlockHeader, HEADER_VERSION};
use crate::keys::{Keypair, PublicKey};
use crate::pow::{CompactTarget, Target, retarget};
use crate::transaction::{Coinbase, Transaction};

/// The text in the genesis coinbase.
pub const GENESIS_MEMO: &[u8] = b"RacletteCheese";
/// The genesis timestamp of the built-in networks: 2026-01-01T00:00:00Z.
pub const GENESIS_TIME_MS: u64 = 1_767_225_600_000;
/// How many previous blocks the median-time-past rule looks at.
pub const MEDIAN_TIME_BLOCKS: usize = 11;

/// The consensus parameters of one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkParams {
    /// A short name (`dev`, `main`, or a test network's).
    pub name: String,
    /// Timestamp of the genesis block, Unix milliseconds.
    pub genesis_time_ms: u64,
    /// The target of the genesis block and of the first retarget window.
    pub initial_bits: CompactTarget,
    /// The easiest target any block may have (the minimum difficulty).
    pub pow_limit_bits: CompactTarget,
    /// The block interval the retarget aims for.
    pub target_block_time_ms: u64,
    /// Blocks per retarget window; 0 keeps the difficulty fixed at `initial_bits`.
    pub retarget_interval: u64,
    /// The most one retarget may change the target, either way.
    pub max_retarget_factor: u64,
    /// Coinbase reward of the first blocks.
    pub block_reward: Amount,
    /// Blocks between halvings of the reward; 0 never halves.
    pub halving_interval: u64,
    /// How far ahead of the validating node's clock a block's time may be.
    pub max_future_block_time_ms: u64,
}

/// Parameters that cannot describe a working network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A target in compact form does not decode.
    #[error("{field}: {source}")]
    BadTarget {
        /// Which field.
        field: &'static str,
        /// Why.
        source: crate::pow::CompactTargetError,
    },
    /// The initial target is easier than the limit.
    #[error("initial_bits is easier than pow_limit_bits")]
    InitialAboveLimit,
    /// A field that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The name is empty or too long.
    #[error("network name must be 1 to 32 characters")]
    BadName,
}

impl NetworkParams {
    /// The development network: fixed genesis, a block in about a second on one core
    /// with SHA-NI (2^23 hashes), retargeted every 10 blocks.
    pub fn dev() -> Self {
        Self {
            name: "dev".into(),
            genesis_time_ms: GENESIS_TIME_MS,
            initial_bits: Target::from_expected_hashes_log2(23).to_compact(),
            pow_limit_bits: Target::from_expected_hashes_log2(12).to_compact(),
            target_block_time_ms: 1_000,
            retarget_interval: 10,
            max_retarget_factor: 4,
            block_reward: Amount::from_coins(50).expect("50 coins fit"),
            halving_interval: 0,
            max_future_block_time_ms: 2 * 60 * 60 * 1000,
        }
    }

    /// The default network: 30-second blocks, retargeted every 60 blocks, the reward
    /// halving every 2,100,000 blocks (about two years).
    pub fn main() -> Self {
        Self {
            name: "main".into(),
            genesis_time_ms: GENESIS_TIME_MS,
            initial_bits: Target::from_expected_hashes_log2(28).to_compact(),
            pow_limit_bits: Target::from_expected_hashes_log2(20).to_compact(),
            target_block_time_ms: 30_000,
            retarget_interval: 60,
            max_retarget_factor: 4,
            block_reward: Amount::from_coins(50).expect("50 coins fit"),
            halving_interval: 2_100_000,
            max_future_block_time_ms: 2 * 60 * 60 * 1000,
        }
    }

    /// A built-in network by name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "dev" => Some(Self::dev()),
            "main" => Some(Self::main()),
            _ => None,
        }
    }

    /// Checks the parameters describe a working network.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.name.is_empty() || self.name.len() > 32 {
            return Err(ParamsError::BadName);
        }
        let initial = self
            .initial_bits
            .to_target()
            .map_err(|source| ParamsError::BadTarget { field: "initial_bits", source })?;
        let limit = self
            .pow_limit_bits
            .to_target()
            .map_err(|source| ParamsError::BadTarget { field: "pow_limit_bits", source })?;
        if initial > limit {
            return Err(ParamsError::InitialAboveLimit);
        }
        if self.target_block_time_ms == 0 {
            return Err(ParamsError::Zero("target_block_time_ms"));
        }
        if self.max_retarget_factor == 0 {
            return Err(ParamsError::Zero("max_retarget_factor"));
        }
        Ok(())
    }

    /// The easiest allowed target.
    pub fn pow_limit(&self) -> Target {
        self.pow_limit_bits.to_target().expect("validated parameters")
    }

    /// Hash of the canonical encoding: the genesis header's `prev`.
    pub fn params_hash(&self) -> BlockHash {
        BlockHash::from_bytes(sha256d(&to_canonical_cbor(self)))
    }

    /// The genesis block of this network.
    pub fn genesis(&self) -> Block {
        let coinbase = Transaction::Coinbase(Coinbase {
            height: 0,
            to: genesis_recipient(),
            amount: Amount::ZERO,
            memo: GENESIS_MEMO.to_vec(),
        });
        let header = BlockHeader {
            version: HEADER_VERSION,
            bits: self.initial_bits,
            height: 0,
            prev: self.params_hash(),
            merkle_root: merkle_root(&[coinbase.txid()]),
            time_ms: self.genesis_time_ms,
            nonce: 0,
        };
        Block { header, transactions: vec![coinbase] }
    }

    /// The network id: the genesis block's hash.
    pub fn network_id(&self) -> NetworkId {
        self.genesis().hash().into()
    }

    /// The reward for mining the block at `height`.
    pub fn reward_at(&self, height: u64) -> Amount {
        if self.halving_interval == 0 {
            return self.block_reward;
        }
        let halvings = height / self.halving_interval;
        if halvings >= 64 {
            return Amount::ZERO;
        }
        Amount::from_units(self.block_reward.units() >> halvings)
    }

    /// Whether the block at `height` starts a new retarget window.
    pub fn is_retarget_height(&self, height: u64) -> bool {
        self.retarget_interval > 0 && height > 0 && height.is_multiple_of(self.retarget_interval)
    }

    /// The target required at a retarget height, from the parent's target and the
    /// timestamps of the first and last blocks of the window that just ended (heights
    /// `height - interval` and `height - 1`). The window spans `interval - 1` block
    /// intervals, and that is what it is compared against.
    pub fn retarget_bits(
        &self,
        parent_bits: CompactTarget,
        first_time_ms: u64,
        last_time_ms: u64,
    ) -> CompactTarget {
        let expected = self
            .target_block_time_ms
            .saturating_mul(self.retarget_interval.saturating_sub(1).max(1));
        let actual = last_time_ms.saturating_sub(first_time_ms);
        let parent = parent_bits.to_target().unwrap_or_else(|_| self.pow_limit());
        retarget(parent, actual, expected, self.max_retarget_factor, self.pow_limit()).to_compact()
    }
}

/// The genesis coinbase's recipient: the public key of the secret scalar 1 (the curve's
/// generator). It receives nothing; any fixed valid key would do.
fn genesis_recipient() -> PublicKey {
    let mut one = [0u8; 32];
    one[31] = 1;
    Keypair::from_secret_bytes(one).expect("1 is a valid secret scalar").public()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_built_in_networks_then_valid_and_distinct() {
        for params in [NetworkParams::dev(), NetworkParams::main()] {
            assert_eq!(params.validate(), Ok(()));
            assert_eq!(params.genesis().compute_merkle_root(), params.genesis().header.merkle_root);
        }
        assert_ne!(NetworkParams::dev().network_id(), NetworkParams::main().network_id());
    }

    #[test]
    fn given_any_parameter_changed_then_network_id_changes() {
        let mut custom = NetworkParams::dev();
        custom.block_reward = Amount::from_units(1);
        assert_ne!(custom.network_id(), NetworkParams::dev().network_id());
    }

    #[test]
    fn given_halving_schedule_then_reward_halves_and_ends() {
        let main = NetworkParams::main();
        assert_eq!(main.reward_at(0), main.block_reward);
        assert_eq!(main.reward_at(2_100_000).units(), main.block_reward.units() / 2);
        assert_eq!(main.reward_at(2_100_000 * 64), Amount::ZERO);
    }

    #[test]
    fn given_genesis_then_deterministic_and_says_raclette_cheese() {
        let genesis = NetworkParams::dev().genesis();
        assert_eq!(genesis, NetworkParams::dev().genesis());
        assert_eq!(genesis.coinbase().unwrap().memo, b"RacletteCheese");
    }
}
