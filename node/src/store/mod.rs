//! Persistent state behind a small key-value trait: LMDB in a node, memory in tests.
//!
//! The backends only move bytes between named tables inside transactions. What the
//! bytes mean lives once, in the typed accessors of [`typed`], which every backend
//! shares. A writer sees its own writes; nothing it wrote is visible to others, or
//! survives, unless it commits.

mod lmdb;
mod memory;
pub mod typed;

use std::ops::Bound;

pub use lmdb::{LmdbReader, LmdbStore, LmdbWriter};
pub use memory::MemoryStore;
pub use typed::{
    Account, BlockEntry, BlockStatus, InboxRecord, MempoolRecord, StoreRead, StoreWrite, Undo,
    decode,
};

/// The tables of a node's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Block hash → [`BlockEntry`]: header, cumulative work, validity.
    Entries,
    /// Block hash → block (canonical CBOR).
    Blocks,
    /// Height (8 bytes big-endian) → hash of the best chain's block at that height.
    BestChain,
    /// Public key (33 bytes) → [`Account`] at the best tip.
    Accounts,
    /// Block hash → [`Undo`]: the account values the block overwrote.
    Undo,
    /// Transaction id → hash of the best-chain block that holds it.
    TxIndex,
    /// Transaction id → [`MempoolRecord`].
    Mempool,
    /// Transaction id → [`InboxRecord`]: transfers to this node's key.
    Inbox,
    /// A node's copy of the directory: lowercase peer name → its entry. In a tracker:
    /// network id ‖ lowercase name → the card.
    Directory,
    /// Tracker only: network id ‖ public key → the lowercase name that key holds.
    DirectoryKeys,
    /// Tracker only: network id ‖ public key → when the key's owner was last seen (Unix
    /// ms, 8 bytes big-endian): registered, or connected. Cards unseen too long expire.
    DirectorySeen,
    /// Transaction id → a direct transfer waiting for its receiver to come online.
    Outbox,
    /// Small named values: the tip, the schema version.
    Meta,
}

impl Table {
    /// Every table, for backends that create them up front.
    pub const ALL: [Table; 13] = [
        Table::Entries,
        Table::Blocks,
        Table::BestChain,
        Table::Accounts,
        Table::Undo,
        Table::TxIndex,
        Table::Mempool,
        Table::Inbox,
        Table::Directory,
        Table::DirectoryKeys,
        Table::DirectorySeen,
        Table::Outbox,
        Table::Meta,
    ];

    /// The table's name in the LMDB file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Entries => "entries",
            Table::Blocks => "blocks",
            Table::BestChain => "best_chain",
            Table::Accounts => "accounts",
            Table::Undo => "undo",
            Table::TxIndex => "tx_index",
            Table::Mempool => "mempool",
            Table::Inbox => "inbox",
            Table::Directory => "directory",
            Table::DirectoryKeys => "directory_keys",
            Table::DirectorySeen => "directory_seen",
            Table::Outbox => "outbox",
            Table::Meta => "meta",
        }
    }
}

/// A storage failure. The node treats these as fatal: it stops rather than go on with
/// state it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// LMDB reported an error.
    #[error("database error: {0}")]
    Lmdb(#[from] heed::Error),
    /// A stored value does not decode: the file is damaged or from another version.
    #[error("corrupt value in table {table}: {reason}")]
    Corrupt {
        /// The table name.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The store belongs to another network.
    #[error("this data directory holds network {found}, not {expected}")]
    WrongNetwork {
        /// The network asked for.
        expected: String,
        /// The network stored.
        found: String,
    },
    /// Opening the data directory failed.
    #[error("cannot open store at {path}: {source}")]
    Open {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A range over a table's keys, in key byte order.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Read access to the tables.
pub trait ReadTables {
    /// The value under `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `visit` with each entry in `range` (descending when `reverse`), until it
    /// returns `false`.
    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
}

/// Write access; reads see earlier writes of the same transaction.
pub trait WriteTables: ReadTables {
    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (absent is fine).
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError>;
    /// Makes every write of this transaction durable and visible, all at once.
    fn commit(self) -> Result<(), StoreError>;
}

/// A transactional store.
pub trait Store: Send + Sync + 'static {
    /// A consistent read-only view.
    type Reader<'a>: ReadTables
    where
        Self: 'a;
    /// The single writer; dropped without `commit`, it changes nothing.
    type Writer<'a>: WriteTables
    where
        Self: 'a;

    /// Starts a read transaction.
    fn reader(&self) -> Result<Self::Reader<'_>, StoreError>;
    /// Starts the write transaction (waits for another writer to finish).
    fn writer(&self) -> Result<Self::Writer<'_>, StoreError>;
}
