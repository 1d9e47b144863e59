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
    /// The fee is below this node's minimum relay fee (policy, not consensus).
    #[error("the fee {fee} is below this node's minimum relay fee {min}")]
    FeeTooLow {
        /// The transfer's fee.
        fee: Amount,
        /// The node's minimum.
        min: Amount,
    },
    /// The node's store failed while checking.
    #[error("the node could not read its state: {0}")]
    Unavailable(String),
}

impl MempoolError {
    /// Whether the peer that sent the transfer broke a rule.
    /// ([`crate::verdict`] decides.)
    pub fn is_peer_fault(&self) -> bool {
        crate::verdict::verdict(crate::verdict::Refusal::Mempool(self)).is_fault()
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
    /// The least fee a transfer must pay to be taken and relayed: what makes spam cost
    /// money, since a transfer of 0 needs no balance of its own.
    min_fee: Amount,
}

impl Mempool {
    /// An empty pool for `network`.
    pub fn new(network: NetworkId) -> Self {
        Self {
            network,
            records: HashMap::new(),
            by_sender: HashMap::new(),
            unsaved: HashMap::new(),
            min_fee: Amount::ZERO,
        }
    }

    /// The same pool, taking only transfers that pay at least `fee`.
    pub fn with_min_fee(mut self, fee: Amount) -> Self {
        self.min_fee = fee;
        self
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
        if transfer.fee < self.min_fee {
            return Err(MempoolError::FeeTooLow { fee: transfer.fee, min: self.min_fee });
        }
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
            self.evict_cheaper_than(transfer.fee, &transfer.from)?;
        }
        self.insert(txid, MempoolRecord { transfer, received_ms: now_ms });
        self.unsaved.insert(txid, true);
        Ok(txid)
    }

