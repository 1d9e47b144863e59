//! The chain: which blocks are valid, which chain is best, and the account state at its
//! tip.
//!
//! [`Chain::import_block`] runs the validation ladder (header → block → state), stores
//! the block, and when the block's branch has more cumulative work than the current
//! tip, switches to it: disconnecting blocks back to the fork point with their undo
//! data and connecting the new branch. Everything one import changes — block, index,
//! accounts, undo data, transaction index, mempool and inbox tables, tip — is written in
//! one store transaction, so a crash leaves either all of it or none.
//!
//! The chain does no networking and reads no clock: the caller passes the time.

pub mod orphans;
pub mod state;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};

use raclette_protocol::{
    Block, BlockHash, CompactTarget, NetworkId, NetworkParams, PublicKey, Transaction, TxId, Work,
};
use tracing::{debug, info};

use crate::store::{
    Account, BlockEntry, BlockStatus, InboxRecord, MempoolRecord, Store, StoreError, StoreRead,
    StoreWrite, Table, Undo, WriteTables,
};
use orphans::OrphanPool;
use raclette_protocol::params::MEDIAN_TIME_BLOCKS;
use rayon::prelude::*;
use state::{Accounts, BlockStateError, apply_block, touched_keys};
use validate::{
    BlockError, CheckedBlock, HeaderContext, HeaderError, check_block, check_commitment,
    check_header, check_proof_of_work, header_context,
};

/// Most hashes remembered as invalid without being stored.
const MAX_INVALID_CACHE: usize = 10_000;

/// Why a block was not imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A header rule.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A block rule.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A state rule.
    #[error(transparent)]
    State(#[from] BlockStateError),
    /// The block was already found invalid.
    #[error("block {0} is known to be invalid")]
    KnownInvalid(BlockHash),
    /// An ancestor is invalid, so this block is too.
    #[error("block descends from invalid block {0}")]
    InvalidAncestor(BlockHash),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImportError {
    /// Whether the peer that sent the block deserves a penalty ([`crate::verdict`]).
    pub fn is_peer_fault(&self) -> bool {
        crate::verdict::verdict(crate::verdict::Refusal::Import(self)).is_fault()
    }
}

/// Why a chain of headers (from sync) does not hold up, as
/// [`Chain::check_header_chain`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderChainError {
    /// The first header builds on a block that is not stored.
    #[error("the headers build on unknown block {0}")]
    UnknownParent(BlockHash),
    /// A header breaks a rule.
    #[error(transparent)]
    Header(HeaderError),
}

/// Where a block's branch meets the best chain, as [`Chain::fork_depth`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkDepth {
    /// The block is not stored (unknown, or held as an orphan).
    Unknown,
    /// This many blocks below the tip.
    Within(u64),
    /// Deeper than the limit asked about.
    Deeper,
}

/// Where an imported block ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On the best chain (it extended it, or its branch took over).
    BestChain,
    /// Stored on a side chain with no more work than the best one.
    SideChain,
    /// Parent unknown: held as an orphan until `missing` arrives.
    Orphan {
        /// The oldest missing ancestor to fetch.
        missing: BlockHash,
    },
    /// Already stored.
    AlreadyKnown,
}

/// How the best chain moved during one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipChange {
    /// The tip before.
    pub previous_tip: BlockHash,
    /// Blocks taken off the best chain, newest first.
    pub disconnected: Vec<Block>,
    /// Blocks put on the best chain, oldest first.
    pub connected: Vec<Block>,
}

impl TipChange {
    /// Whether the change removed blocks (a reorganisation).
    pub fn is_reorg(&self) -> bool {
        !self.disconnected.is_empty()
    }
}

/// The result of [`Chain::import_block`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The block's hash.
    pub hash: BlockHash,
    /// Where it went.
    pub placement: Placement,
    /// How the best chain moved, counting orphans that this block let connect.
    pub tip_change: Option<TipChange>,
}

/// What a miner needs to build on the tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBlock {
    /// The parent: the current tip.
    pub parent: BlockHash,
    /// Height of the new block.
    pub height: u64,
    /// The target it must carry.
    pub bits: CompactTarget,
    /// Its time must be greater than this.
    pub median_time_ms: u64,
    /// And at least this (the timewarp rule; 0 inside a retarget window).
    pub window_floor_ms: u64,
}

/// A set that remembers at most `capacity` items, forgetting the oldest first.
#[derive(Debug)]
struct RecentSet<T: Eq + std::hash::Hash + Copy> {
    items: HashSet<T>,
    order: VecDeque<T>,
    capacity: usize,
}

impl<T: Eq + std::hash::Hash + Copy> RecentSet<T> {
    fn new(capacity: usize) -> Self {
        Self { items: HashSet::new(), order: VecDeque::new(), capacity }
    }

    fn insert(&mut self, item: T) {
        if self.items.insert(item) {
            self.order.push_back(item);
        }
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("over capacity, so not empty");
            self.items.remove(&oldest);
        }
    }

    fn contains(&self, item: &T) -> bool {
        self.items.contains(item)
    }
}

/// Accumulates the net movement of the best chain over several connects and
/// disconnects.
#[derive(Debug, Default)]
struct TipDiff {
    disconnected: Vec<Block>,
    connected: Vec<Block>,
}

