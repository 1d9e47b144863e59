//! Pending transfers: validated against the tip plus the sender's own pending ones, kept
//! in nonce order per sender, chosen by fee for block templates.
//!
//! The in-memory pool is authoritative while the node runs. Changes are persisted to the
//! store's mempool table by [`Mempool::flush`], which the node calls in batches; the
//! chain itself updates the table in the same transaction as a tip change (removing
//! mined transfers, restoring those of abandoned blocks), so a crash never loses a
//! transfer that left the chain.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use raclette_protocol::block::MAX_BLOCK_BYTES;
use raclette_protocol::transaction::TransferError;
use raclette_protocol::{Amount, NetworkId, PublicKey, Transaction, Transfer, TxId, WireMessage};

use crate::chain::TipChange;
use crate::chain::state::StateError;
use crate::store::{MempoolRecord, StoreError, StoreRead, StoreWrite, Table, WriteTables};

/// The most transfers the pool holds.
pub const MAX_TRANSFERS: usize = 10_000;
/// The most pending transfers of one sender.
pub const MAX_PER_SENDER: usize = 64;
/// Bytes of a block kept free for the header and coinbase when choosing transfers.
const TEMPLATE_RESERVE_BYTES: usize = 2_000;

/// Why a transfer was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// It breaks a rule that holds on every chain: the sender is at fault.
    #[error(transparent)]
    Invalid(#[from] TransferError),
    /// It does not fit the current state (it may on another branch).
    #[error(transparent)]
    State(#[from] StateError),
    /// Already pending.
    #[error("transaction is already pending")]
    AlreadyKnown,
    /// Already mined.
    #[error("transaction is already in the chain")]
    AlreadyMined,
    /// Another pending transfer of the sender has this nonce.
    #[error("another pending transaction already uses nonce {nonce}")]
    NonceTaken {
        /// The nonce.
        nonce: u64,
    },
    /// The sender has too many pending transfers.
    #[error("sender already has {MAX_PER_SENDER} pending transactions")]
    SenderFull,
    /// The pool is full of transfers paying at least as much.
    #[error("mempool is full and the fee is too low to replace anything")]
    Full,
    /// The node's store failed while checking.
    #[error("the node could not read its state: {0}")]
    Unavailable(String),
}

impl MempoolError {
    /// Whether the peer that sent the transfer broke a rule.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            MempoolError::Invalid(_) => true,
            MempoolError::State(_)
            | MempoolError::AlreadyKnown
            | MempoolError::AlreadyMined
            | MempoolError::NonceTaken { .. }
            | MempoolError::SenderFull
            | MempoolError::Full
            | MempoolError::Unavailable(_) => false,
        }
    }
}

/// The pending transfers.
#[derive(Debug)]
pub struct Mempool {
    network: NetworkId,
    records: HashMap<TxId, MempoolRecord>,
    by_sender: HashMap<PublicKey, BTreeMap<u64, TxId>>,
    /// Changes not yet written: `true` to store the record, `false` to delete it.
    unsaved: HashMap<TxId, bool>,
}

impl Mempool {
    /// An empty pool for `network`.
    pub fn new(network: NetworkId) -> Self {
        Self {
            network,
            records: HashMap::new(),
            by_sender: HashMap::new(),
            unsaved: HashMap::new(),
        }
    }

    /// Loads the stored pool and drops what no longer fits the tip.
    pub fn load<R: StoreRead + ?Sized>(network: NetworkId, reader: &R) -> Result<Self, StoreError> {
        let mut pool = Self::new(network);
        for record in reader.values::<MempoolRecord>(Table::Mempool)? {
            pool.insert(record.transfer.txid(), record);
        }
        pool.revalidate(reader)?;
        Ok(pool)
    }

    /// Number of pending transfers.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A pending transfer.
    pub fn get(&self, txid: &TxId) -> Option<&MempoolRecord> {
        self.records.get(txid)
    }

