//! What the tables hold, and typed access to them shared by every backend.
//!
//! Values are canonical CBOR (cbor4ii); heights are 8-byte big-endian keys so that key
//! order is height order.

use std::ops::Bound;

use raclette_protocol::encoding::to_canonical_cbor;
use raclette_protocol::{
    Amount, Block, BlockHash, BlockHeader, NetworkId, PublicKey, Transfer, TxId, Work,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ReadTables, StoreError, Table, WriteTables};

/// What the node knows about one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// The header.
    pub header: BlockHeader,
    /// Cumulative work from genesis up to and including this block.
    pub work: Work,
    /// How far the block has been validated.
    pub status: BlockStatus,
    /// When this node first stored it, Unix ms (by the clock passed to the import).
    pub received_ms: u64,
}

impl BlockEntry {
    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The block's height.
    pub fn height(&self) -> u64 {
        self.header.height
    }
}

/// How far a stored block has been validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Passed every rule, state included: it is or was on the best chain.
    Valid,
    /// Passed the header and block rules; on a side chain, so its state rules were not
    /// checked yet.
    Stored,
    /// Failed a rule; never connected again, and neither are its descendants.
    Invalid {
        /// The rule it broke.
        reason: String,
    },
}

/// An account at the best tip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// Transfers sent so far: the nonce its next transfer must carry.
    pub nonce: u64,
}

/// What connecting a block overwrote, so disconnecting it restores the state exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    /// Each account the block touched with its value before the block (an account that
    /// did not exist is the empty account, which is not stored).
    pub accounts: Vec<(PublicKey, Account)>,
}

/// A pending transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolRecord {
    /// The transfer.
    pub transfer: Transfer,
    /// When this node first accepted it, Unix ms.
    pub received_ms: u64,
}

/// A transfer addressed to this node's key (its text is decrypted when shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// The transfer.
    pub transfer: Transfer,
    /// When this node first saw it, Unix ms.
    pub received_ms: u64,
}

const TIP_KEY: &[u8] = b"tip";
const NETWORK_KEY: &[u8] = b"network";

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

/// Decodes a value read from `table`.
pub fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
    cbor4ii::serde::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt { table: table.name(), reason: error.to_string() })
}

fn fixed<const N: usize>(table: Table, bytes: &[u8]) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: table.name(),
        reason: format!("expected {N} bytes, found {}", bytes.len()),
    })
}