impl TipDiff {
    fn connect(&mut self, block: Block) {
        let hash = block.hash();
        match self.disconnected.iter().position(|b| b.hash() == hash) {
            Some(index) => {
                self.disconnected.remove(index);
            }
            None => self.connected.push(block),
        }
    }

    fn disconnect(&mut self, block: Block) {
        if self.connected.last().is_some_and(|b| b.hash() == block.hash()) {
            self.connected.pop();
        } else {
            self.disconnected.push(block);
        }
    }

    fn into_change(self, previous_tip: BlockHash) -> Option<TipChange> {
        let empty = self.connected.is_empty() && self.disconnected.is_empty();
        (!empty).then_some(TipChange {
            previous_tip,
            disconnected: self.disconnected,
            connected: self.connected,
        })
    }
}

/// One tip change equivalent to several in sequence.
pub fn merge_changes(changes: impl IntoIterator<Item = TipChange>) -> Option<TipChange> {
    let mut changes = changes.into_iter();
    let first = changes.next()?;
    let previous_tip = first.previous_tip;
    let mut diff = TipDiff::default();
    for change in std::iter::once(first).chain(changes) {
        for block in change.disconnected {
            diff.disconnect(block);
        }
        for block in change.connected {
            diff.connect(block);
        }
    }
    diff.into_change(previous_tip)
}

/// Where a branch turned out invalid while switching to it.
struct BadBranch {
    /// The first invalid block.
    at: BlockHash,
    /// The branch's tip, whose import found it.
    entry: BlockEntry,
    /// The rule `at` broke.
    error: ImportError,
}

/// Blocks whose stateless checks run together, on all cores, while earlier blocks are
/// written: enough to keep the cores busy, few enough that a failure early in a batch
/// wastes little.
const PIPELINE_CHUNK: usize = 16;
/// Chunks checked and waiting to be written, at most.
const PIPELINE_AHEAD: usize = 2;

/// The stateless checks of a block: already run ahead of the import, or to be run when
/// the import gets to them.
struct Precheck<'a> {
    verified: &'a RecentSet<TxId>,
    checked: Option<Result<CheckedBlock, BlockError>>,
}

impl Precheck<'_> {
    fn result(self, network: &NetworkId, block: &Block) -> Result<CheckedBlock, BlockError> {
        let verified = self.verified;
        self.checked.unwrap_or_else(|| check_block(network, block, &|txid| verified.contains(txid)))
    }
}

/// How importing one block inside a batch failed.
enum InError {
    /// The block broke a rule before anything was written for it.
    Rejected(ImportError),
    /// Switching to the block's branch found an invalid block; the writer holds a partial
    /// reorganisation and must be dropped.
    BadBranch(Box<BadBranch>),
    /// The store failed; the writer must be dropped.
    Fatal(StoreError),
}

impl From<StoreError> for InError {
    fn from(error: StoreError) -> Self {
        InError::Fatal(error)
    }
}

/// Why switching to a branch failed.
enum SwitchError {
    /// Block `at` of the branch broke a rule.
    Invalid { at: BlockHash, error: Box<ImportError> },
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for SwitchError {
    fn from(error: StoreError) -> Self {
        SwitchError::Store(error)
    }
}

/// The chain state over a store.
pub struct Chain<S: Store> {
    store: S,
    rules: Rules,
    state: ChainState,
    /// Transactions whose signatures this node already verified (when they entered the
    /// mempool), so that a block carrying them does not verify them again, as Bitcoin
    /// Core's signature cache does. Memory only: after a restart, blocks are verified in
    /// full.
    verified: RecentSet<TxId>,
}

/// What validation needs that never changes while the node runs.
struct Rules {
    params: NetworkParams,
    network: NetworkId,
    /// Transfers to this key go into the inbox table as they connect.
    wallet: Option<PublicKey>,
}

/// What the chain keeps in memory besides the store.
struct ChainState {
    /// The best tip (as of the open write transaction, during a batch).
    tip: BlockEntry,
    orphans: OrphanPool,
    /// Who sent the blocks being imported, for the orphans among them.
    source: orphans::Source,
    /// Blocks found invalid before being stored (bad PoW, bad signatures...).
    invalid: RecentSet<BlockHash>,
}

/// Most transaction ids remembered as having a verified signature.
const MAX_VERIFIED_CACHE: usize = 100_000;

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt { table: Table::Entries.name(), reason: what }
}

impl<S: Store> Chain<S> {
    /// Opens the chain in `store`, writing the genesis block if the store is new.
    /// Transfers to `wallet` are recorded in the inbox table as blocks connect.
    ///
    /// Opening reads only the tip: it never replays the chain.
    pub fn open(
        store: S,
        params: NetworkParams,
        wallet: Option<PublicKey>,
    ) -> Result<Self, StoreError> {
        let network = params.network_id();
        let stored_network = store.reader()?.network()?;
        match stored_network {
            Some(found) if found != network => {
                return Err(StoreError::WrongNetwork {
                    expected: network.to_string(),
                    found: found.to_string(),
                });
            }
            Some(_) => {}
            None => {
                let genesis = params.genesis();
                let hash = genesis.hash();
                let target = genesis.header.bits.to_target().map_err(|e| corrupt(e.to_string()))?;
                let mut writer = store.writer()?;
                writer.put_entry(&BlockEntry {
                    header: genesis.header,
                    work: target.work(),
                    status: BlockStatus::Valid,
                    received_ms: genesis.header.time_ms,
                })?;
                writer.put_block(&hash, &genesis)?;
                writer.set_best(0, &hash)?;
                for tx in &genesis.transactions {
                    writer.index_tx(&tx.txid(), &hash)?;
                }
                writer.set_tip(&hash)?;
                writer.set_network(&network)?;
                writer.commit()?;
                info!(%network, "created the genesis block RacletteCheese");
            }
        }
        let tip = Self::load_tip(&store)?;
        Ok(Self {
            store,
            rules: Rules { params, network, wallet },
            state: ChainState {
                tip,
                orphans: OrphanPool::default(),
                source: orphans::LOCAL,
                invalid: RecentSet::new(MAX_INVALID_CACHE),
            },
            verified: RecentSet::new(MAX_VERIFIED_CACHE),
        })
    }