    /// Removes the cheapest transfer that is last in its sender's chain, if it pays less
    /// than `fee`.
    fn evict_cheaper_than(&mut self, fee: Amount, sparing: &PublicKey) -> Result<(), MempoolError> {
        let cheapest = self
            .by_sender
            .iter()
            .filter(|(sender, _)| *sender != sparing) // never the newcomer's own chain
            .filter_map(|(_, chain)| chain.values().next_back())
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

    /// Adds without any check, for tests that need a full pool quickly.
    #[cfg(test)]
    fn insert_unchecked(&mut self, transfer: Transfer) {
        self.insert(transfer.txid(), MempoolRecord { transfer, received_ms: 0 });
    }

    /// Adds a record; returns false (and adds nothing) when the sender's nonce slot is
    /// already held by another transfer.
    fn insert(&mut self, txid: TxId, record: MempoolRecord) -> bool {
        let chain = self.by_sender.entry(record.transfer.from).or_default();
        if chain.contains_key(&record.transfer.nonce) {
            return false;
        }
        chain.insert(record.transfer.nonce, txid);
        self.records.insert(txid, record);
        true
    }

    /// Removes a transfer and the sender's later ones, which cannot be mined without it;
    /// marks the removals for the next flush and returns their ids.
    pub fn remove(&mut self, txid: &TxId) -> Vec<TxId> {
        let Some(record) = self.records.get(txid) else { return Vec::new() };
        let (sender, nonce) = (record.transfer.from, record.transfer.nonce);
        let later: Vec<TxId> = self
            .by_sender
            .get(&sender)
            .map(|chain| chain.range(nonce..).map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in &later {
            self.forget(id);
            self.unsaved.insert(*id, false);
        }
        later
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
            let chain = self.by_sender.get(&sender).cloned().unwrap_or_default();
            let (mut next, mut spent) = (account.nonce, Amount::ZERO);
            for (nonce, txid) in chain {
                if nonce < account.nonce {
                    // Its nonce was used by a block: this one can never be mined.
                    self.forget(&txid);
                    self.unsaved.insert(txid, false);
                    dropped.push(txid);
                    continue;
                }
                let total = self.records[&txid]
                    .transfer
                    .total_cost()
                    .ok()
                    .and_then(|c| spent.checked_add(c));
                match total {
                    Some(total) if nonce == next && total <= account.balance => {
                        next += 1;
                        spent = total;
                    }
                    // A gap or an overspend: this one and every later one go.
                    _ => {
                        dropped.extend(self.remove(&txid));
                        break;
                    }
                }
            }
        }
        dropped.extend(self.enforce_caps());
        Ok(dropped)
    }

    /// Trims the pool to its limits (a reorganisation can bring back more than fits):
    /// each sender's highest nonces beyond its cap, then the cheapest chain tails.
    fn enforce_caps(&mut self) -> Vec<TxId> {
        let mut dropped = Vec::new();
        let over: Vec<TxId> = self
            .by_sender
            .values()
            .filter_map(|chain| chain.values().nth(MAX_PER_SENDER).copied())
            .collect();
        for txid in over {
            dropped.extend(self.remove(&txid));
        }
        while self.records.len() > MAX_TRANSFERS {
            let cheapest = self
                .by_sender
                .values()
                .filter_map(|chain| chain.values().next_back())
                .min_by_key(|id| self.records[*id].transfer.fee)
                .copied()
                .expect("a non-empty pool has a chain tail");
            dropped.extend(self.remove(&cheapest));
        }
        dropped
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::store::{MemoryStore, Store};
    use crate::testkit::{easy_params, keypair, mine_on, transfer};

    const NOW: u64 = raclette_protocol::params::GENESIS_TIME_MS + 1_000_000;

    /// A chain where alice has mined `blocks` rewards.
    fn funded(blocks: usize) -> Chain<MemoryStore> {
        let mut chain = Chain::open(MemoryStore::new(), easy_params(), None).unwrap();
        for _ in 0..blocks {
            let block = mine_on(&chain, &chain.tip().hash(), &keypair("alice"), vec![], 0);
            chain.import_block(block, NOW).unwrap();
        }
        chain
    }

    fn reward() -> u64 {
        easy_params().block_reward.units()
    }

    #[test]
    fn given_sender_queueing_nonces_when_added_then_chain_accepted_and_gaps_refused() {
        let params = easy_params();
        let chain = funded(1);
        let reader = chain.store().reader().unwrap();
        let (alice, bob) = (keypair("alice"), keypair("bob"));
        let mut pool = Mempool::new(params.network_id());
        for nonce in 0..3 {
            pool.add(&reader, transfer(&params, &alice, &bob, 10, 1, nonce), NOW).unwrap();
        }
        assert_eq!(pool.next_nonce(&alice.public(), 0), 3);
        assert_eq!(
            pool.add(&reader, transfer(&params, &alice, &bob, 10, 1, 5), NOW),
            Err(MempoolError::State(StateError::NonceGap { expected: 3, found: 5 }))
        );
        assert_eq!(
            pool.add(&reader, transfer(&params, &alice, &bob, 11, 1, 1), NOW),
            Err(MempoolError::NonceTaken { nonce: 1 })
        );
        assert_eq!(
            pool.add(&reader, transfer(&params, &alice, &bob, 10, 1, 0), NOW),
            Err(MempoolError::AlreadyKnown)
        );
        // The balance counts what is already pending.
        let rest = reward() - 3 * 11;
        assert!(matches!(
            pool.add(&reader, transfer(&params, &alice, &bob, rest, 1, 3), NOW),
            Err(MempoolError::State(StateError::Overspend { .. }))
        ));
        pool.add(&reader, transfer(&params, &alice, &bob, rest - 1, 1, 3), NOW).unwrap();
        assert_eq!(pool.pending_for(&bob.public()).0, Amount::from_units(30 + rest - 1));
    }

    #[test]
    fn given_invalid_transfer_when_added_then_peer_fault() {
        let params = easy_params();
        let chain = funded(1);
        let mut forged = transfer(&params, &keypair("alice"), &keypair("bob"), 10, 1, 0);
        forged.fee = Amount::from_units(0);
        let error = Mempool::new(params.network_id())
            .add(&chain.store().reader().unwrap(), forged, NOW)
            .unwrap_err();
        assert!(error.is_peer_fault());
        assert!(
            !MempoolError::State(StateError::NonceGap { expected: 0, found: 1 }).is_peer_fault()
        );
    }

    #[test]
    fn given_sender_at_cap_when_adding_then_refused() {
        let params = easy_params();
        let chain = funded(0);
        let reader = chain.store().reader().unwrap();
        let (alice, bob) = (keypair("alice"), keypair("bob"));
        let mut pool = Mempool::new(params.network_id());
        for nonce in 0..MAX_PER_SENDER as u64 {
            pool.add(&reader, transfer(&params, &alice, &bob, 0, 0, nonce), NOW).unwrap();
        }
        assert_eq!(
            pool.add(&reader, transfer(&params, &alice, &bob, 0, 0, MAX_PER_SENDER as u64), NOW),
            Err(MempoolError::SenderFull)
        );
    }

    #[test]
    fn given_a_minimum_relay_fee_then_free_messages_are_refused_without_blame() {
        let params = easy_params();
        let chain = funded(1);
        let reader = chain.store().reader().unwrap();
        let min = Amount::from_units(10_000);
        let mut pool = Mempool::new(params.network_id()).with_min_fee(min);
        let (spammer, bob) = (keypair("spammer"), keypair("bob"));
        let free = transfer(&params, &spammer, &bob, 0, 0, 0);
        let error = pool.add(&reader, free, NOW).unwrap_err();
        assert_eq!(error, MempoolError::FeeTooLow { fee: Amount::ZERO, min });
        assert!(!error.is_peer_fault(), "policy, not a broken rule");
        assert!(pool.is_empty());
        // Alice, who mined a block, pays the minimum for a message of 0: taken.
        let paid = transfer(&params, &keypair("alice"), &bob, 0, 10_000, 0);
        pool.add(&reader, paid, NOW).unwrap();
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn given_full_pool_when_higher_fee_arrives_then_lowest_fee_tail_evicted() {
        let params = easy_params();
        let mut chain = funded(0);
        let block = mine_on(&chain, &chain.tip().hash(), &keypair("rich"), vec![], 0);
        chain.import_block(block, NOW).unwrap();
        let reader = chain.store().reader().unwrap();
        let mut pool = Mempool::new(params.network_id());
        let bob = keypair("bob");
        // Fill with fee-0 messages from many senders (amount 0 needs no balance).
        for i in 0..MAX_TRANSFERS {
            pool.insert_unchecked(transfer(&params, &keypair(&format!("s{i}")), &bob, 0, 0, 0));
        }
        let cheap = transfer(&params, &keypair("late"), &bob, 0, 0, 0);
        assert_eq!(pool.add(&reader, cheap, NOW), Err(MempoolError::Full));
        // A paying transfer (from "rich", who mined a block) replaces a fee-0 one.
        let paying = transfer(&params, &keypair("rich"), &bob, 0, 5, 0);
        pool.add(&reader, paying.clone(), NOW).unwrap();
        assert_eq!(pool.len(), MAX_TRANSFERS);
        assert!(pool.get(&paying.txid()).is_some());
    }

    #[test]
    fn given_several_senders_when_selecting_then_fee_order_within_nonce_order() {
        let params = easy_params();
        let mut chain = funded(2);
        let block = mine_on(&chain, &chain.tip().hash(), &keypair("carol"), vec![], 0);
        chain.import_block(block, NOW).unwrap();
        let reader = chain.store().reader().unwrap();
        let (alice, bob, carol) = (keypair("alice"), keypair("bob"), keypair("carol"));
        let mut pool = Mempool::new(params.network_id());
        let a0 = transfer(&params, &alice, &bob, 1, 1, 0);
        let a1 = transfer(&params, &alice, &bob, 1, 50, 1);
        let c0 = transfer(&params, &carol, &bob, 1, 10, 0);
        for t in [&a0, &a1, &c0] {
            pool.add(&reader, t.clone(), NOW).unwrap();
        }
        let chosen: Vec<TxId> = pool.select().iter().map(Transfer::txid).collect();
        assert_eq!(chosen, vec![c0.txid(), a0.txid(), a1.txid()]);
    }

    #[test]
    fn given_flushed_pool_when_loaded_again_then_same_and_stale_dropped() {
        let params = easy_params();
        let mut chain = funded(1);
        let (alice, bob) = (keypair("alice"), keypair("bob"));
        let mut pool = Mempool::new(params.network_id());
        let t0 = transfer(&params, &alice, &bob, 10, 1, 0);
        let t1 = transfer(&params, &alice, &bob, 10, 1, 1);
        {
            let reader = chain.store().reader().unwrap();
            pool.add(&reader, t0.clone(), NOW).unwrap();
            pool.add(&reader, t1.clone(), NOW).unwrap();
        }
        let mut writer = chain.store().writer().unwrap();
        pool.flush(&mut writer).unwrap();
        writer.commit().unwrap();
        assert!(!pool.has_unsaved());
        let reloaded =
            Mempool::load(params.network_id(), &chain.store().reader().unwrap()).unwrap();
        assert_eq!(reloaded.len(), 2);
        // t0 gets mined: the table loses it in the same transaction, t1 stays valid.
        let block = mine_on(&chain, &chain.tip().hash(), &bob, vec![t0.clone()], 0);
        chain.import_block(block, NOW).unwrap();
        let reloaded =
            Mempool::load(params.network_id(), &chain.store().reader().unwrap()).unwrap();
        assert_eq!(reloaded.len(), 1);
        assert!(reloaded.get(&t1.txid()).is_some());
    }

    #[test]
    fn given_tip_change_spending_the_balance_when_revalidated_then_dependent_transfers_drop() {
        let params = easy_params();
        let mut chain = funded(1);
        let (alice, bob, carol) = (keypair("alice"), keypair("bob"), keypair("carol"));
        let mut pool = Mempool::new(params.network_id());
        let pending = [
            transfer(&params, &alice, &bob, reward() / 2, 0, 0),
            transfer(&params, &alice, &bob, reward() / 4, 0, 1),
        ];
        for t in &pending {
            pool.add(&chain.store().reader().unwrap(), t.clone(), NOW).unwrap();
        }
        // A block spends almost everything with a different nonce-0 transfer.
        let conflicting = transfer(&params, &alice, &carol, reward() - 10, 0, 0);
        let block = mine_on(&chain, &chain.tip().hash(), &carol, vec![conflicting], 0);
        let change = chain.import_block(block, NOW).unwrap().tip_change.unwrap();
        let dropped =
            pool.apply_tip_change(&change, &chain.store().reader().unwrap(), NOW).unwrap();
        assert_eq!(dropped.len(), 2);
        assert!(pool.is_empty());
    }

    #[test]
    fn given_a_sender_chain_when_one_is_removed_then_later_nonces_go_too_and_the_nonce_is_free() {
        let params = easy_params();
        let chain = funded(1);
        let reader = chain.store().reader().unwrap();
        let (alice, bob) = (keypair("alice"), keypair("bob"));
        let mut pool = Mempool::new(params.network_id());
        let txs: Vec<Transfer> =
            (0..3).map(|nonce| transfer(&params, &alice, &bob, 10, 1, nonce)).collect();
        for t in &txs {
            pool.add(&reader, t.clone(), NOW).unwrap();
        }
        assert_eq!(pool.remove(&txs[1].txid()), vec![txs[1].txid(), txs[2].txid()]);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.next_nonce(&alice.public(), 0), 1);
        let replacement = transfer(&params, &alice, &keypair("carol"), 10, 1, 1);
        pool.add(&reader, replacement.clone(), NOW).unwrap();
        assert_eq!(pool.pending_for(&alice.public()).1, Amount::from_units(22));
    }

    #[test]
    fn given_a_block_using_some_nonces_when_revalidated_then_only_those_go() {
        let params = easy_params();
        let mut chain = funded(1);
        let (alice, bob) = (keypair("alice"), keypair("bob"));
        let mut pool = Mempool::new(params.network_id());
        let txs: Vec<Transfer> =
            (0..4).map(|nonce| transfer(&params, &alice, &bob, 10, 1, nonce)).collect();
        for t in &txs {
            pool.add(&chain.store().reader().unwrap(), t.clone(), NOW).unwrap();
        }
        // A block from elsewhere used nonces 0 and 1 for other transfers of alice's.
        let carol = keypair("carol");
        let others = vec![
            transfer(&params, &alice, &carol, 3, 1, 0),
            transfer(&params, &alice, &carol, 3, 1, 1),
        ];
        let block = mine_on(&chain, &chain.tip().hash(), &bob, others, 0);
        let change = chain.import_block(block, NOW).unwrap().tip_change.unwrap();
        pool.apply_tip_change(&change, &chain.store().reader().unwrap(), NOW).unwrap();
        let mut left: Vec<TxId> = pool.iter().map(|(id, _)| *id).collect();
        left.sort();
        let mut expected = vec![txs[2].txid(), txs[3].txid()];
        expected.sort();
        assert_eq!(left, expected);
    }
}