/// Typed reads, for every reader and writer.
pub trait StoreRead: ReadTables {
    /// A value decoded from CBOR.
    fn value<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(table, key)?.map(|bytes| decode(table, &bytes)).transpose()
    }

    /// Every value of a table in key order.
    fn values<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let mut raw = Vec::new();
        self.scan(table, (Bound::Unbounded, Bound::Unbounded), false, &mut |_, value| {
            raw.push(value.to_vec());
            true
        })?;
        raw.iter().map(|bytes| decode(table, bytes)).collect()
    }

    /// The block index entry.
    fn entry(&self, hash: &BlockHash) -> Result<Option<BlockEntry>, StoreError> {
        self.value(Table::Entries, hash.as_bytes())
    }

    /// A stored block.
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, StoreError> {
        self.value(Table::Blocks, hash.as_bytes())
    }

    /// Hash of the best chain's block at `height`.
    fn best_hash_at(&self, height: u64) -> Result<Option<BlockHash>, StoreError> {
        self.get(Table::BestChain, &height_key(height))?
            .map(|bytes| fixed::<32>(Table::BestChain, &bytes).map(BlockHash::from_bytes))
            .transpose()
    }

    /// Whether `entry` is on the best chain.
    fn is_on_best_chain(&self, entry: &BlockEntry) -> Result<bool, StoreError> {
        Ok(self.best_hash_at(entry.height())? == Some(entry.hash()))
    }

    /// An account at the tip (zero balance and nonce if it never appeared).
    fn account(&self, key: &PublicKey) -> Result<Account, StoreError> {
        Ok(self.value(Table::Accounts, &key.to_bytes())?.unwrap_or_default())
    }

    /// Undo data of a connected block.
    fn undo(&self, hash: &BlockHash) -> Result<Option<Undo>, StoreError> {
        self.value(Table::Undo, hash.as_bytes())
    }

    /// The best-chain block holding a transaction.
    fn tx_block(&self, txid: &TxId) -> Result<Option<BlockHash>, StoreError> {
        self.get(Table::TxIndex, txid.as_bytes())?
            .map(|bytes| fixed::<32>(Table::TxIndex, &bytes).map(BlockHash::from_bytes))
            .transpose()
    }

    /// The best tip's hash; `None` for a store never initialised.
    fn tip(&self) -> Result<Option<BlockHash>, StoreError> {
        self.get(Table::Meta, TIP_KEY)?
            .map(|bytes| fixed::<32>(Table::Meta, &bytes).map(BlockHash::from_bytes))
            .transpose()
    }

    /// The network this store belongs to.
    fn network(&self) -> Result<Option<NetworkId>, StoreError> {
        self.get(Table::Meta, NETWORK_KEY)?
            .map(|bytes| fixed::<32>(Table::Meta, &bytes).map(NetworkId::from_bytes))
            .transpose()
    }

    /// Best-chain hashes from `top` downwards, at most `limit`.
    fn best_hashes_down_from(&self, top: u64, limit: usize) -> Result<Vec<BlockHash>, StoreError> {
        let mut hashes = Vec::new();
        let top_key = height_key(top);
        let mut corrupt = None;
        self.scan(
            Table::BestChain,
            (Bound::Unbounded, Bound::Included(&top_key)),
            true,
            &mut |_, value| {
                match fixed::<32>(Table::BestChain, value) {
                    Ok(bytes) => hashes.push(BlockHash::from_bytes(bytes)),
                    Err(error) => corrupt = Some(error),
                }
                corrupt.is_none() && hashes.len() < limit
            },
        )?;
        match corrupt {
            Some(error) => Err(error),
            None => Ok(hashes),
        }
    }
}

impl<T: ReadTables + ?Sized> StoreRead for T {}

/// Typed writes.
pub trait StoreWrite: WriteTables {
    /// Stores a value as CBOR.
    fn put_value<T: Serialize>(
        &mut self,
        table: Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(table, key, &to_canonical_cbor(value))
    }

    /// Stores a block index entry.
    fn put_entry(&mut self, entry: &BlockEntry) -> Result<(), StoreError> {
        self.put_value(Table::Entries, entry.hash().as_bytes(), entry)
    }

    /// Stores a block.
    fn put_block(&mut self, hash: &BlockHash, block: &Block) -> Result<(), StoreError> {
        self.put_value(Table::Blocks, hash.as_bytes(), block)
    }

    /// Sets the best chain's block at `height`.
    fn set_best(&mut self, height: u64, hash: &BlockHash) -> Result<(), StoreError> {
        self.put(Table::BestChain, &height_key(height), hash.as_bytes())
    }

    /// Removes the best chain's block at `height`.
    fn clear_best(&mut self, height: u64) -> Result<(), StoreError> {
        self.delete(Table::BestChain, &height_key(height))
    }

    /// Sets an account; the zero account is removed rather than stored.
    fn put_account(&mut self, key: &PublicKey, account: &Account) -> Result<(), StoreError> {
        if *account == Account::default() {
            self.delete(Table::Accounts, &key.to_bytes())
        } else {
            self.put_value(Table::Accounts, &key.to_bytes(), account)
        }
    }

    /// Records which block holds a transaction.
    fn index_tx(&mut self, txid: &TxId, block: &BlockHash) -> Result<(), StoreError> {
        self.put(Table::TxIndex, txid.as_bytes(), block.as_bytes())
    }

    /// Sets the best tip.
    fn set_tip(&mut self, hash: &BlockHash) -> Result<(), StoreError> {
        self.put(Table::Meta, TIP_KEY, hash.as_bytes())
    }

    /// Records the network.
    fn set_network(&mut self, network: &NetworkId) -> Result<(), StoreError> {
        self.put(Table::Meta, NETWORK_KEY, network.as_bytes())
    }
}

impl<T: WriteTables + ?Sized> StoreWrite for T {}