    fn load_tip(store: &S) -> Result<BlockEntry, StoreError> {
        let reader = store.reader()?;
        let hash = reader.tip()?.ok_or_else(|| corrupt("no tip".into()))?;
        reader.entry(&hash)?.ok_or_else(|| corrupt(format!("no entry for tip {hash}")))
    }

    /// The best tip.
    pub fn tip(&self) -> &BlockEntry {
        &self.state.tip
    }

    /// The network parameters.
    pub fn params(&self) -> &NetworkParams {
        &self.rules.params
    }

    /// The network id.
    pub fn network(&self) -> NetworkId {
        self.rules.network
    }

    /// The underlying store, for queries.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Records that `txid`'s signature was verified (it passed the mempool's checks), so a
    /// block holding it need not verify it again.
    pub fn note_verified(&mut self, txid: TxId) {
        self.verified.insert(txid);
    }

    /// Number of orphan blocks held.
    pub fn orphan_count(&self) -> usize {
        self.state.orphans.len()
    }

    /// Whether the block is stored or held as an orphan.
    pub fn knows(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(self.state.orphans.contains(hash) || self.store.reader()?.entry(hash)?.is_some())
    }

    /// The sources of orphans dropped from the pool without ever connecting since the
    /// last call, one entry per orphan (see [`orphans`]).
    pub fn take_evicted_orphans(&mut self) -> Vec<orphans::Source> {
        self.state.orphans.take_evicted()
    }

    /// [`Chain::import_block`] for a block from `source`: if it is an orphan, it counts
    /// against that source's share of the pool.
    pub fn import_block_from(
        &mut self,
        block: Block,
        now_ms: u64,
        source: orphans::Source,
    ) -> Result<Imported, ImportError> {
        self.state.source = source;
        let result = self.import_block(block, now_ms);
        self.state.source = orphans::LOCAL;
        result
    }

    /// Validates and stores a block, switching the best chain if its branch now has the
    /// most work, then connects any orphans that were waiting for it. The returned tip
    /// change covers both.
    pub fn import_block(&mut self, block: Block, now_ms: u64) -> Result<Imported, ImportError> {
        let (imported, failure) = self.import_blocks(vec![block], now_ms);
        if let Some((_, error)) = failure {
            return Err(error);
        }
        let mut results = imported.into_iter();
        let first = results.next().expect("one block in, one result out");
        let changes =
            first.tip_change.into_iter().chain(results.filter_map(|orphan| orphan.tip_change));
        Ok(Imported { tip_change: merge_changes(changes), ..first })
    }