    /// Every pending transfer with its id, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TxId, &MempoolRecord)> {
        self.records.iter()
    }

    /// The nonce `sender`'s next new transfer should carry, given its confirmed nonce.
    pub fn next_nonce(&self, sender: &PublicKey, confirmed_nonce: u64) -> u64 {
        confirmed_nonce + self.by_sender.get(sender).map_or(0, |chain| chain.len() as u64)
    }

    /// What pending transfers will add to and take from `key`'s balance.
    pub fn pending_for(&self, key: &PublicKey) -> (Amount, Amount) {
        let (mut incoming, mut outgoing) = (Amount::ZERO, Amount::ZERO);
        for record in self.records.values() {
            let t = &record.transfer;
            if t.to == *key {
                incoming = incoming.checked_add(t.amount).unwrap_or(Amount::MAX);
            }
            if t.from == *key {
                outgoing = outgoing
                    .checked_add(t.total_cost().unwrap_or(Amount::MAX))
                    .unwrap_or(Amount::MAX);
            }
        }
        (incoming, outgoing)
    }

    /// Validates `transfer` against the tip (read through `reader`) and the sender's
    /// pending transfers, and adds it.
    pub fn add<R: StoreRead + ?Sized>(
        &mut self,
        reader: &R,
        transfer: Transfer,
        now_ms: u64,
    ) -> Result<TxId, MempoolError> {
        let txid = transfer.txid();
        if self.records.contains_key(&txid) {
            return Err(MempoolError::AlreadyKnown);
        }
        transfer.check_stateless(&self.network)?;
        let store_error = |error: StoreError| MempoolError::Unavailable(error.to_string());
        if reader.tx_block(&txid).map_err(store_error)?.is_some() {
            return Err(MempoolError::AlreadyMined);
        }
        let account = reader.account(&transfer.from).map_err(store_error)?;
        let chain = self.by_sender.get(&transfer.from);
        let pending = chain.map_or(0, BTreeMap::len) as u64;
        let expected = account.nonce + pending;
        if transfer.nonce < account.nonce {
            return Err(StateError::NonceReplayed {
                expected: account.nonce,
                found: transfer.nonce,
            }
            .into());
        }
        if transfer.nonce < expected {
            return Err(MempoolError::NonceTaken { nonce: transfer.nonce });
        }
        if transfer.nonce > expected {
            return Err(StateError::NonceGap { expected, found: transfer.nonce }.into());
        }
        if pending as usize >= MAX_PER_SENDER {
            return Err(MempoolError::SenderFull);
        }
        let committed = chain
            .into_iter()
            .flat_map(|c| c.values())
            .map(|id| self.records[id].transfer.total_cost().unwrap_or(Amount::MAX))
            .try_fold(Amount::ZERO, Amount::checked_add)
            .unwrap_or(Amount::MAX);
        let available = account.balance.checked_sub(committed).unwrap_or(Amount::ZERO);
        let needed = transfer.total_cost()?;
        if needed > available {
            return Err(StateError::Overspend { balance: available, needed }.into());
        }
        if self.records.len() >= MAX_TRANSFERS {
            self.evict_cheaper_than(transfer.fee)?;
        }
        self.insert(txid, MempoolRecord { transfer, received_ms: now_ms });
        self.unsaved.insert(txid, true);
        Ok(txid)
    }

    /// Removes the cheapest transfer that is last in its sender's chain, if it pays less
    /// than `fee`.
    fn evict_cheaper_than(&mut self, fee: Amount) -> Result<(), MempoolError> {
        let cheapest = self
            .by_sender
            .values()
            .filter_map(|chain| chain.values().next_back())
            .min_by_key(|id| self.records[*id].transfer.fee)
            .copied();
        match cheapest {
            Some(id) if self.records[&id].transfer.fee < fee => {
                self.remove(&id);
                Ok(())
            }
            _ => Err(MempoolError::Full),
        }
    }

    fn insert(&mut self, txid: TxId, record: MempoolRecord) {
        self.by_sender.entry(record.transfer.from).or_default().insert(record.transfer.nonce, txid);
        self.records.insert(txid, record);
    }

    /// Removes a transfer (and marks the removal for the next flush).
    pub fn remove(&mut self, txid: &TxId) -> Option<MempoolRecord> {
        let record = self.forget(txid)?;
        self.unsaved.insert(*txid, false);
        Some(record)
    }

    /// Removes from memory only: the store already reflects it.
    fn forget(&mut self, txid: &TxId) -> Option<MempoolRecord> {
        let record = self.records.remove(txid)?;
        if let Some(chain) = self.by_sender.get_mut(&record.transfer.from) {
            chain.remove(&record.transfer.nonce);
            if chain.is_empty() {
                self.by_sender.remove(&record.transfer.from);
            }
        }
        Some(record)
    }

    /// Follows the best chain: mined transfers leave, those of abandoned blocks come
    /// back, and whatever no longer fits the new tip is dropped. Returns the dropped ids.
    pub fn apply_tip_change<R: StoreRead + ?Sized>(
        &mut self,
        change: &TipChange,
        reader: &R,
        now_ms: u64,
    ) -> Result<Vec<TxId>, StoreError> {
        for block in &change.connected {
            for tx in &block.transactions {
                let txid = tx.txid();
                self.forget(&txid);
                self.unsaved.remove(&txid);
            }
        }
        for block in &change.disconnected {
            for tx in &block.transactions {
                if let Transaction::Transfer(transfer) = tx {
                    let txid = tx.txid();
                    if reader.tx_block(&txid)?.is_none() && !self.records.contains_key(&txid) {
                        self.insert(
                            txid,
                            MempoolRecord { transfer: transfer.clone(), received_ms: now_ms },
                        );
                    }
                }
            }
        }
        self.revalidate(reader)
    }

    /// Keeps, per sender, the longest run of nonces from its confirmed nonce that its
    /// balance can pay for; drops the rest.
    pub fn revalidate<R: StoreRead + ?Sized>(
        &mut self,
        reader: &R,
    ) -> Result<Vec<TxId>, StoreError> {
        let mut dropped = Vec::new();
        let senders: Vec<PublicKey> = self.by_sender.keys().copied().collect();
        for sender in senders {
            let account = reader.account(&sender)?;
            let chain = self.by_sender[&sender].clone();
            let (mut next, mut spent, mut broken) = (account.nonce, Amount::ZERO, false);
            for (nonce, txid) in chain {
                let cost = self.records[&txid].transfer.total_cost().ok();
                let total = cost.and_then(|c| spent.checked_add(c));
                let fits = !broken && nonce == next && total.is_some_and(|t| t <= account.balance);
                if fits {
                    next += 1;
                    spent = total.expect("checked above");
                } else {
                    broken |= nonce >= account.nonce;
                    self.remove(&txid);
                    dropped.push(txid);
                }
            }
        }
        Ok(dropped)
    }

    /// Transfers for a block template: highest fee first among each sender's next
    /// transfer, each sender's nonces in order, within the block size.
    pub fn select(&self) -> Vec<Transfer> {
        let mut budget = MAX_BLOCK_BYTES - TEMPLATE_RESERVE_BYTES;
        let mut queues: HashMap<PublicKey, std::collections::btree_map::Values<'_, u64, TxId>> =
            self.by_sender.iter().map(|(sender, chain)| (*sender, chain.values())).collect();
        let mut heap = BinaryHeap::new();
        for (sender, queue) in &mut queues {
            if let Some(id) = queue.next() {
                heap.push((
                    self.records[id].transfer.fee,
                    Reverse(self.records[id].received_ms),
                    *sender,
                    *id,
                ));
            }
        }
        let mut chosen = Vec::new();
        while let Some((_, _, sender, id)) = heap.pop() {
            let transfer = &self.records[&id].transfer;
            let size = transfer.encode().len() + 16;
            if size > budget {
                continue; // this sender's later nonces cannot come before it
            }
            budget -= size;
            chosen.push(transfer.clone());
            if let Some(next) = queues.get_mut(&sender).and_then(Iterator::next) {
                heap.push((
                    self.records[next].transfer.fee,
                    Reverse(self.records[next].received_ms),
                    sender,
                    *next,
                ));
            }
        }
        chosen
    }

    /// Whether there are changes to write.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Writes the changes since the last flush into `writer` (the caller commits).
    pub fn flush<W: WriteTables + ?Sized>(&mut self, writer: &mut W) -> Result<(), StoreError> {
        for (txid, present) in self.unsaved.drain() {
            match self.records.get(&txid) {
                Some(record) if present => {
                    writer.put_value(Table::Mempool, txid.as_bytes(), record)?
                }
                _ => writer.delete(Table::Mempool, txid.as_bytes())?,
            }
        }
        Ok(())
    }
}