    /// Imports `blocks` in order in one store transaction: a syncing node's batch of
    /// blocks costs one commit instead of one per block. Stops at the first block that
    /// fails and keeps everything before it. Returns the result of each imported block
    /// (then of any orphans they let connect) and the failure with its index. On a store
    /// error nothing of the batch is kept.
    ///
    /// A batch of several blocks is pipelined: the stateless checks of each block (its
    /// transactions encoded and hashed once, every signature verified, on all cores) run
    /// a chunk ahead of this thread, which checks headers, applies state and writes. A
    /// single block, from gossip, is checked only once it is known to be new.
    pub fn import_blocks(
        &mut self,
        blocks: Vec<Block>,
        now_ms: u64,
    ) -> (Vec<Imported>, Option<(usize, ImportError)>) {
        let saved_tip = self.state.tip.clone();
        let mut writer = match self.store.writer() {
            Ok(writer) => writer,
            Err(error) => return (Vec::new(), Some((0, error.into()))),
        };
        let mut imported = Vec::with_capacity(blocks.len());
        let (rules, state, verified) = (&self.rules, &mut self.state, &self.verified);
        let pipelined = blocks.len() > 1;
        let stop = std::thread::scope(|scope| {
            // The checks run on their own, up to `PIPELINE_AHEAD` chunks ahead of the
            // writes; they stop when this thread stops listening.
            let mut checks = pipelined.then(|| {
                let (sender, receiver) = std::sync::mpsc::sync_channel(PIPELINE_AHEAD);
                let blocks = &blocks;
                scope.spawn(move || {
                    for chunk in blocks.chunks(PIPELINE_CHUNK) {
                        let checked: Vec<_> = chunk
                            .par_iter()
                            .map(|block| {
                                check_block(&rules.network, block, &|txid| verified.contains(txid))
                            })
                            .collect();
                        if sender.send(checked).is_err() {
                            break;
                        }
                    }
                });
                receiver.into_iter().flatten()
            });
            for (index, block) in blocks.iter().enumerate() {
                let checked = checks.as_mut().and_then(Iterator::next);
                let previous_tip = state.tip.hash();
                let mut diff = TipDiff::default();
                let lazy = Precheck { verified, checked };
                match state.import_in(rules, &mut writer, block, lazy, now_ms, &mut diff) {
                    Ok(placement) => imported.push(Imported {
                        hash: block.hash(),
                        placement,
                        tip_change: diff.into_change(previous_tip),
                    }),
                    Err(error) => return Some((index, error)),
                }
            }
            None
        });
        let failure = match stop {
            None => None,
            Some((index, InError::Rejected(error))) => Some((index, error)),
            Some((index, InError::Fatal(error))) => {
                drop(writer);
                self.state.tip = saved_tip;
                return (Vec::new(), Some((index, error.into())));
            }
            Some((index, InError::BadBranch(bad))) => {
                let BadBranch { at, entry, error } = *bad;
                // The writer holds half a reorganisation: drop all of it, redo the
                // blocks before this one, then record the invalid branch.
                drop(writer);
                self.state.tip = saved_tip;
                let hash = blocks[index].hash();
                let mut blocks = blocks;
                blocks.truncate(index);
                let (imported, redo_failure) = self.import_blocks(blocks, now_ms);
                if redo_failure.is_some() {
                    return (imported, redo_failure);
                }
                if let Err(store_error) = self.mark_invalid(at, &entry, &error) {
                    return (imported, Some((index, store_error.into())));
                }
                self.state.invalid.insert(hash);
                let error = if at == hash { error } else { ImportError::InvalidAncestor(at) };
                return (imported, Some((index, error)));
            }
        };
        if let Err(error) = writer.commit() {
            self.state.tip = saved_tip;
            return (Vec::new(), Some((0, error.into())));
        }
        for index in 0..imported.len() {
            if matches!(imported[index].placement, Placement::BestChain | Placement::SideChain) {
                let hash = imported[index].hash;
                self.connect_orphans(&hash, now_ms, &mut imported);
            }
        }
        (imported, failure)
    }

    /// Imports the orphans waiting for `parent`, and theirs in turn.
    fn connect_orphans(&mut self, parent: &BlockHash, now_ms: u64, results: &mut Vec<Imported>) {
        let mut waiting = self.state.orphans.take_children(parent);
        while let Some(orphan) = waiting.pop() {
            let orphan_hash = orphan.hash();
            let (imported, failure) = self.import_blocks_without_orphans(orphan, now_ms);
            match failure {
                None => {
                    if imported
                        .iter()
                        .any(|i| matches!(i.placement, Placement::BestChain | Placement::SideChain))
                    {
                        waiting.extend(self.state.orphans.take_children(&orphan_hash));
                    }
                    results.extend(imported);
                }
                Some((_, error)) => {
                    debug!(%orphan_hash, %error, "orphan rejected once its parent arrived")
                }
            }
        }
    }

    /// One block, one transaction, no orphan processing (the caller does that).
    fn import_blocks_without_orphans(
        &mut self,
        block: Block,
        now_ms: u64,
    ) -> (Vec<Imported>, Option<(usize, ImportError)>) {
        let saved_orphans = std::mem::take(&mut self.state.orphans);
        let result = self.import_blocks(vec![block], now_ms);
        let children_of_this = std::mem::replace(&mut self.state.orphans, saved_orphans);
        debug_assert!(children_of_this.is_empty(), "no orphans while the pool is set aside");
        result
    }

    /// Marks `first_bad` and every block from it up to `last` (its descendant) invalid.
    fn mark_invalid(
        &self,
        first_bad: BlockHash,
        last: &BlockEntry,
        error: &ImportError,
    ) -> Result<(), StoreError> {
        let mut writer = self.store.writer()?;
        let mut current = last.clone();
        loop {
            let reason = if current.hash() == first_bad {
                error.to_string()
            } else {
                format!("descends from invalid block {first_bad}")
            };
            let at_first_bad = current.hash() == first_bad;
            writer.put_entry(&BlockEntry {
                status: BlockStatus::Invalid { reason },
                ..current.clone()
            })?;
            if at_first_bad {
                break;
            }
            current = writer
                .entry(&current.header.prev)?
                .ok_or_else(|| corrupt(format!("missing parent of {}", current.hash())))?;
        }
        writer.commit()?;
        info!(block = %first_bad, %error, "marked a block invalid");
        Ok(())
    }

    /// The account at the tip.
    pub fn account(&self, key: &PublicKey) -> Result<Account, StoreError> {
        self.store.reader()?.account(key)
    }

    /// A stored block by hash, with its entry.
    pub fn block(&self, hash: &BlockHash) -> Result<Option<(BlockEntry, Block)>, StoreError> {
        let reader = self.store.reader()?;
        let Some(entry) = reader.entry(hash)? else { return Ok(None) };
        Ok(reader.block(hash)?.map(|block| (entry, block)))
    }

    /// The best chain's block at `height`.
    pub fn block_at(&self, height: u64) -> Result<Option<(BlockEntry, Block)>, StoreError> {
        let Some(hash) = self.store.reader()?.best_hash_at(height)? else { return Ok(None) };
        self.block(&hash)
    }

    /// Up to `limit` best-chain blocks from height `top` down.
    pub fn blocks_down_from(
        &self,
        top: u64,
        limit: usize,
    ) -> Result<Vec<(BlockEntry, Block)>, StoreError> {
        let reader = self.store.reader()?;
        let mut blocks = Vec::new();
        for hash in reader.best_hashes_down_from(top, limit)? {
            let entry =
                reader.entry(&hash)?.ok_or_else(|| corrupt(format!("missing entry {hash}")))?;
            let block =
                reader.block(&hash)?.ok_or_else(|| corrupt(format!("missing block {hash}")))?;
            blocks.push((entry, block));
        }
        Ok(blocks)
    }

    /// A confirmed transaction and the best-chain block holding it.
    pub fn transaction(
        &self,
        txid: &TxId,
    ) -> Result<Option<(Transaction, BlockEntry)>, StoreError> {
        let reader = self.store.reader()?;
        let Some(hash) = reader.tx_block(txid)? else { return Ok(None) };
        let entry = reader.entry(&hash)?.ok_or_else(|| corrupt(format!("missing entry {hash}")))?;
        let block = reader.block(&hash)?.ok_or_else(|| corrupt(format!("missing block {hash}")))?;
        Ok(block.transactions.into_iter().find(|tx| tx.txid() == *txid).map(|tx| (tx, entry)))
    }

    /// Height of the best-chain block holding `txid`, if confirmed.
    pub fn confirmation_height(&self, txid: &TxId) -> Result<Option<u64>, StoreError> {
        let reader = self.store.reader()?;
        let Some(hash) = reader.tx_block(txid)? else { return Ok(None) };
        Ok(reader.entry(&hash)?.map(|entry| entry.height()))
    }

    /// A block locator for the best chain: the tip, then each of the nine blocks below,
    /// then steps doubling in size, and genesis last (at most 64 hashes).
    pub fn locator(&self) -> Result<Vec<BlockHash>, StoreError> {
        let reader = self.store.reader()?;
        let mut hashes = Vec::new();
        let mut height = self.state.tip.height();
        let mut step = 1u64;
        loop {
            if let Some(hash) = reader.best_hash_at(height)? {
                hashes.push(hash);
            }
            if height == 0 || hashes.len() >= raclette_protocol::wire::MAX_LOCATOR_HASHES - 1 {
                break;
            }
            if hashes.len() >= 10 {
                step *= 2;
            }
            height = height.saturating_sub(step);
        }
        if hashes.last() != Some(&self.rules.params.genesis().hash()) {
            hashes.push(self.rules.params.genesis().hash());
        }
        Ok(hashes)
    }

    /// Up to `limit` best-chain headers following the first locator hash that is on the
    /// best chain (genesis if none is).
    pub fn headers_after(
        &self,
        locator: &[BlockHash],
        limit: usize,
    ) -> Result<Vec<raclette_protocol::BlockHeader>, StoreError> {
        let reader = self.store.reader()?;
        let mut start = 0;
        for hash in locator {
            if let Some(entry) = reader.entry(hash)?
                && reader.is_on_best_chain(&entry)?
            {
                start = entry.height();
                break;
            }
        }
        let top = self.state.tip.height().min(start.saturating_add(limit as u64));
        let mut headers = Vec::new();
        for height in start + 1..=top {
            let hash = reader
                .best_hash_at(height)?
                .ok_or_else(|| corrupt(format!("no best block at {height}")))?;
            let entry =
                reader.entry(&hash)?.ok_or_else(|| corrupt(format!("missing entry {hash}")))?;
            headers.push(entry.header);
        }
        Ok(headers)
    }

    /// Stored blocks by hash, in the order asked, skipping unknown ones.
    pub fn blocks_by_hash(&self, hashes: &[BlockHash]) -> Result<Vec<Block>, StoreError> {
        let reader = self.store.reader()?;
        let mut blocks = Vec::new();
        for hash in hashes {
            if let Some(block) = reader.block(hash)? {
                blocks.push(block);
            }
        }
        Ok(blocks)
    }

    /// The chain status peers exchange on connect.
    pub fn status(&self) -> raclette_protocol::wire::ChainStatus {
        raclette_protocol::wire::ChainStatus {
            network: self.rules.network,
            height: self.state.tip.height(),
            tip: self.state.tip.hash(),
            work: self.state.tip.work,
        }
    }

    /// How far below the tip the branch ending at `hash` meets the best chain (for a
    /// best-chain block, its own depth), looking at most `limit` blocks down.
    pub fn fork_depth(&self, hash: &BlockHash, limit: u64) -> Result<ForkDepth, StoreError> {
        let reader = self.store.reader()?;
        // Orphans are not stored: their branch meets nothing yet.
        let Some(mut entry) = reader.entry(hash)? else { return Ok(ForkDepth::Unknown) };
        for _ in 0..=limit {
            if reader.is_on_best_chain(&entry)? {
                let depth = self.state.tip.height().saturating_sub(entry.height());
                return Ok(if depth <= limit {
                    ForkDepth::Within(depth)
                } else {
                    ForkDepth::Deeper
                });
            }
            match reader.entry(&entry.header.prev)? {
                Some(parent) => entry = parent,
                None => return Err(corrupt(format!("stored block {hash} lacks an ancestor"))),
            }
        }
        Ok(ForkDepth::Deeper)
    }

    /// The cumulative work a chain of `headers` would have, continuing the stored block
    /// that the first one builds on (`None` if that block is unknown or a target invalid).
    pub fn work_of_headers(
        &self,
        headers: &[raclette_protocol::BlockHeader],
    ) -> Result<Option<Work>, StoreError> {
        let Some(first) = headers.first() else { return Ok(Some(self.state.tip.work)) };
        let Some(base) = self.store.reader()?.entry(&first.prev)? else { return Ok(None) };
        let mut work = base.work;
        for header in headers {
            match header.bits.to_target() {
                Ok(target) => work = work + target.work(),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(work))
    }

    /// Checks `headers[from..]` against the header rules (§10.1 of PROTOCOL.md: version,
    /// height, the target the retarget rule requires, proof of work, time above the
    /// median and not too far ahead), as a branch continuing the stored block that
    /// `headers[0]` builds on, with `headers[..from]` (already checked) as their
    /// ancestors. The headers must link up (each `prev` the previous one's hash).
    ///
    /// Returns the index of the first header that breaks a rule, with the rule; a first
    /// header whose parent is not stored is `UnknownParent` at index 0.
    ///
    /// `headers[..from]` may also be a window of a longer branch whose start is not
    /// stored, if it holds at least [`Chain::header_context_len`] headers: all the
    /// context the rules need. That checks a branch longer than memory holds, page by
    /// page.
    pub fn check_header_chain(
        &self,
        headers: &[raclette_protocol::BlockHeader],
        from: usize,
        now_ms: u64,
    ) -> Result<Result<(), (usize, HeaderChainError)>, StoreError> {
        let Some(first) = headers.first() else { return Ok(Ok(())) };
        let reader = self.store.reader()?;
        let base = reader.entry(&first.prev)?;
        if base.is_none() && from < self.header_context_len() {
            return Ok(Err((0, HeaderChainError::UnknownParent(first.prev))));
        }
        let params = &self.rules.params;
        let base_height = base.as_ref().map_or(first.height.saturating_sub(1), BlockEntry::height);
        // The header at `height` on this branch (at most the parent of the one checked).
        // Below the window, only a stored base has it: with a window as long as the
        // context, nothing is looked up there.
        let header_at = |height: u64| -> Result<raclette_protocol::BlockHeader, StoreError> {
            match (height.checked_sub(base_height + 1), &base) {
                (Some(index), _) => headers.get(index as usize).copied().ok_or_else(|| {
                    corrupt(format!("a header window lacks the context of height {height}"))
                }),
                (None, Some(base)) => Ok(ancestor(&reader, base, height)?.header),
                (None, None) => {
                    Err(corrupt(format!("a header window lacks the context of height {height}")))
                }
            }
        };
        // Timestamps of the eleven blocks before `headers[from]`, oldest first.
        let start_height = base_height + 1 + from as u64;
        let mut times: VecDeque<u64> = VecDeque::with_capacity(MEDIAN_TIME_BLOCKS + 1);
        for height in start_height.saturating_sub(MEDIAN_TIME_BLOCKS as u64)..start_height {
            times.push_back(header_at(height)?.time_ms);
        }
        for (index, header) in headers.iter().enumerate().skip(from) {
            let parent = match (index, &base) {
                (0, Some(base)) => base.header,
                (0, None) => return Ok(Err((0, HeaderChainError::UnknownParent(first.prev)))),
                _ => headers[index - 1],
            };
            let height = parent.height + 1;
            let context = header_context(
                params,
                &parent,
                || header_at(height - params.retarget_interval),
                times.iter().copied().collect(),
            )?;
            if let Err(error) = check_header(params, header, &context, now_ms) {
                return Ok(Err((index, HeaderChainError::Header(error))));
            }
            times.push_back(header.time_ms);
            if times.len() > MEDIAN_TIME_BLOCKS {
                times.pop_front();
            }
        }
        Ok(Ok(()))
    }

    /// How many headers before the first one checked give [`Chain::check_header_chain`]
    /// all the context it needs: a retarget window and the median-time span.
    pub fn header_context_len(&self) -> usize {
        (self.rules.params.retarget_interval as usize).max(MEDIAN_TIME_BLOCKS) + 1
    }

    /// What the next block on the tip must carry.
    pub fn next_block(&self) -> Result<NextBlock, StoreError> {
        let tip = self.state.tip.hash();
        Ok(self.next_block_on(&tip)?.expect("the tip is stored"))
    }

    /// What a child of `parent` must carry; `None` if `parent` is not stored.
    pub fn next_block_on(&self, parent: &BlockHash) -> Result<Option<NextBlock>, StoreError> {
        let reader = self.store.reader()?;
        let Some(entry) = reader.entry(parent)? else { return Ok(None) };
        let context = stored_header_context(&self.rules.params, &reader, &entry)?;
        Ok(Some(NextBlock {
            parent: *parent,
            height: entry.height() + 1,
            bits: context.expected_bits,
            median_time_ms: context.median_time_ms,
            window_floor_ms: context.window_floor_ms,
        }))
    }
}

/// The header context for a child of `parent`, read from the store.
fn stored_header_context<R: StoreRead + ?Sized>(
    params: &NetworkParams,
    reader: &R,
    parent: &BlockEntry,
) -> Result<HeaderContext, StoreError> {
    let mut times = Vec::with_capacity(raclette_protocol::params::MEDIAN_TIME_BLOCKS);
    let mut cursor = parent.clone();
    times.push(cursor.header.time_ms);
    while times.len() < raclette_protocol::params::MEDIAN_TIME_BLOCKS && cursor.height() > 0 {
        cursor = reader
            .entry(&cursor.header.prev)?
            .ok_or_else(|| corrupt(format!("missing parent of {}", cursor.hash())))?;
        times.push(cursor.header.time_ms);
    }
    let first = || {
        let height = parent.height() + 1 - params.retarget_interval;
        ancestor(reader, parent, height).map(|entry| entry.header)
    };
    header_context(params, &parent.header, first, times)
}

/// The ancestor of `entry` at `height` on its own branch.
fn ancestor<R: StoreRead + ?Sized>(
    reader: &R,
    entry: &BlockEntry,
    height: u64,
) -> Result<BlockEntry, StoreError> {
    if reader.is_on_best_chain(entry)? {
        let hash = reader
            .best_hash_at(height)?
            .ok_or_else(|| corrupt(format!("no best block at {height}")))?;
        return reader.entry(&hash)?.ok_or_else(|| corrupt(format!("missing entry {hash}")));
    }
    let mut cursor = entry.clone();
    while cursor.height() > height {
        cursor = reader
            .entry(&cursor.header.prev)?
            .ok_or_else(|| corrupt(format!("missing parent of {}", cursor.hash())))?;
    }
    Ok(cursor)
}

impl ChainState {
    /// The ladder for one block inside the batch's write transaction. `Rejected` errors
    /// happen before anything is written for the block.
    fn import_in<W: WriteTables>(
        &mut self,
        rules: &Rules,
        writer: &mut W,
        block: &Block,
        precheck: Precheck<'_>,
        now_ms: u64,
        diff: &mut TipDiff,
    ) -> Result<Placement, InError> {
        let hash = block.hash();
        if self.invalid.contains(&hash) {
            return Err(InError::Rejected(ImportError::KnownInvalid(hash)));
        }
        if let Some(entry) = writer.entry(&hash)? {
            return match entry.status {
                BlockStatus::Invalid { .. } => {
                    Err(InError::Rejected(ImportError::KnownInvalid(hash)))
                }
                BlockStatus::Valid | BlockStatus::Stored => Ok(Placement::AlreadyKnown),
            };
        }
        if self.orphans.contains(&hash) {
            return Ok(Placement::Orphan { missing: self.orphans.missing_root(&hash) });
        }
        let Some(parent) = writer.entry(&block.header.prev)? else {
            if let Err(error) = check_proof_of_work(&rules.params, &block.header) {
                self.invalid.insert(hash);
                return Err(InError::Rejected(error.into()));
            }
            // Held under the header's hash: the body must be the one it commits to, or a
            // swapped body would stand in for the real block.
            check_commitment(block).map_err(|error| InError::Rejected(error.into()))?;
            self.orphans.insert(block.clone(), self.source);
            return Ok(Placement::Orphan { missing: self.orphans.missing_root(&hash) });
        };
        if let BlockStatus::Invalid { .. } = parent.status {
            self.invalid.insert(hash);
            return Err(InError::Rejected(ImportError::InvalidAncestor(parent.hash())));
        }
        let context = stored_header_context(&rules.params, writer, &parent)?;
        if let Err(error) = check_header(&rules.params, &block.header, &context, now_ms) {
            if error.is_peer_fault() {
                self.invalid.insert(hash);
            }
            return Err(InError::Rejected(error.into()));
        }
        let checked = match precheck.result(&rules.network, block) {
            Ok(checked) => checked,
            Err(error) => {
                // A body that does not match its header says nothing about the block the
                // header stands for: the real one may still come. Anything found after
                // the merkle root matched is the block's own fault.
                if error != BlockError::BadMerkleRoot {
                    self.invalid.insert(hash);
                }
                return Err(InError::Rejected(error.into()));
            }
        };
        let own_work = block
            .header
            .bits
            .to_target()
            .map_err(|error| InError::Rejected(HeaderError::BadTarget(error).into()))?
            .work();
        let entry = BlockEntry {
            header: block.header,
            work: parent.work + own_work,
            status: BlockStatus::Stored,
            received_ms: now_ms,
        };
        writer.put_entry(&entry)?;
        writer.put(Table::Blocks, hash.as_bytes(), &checked.encoded)?;
        if entry.work <= self.tip.work {
            debug!(%hash, height = entry.height(), "stored a block on a side chain");
            return Ok(Placement::SideChain);
        }
        match rules.switch_to(writer, &entry, (block.clone(), checked.txids), diff, now_ms) {
            Ok(()) => {
                self.tip = BlockEntry { status: BlockStatus::Valid, ..entry };
                Ok(Placement::BestChain)
            }
            Err(SwitchError::Store(error)) => Err(InError::Fatal(error)),
            Err(SwitchError::Invalid { at, error }) => {
                Err(InError::BadBranch(Box::new(BadBranch { at, entry, error: *error })))
            }
        }
    }
}

impl Rules {
    /// Makes `new_tip` (already written as `Stored`, body `block` with its transaction
    /// ids) the best tip: disconnect to the fork point, connect the branch.
    fn switch_to<W: WriteTables>(
        &self,
        writer: &mut W,
        new_tip: &BlockEntry,
        block: (Block, Vec<TxId>),
        diff: &mut TipDiff,
        now_ms: u64,
    ) -> Result<(), SwitchError> {
        let mut branch = vec![new_tip.clone()];
        let fork = loop {
            let prev = branch.last().expect("starts non-empty").header.prev;
            let entry =
                writer.entry(&prev)?.ok_or_else(|| corrupt(format!("missing entry {prev}")))?;
            if writer.is_on_best_chain(&entry)? {
                break entry;
            }
            if let BlockStatus::Invalid { .. } = entry.status {
                return Err(SwitchError::Invalid {
                    at: entry.hash(),
                    error: Box::new(ImportError::KnownInvalid(entry.hash())),
                });
            }
            branch.push(entry);
        };
        let fork_hash = fork.hash();
        while writer.tip()? != Some(fork_hash) {
            self.disconnect_tip(writer, diff, now_ms)?;
        }
        let new_hash = new_tip.hash();
        let mut new_block = Some(block);
        for entry in branch.iter().rev() {
            let hash = entry.hash();
            let (body, txids) = if hash == new_hash {
                new_block.take().expect("the new tip is connected once")
            } else {
                let body =
                    writer.block(&hash)?.ok_or_else(|| corrupt(format!("missing block {hash}")))?;
                let txids = validate::transaction_ids(&body).0;
                (body, txids)
            };
            self.connect(writer, entry, body, &txids, diff)?;
        }
        if !diff.disconnected.is_empty() {
            info!(
                fork = %fork_hash,
                disconnected = diff.disconnected.len(),
                connected = diff.connected.len(),
                "reorganised to a branch with more work"
            );
        }
        Ok(())
    }

    /// Applies `block` (child of the current tip) to the state and makes it the tip.
    fn connect<W: WriteTables>(
        &self,
        writer: &mut W,
        entry: &BlockEntry,
        block: Block,
        txids: &[TxId],
        diff: &mut TipDiff,
    ) -> Result<(), SwitchError> {
        let hash = entry.hash();
        let keys = touched_keys(&block);
        let mut accounts = Accounts::with_capacity(keys.len());
        for key in &keys {
            accounts.insert(*key, writer.account(key)?);
        }
        let undo =
            Undo { accounts: accounts.iter().map(|(key, account)| (*key, *account)).collect() };
        apply_block(&self.params, &block, &mut accounts)
            .map_err(|error| SwitchError::Invalid { at: hash, error: Box::new(error.into()) })?;
        for (key, account) in &accounts {
            writer.put_account(key, account)?;
        }
        writer.put_value(Table::Undo, hash.as_bytes(), &undo)?;
        writer.set_best(entry.height(), &hash)?;
        for (tx, txid) in block.transactions.iter().zip(txids) {
            let txid = *txid;
            writer.index_tx(&txid, &hash)?;
            if let Transaction::Transfer(transfer) = tx {
                let to_wallet = self.wallet == Some(transfer.to);
                let record = match to_wallet {
                    true => writer.value::<MempoolRecord>(Table::Mempool, txid.as_bytes())?,
                    false => None,
                };
                if record.is_some() || writer.get(Table::Mempool, txid.as_bytes())?.is_some() {
                    writer.delete(Table::Mempool, txid.as_bytes())?;
                }
                if to_wallet && writer.get(Table::Inbox, txid.as_bytes())?.is_none() {
                    let received_ms = record.map_or(block.header.time_ms, |r| r.received_ms);
                    writer.put_value(
                        Table::Inbox,
                        txid.as_bytes(),
                        &InboxRecord { transfer: transfer.clone(), received_ms },
                    )?;
                }
            }
        }
        writer.put_entry(&BlockEntry { status: BlockStatus::Valid, ..entry.clone() })?;
        writer.set_tip(&hash)?;
        diff.connect(block);
        Ok(())
    }

    /// Takes the tip off the best chain, restoring the accounts from its undo data and
    /// putting its transfers back in the mempool table.
    fn disconnect_tip<W: WriteTables>(
        &self,
        writer: &mut W,
        diff: &mut TipDiff,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let hash = writer.tip()?.ok_or_else(|| corrupt("no tip".into()))?;
        let entry = writer.entry(&hash)?.ok_or_else(|| corrupt(format!("missing entry {hash}")))?;
        let block = writer.block(&hash)?.ok_or_else(|| corrupt(format!("missing block {hash}")))?;
        let undo =
            writer.undo(&hash)?.ok_or_else(|| corrupt(format!("missing undo data of {hash}")))?;
        for (key, account) in &undo.accounts {
            writer.put_account(key, account)?;
        }
        writer.delete(Table::Undo, hash.as_bytes())?;
        writer.clear_best(entry.height())?;
        for tx in &block.transactions {
            let txid = tx.txid();
            writer.delete(Table::TxIndex, txid.as_bytes())?;
            if let Transaction::Transfer(transfer) = tx {
                writer.put_value(
                    Table::Mempool,
                    txid.as_bytes(),
                    &MempoolRecord { transfer: transfer.clone(), received_ms: now_ms },
                )?;
            }
        }
        writer.set_tip(&entry.header.prev)?;
        diff.disconnect(block);
        Ok(())
    }
}
