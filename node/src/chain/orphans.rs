//! Blocks whose parent is not known yet, held until it arrives.
//!
//! An orphan only needs proof of work against its own target, which may be the easiest
//! the network allows: cheap to make in bulk. So the pool is bounded three ways (count,
//! bytes, and per source), and a full pool drops the oldest orphan of whichever source
//! holds the most. A flood churns only its sender's own slots; other peers' genuine
//! orphans stay. Each orphan dropped without ever connecting is reported against its
//! source ([`OrphanPool::take_evicted`]), so a peer that keeps sending them pays.

use std::collections::{HashMap, VecDeque};

use raclette_protocol::{Block, BlockHash};

/// The most orphans held.
pub const MAX_ORPHANS: usize = 100;
/// The most bytes of orphans held (encoded blocks).
pub const MAX_ORPHAN_BYTES: usize = 16 << 20;
/// The most orphans held from one source; its oldest goes first.
pub const MAX_ORPHANS_PER_SOURCE: usize = 10;

/// Who sent an orphan, as the node names it; [`LOCAL`] for blocks of no one peer.
pub type Source = u64;
/// The source of blocks that came from no one peer (a sync batch, tests).
pub const LOCAL: Source = 0;

#[derive(Debug)]
struct Held {
    block: Block,
    source: Source,
    bytes: usize,
}

/// A bounded pool of orphan blocks indexed by their parent.
#[derive(Debug, Default)]
pub struct OrphanPool {
    blocks: HashMap<BlockHash, Held>,
    by_parent: HashMap<BlockHash, Vec<BlockHash>>,
    /// Each source's orphans, oldest first.
    by_source: HashMap<Source, VecDeque<BlockHash>>,
    bytes: usize,
    /// Sources of orphans dropped without connecting, not yet taken.
    evicted: Vec<Source>,
}

impl OrphanPool {
    /// Holds `block` from `source`; returns false if it was already held.
    pub fn insert(&mut self, block: Block, source: Source) -> bool {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return false;
        }
        let bytes = block.encoded_size();
        let own = self.by_source.get(&source).map_or(0, VecDeque::len);
        if own >= MAX_ORPHANS_PER_SOURCE
            && let Some(oldest) = self.by_source.get(&source).and_then(|held| held.front()).copied()
        {
            self.evict(&oldest);
        }
        while !self.blocks.is_empty()
            && (self.blocks.len() >= MAX_ORPHANS || self.bytes + bytes > MAX_ORPHAN_BYTES)
        {
            // The oldest orphan of the source holding the most.
            let Some(oldest) = self
                .by_source
                .values()
                .max_by_key(|held| held.len())
                .and_then(|held| held.front())
                .copied()
            else {
                break;
            };
            self.evict(&oldest);
        }
        self.by_parent.entry(block.header.prev).or_default().push(hash);
        self.by_source.entry(source).or_default().push_back(hash);
        self.bytes += bytes;
        self.blocks.insert(hash, Held { block, source, bytes });
        true
    }

    /// Whether `hash` is held.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Takes out every held child of `parent`.
    pub fn take_children(&mut self, parent: &BlockHash) -> Vec<Block> {
        let children = self.by_parent.remove(parent).unwrap_or_default();
        children.iter().filter_map(|hash| self.take(hash)).map(|held| held.block).collect()
    }

    /// The oldest missing ancestor behind `hash`: follows held parents back as far as
    /// they go and returns the first parent that is not held.
    pub fn missing_root(&self, hash: &BlockHash) -> BlockHash {
        let mut current = *hash;
        while let Some(held) = self.blocks.get(&current) {
            current = held.block.header.prev;
        }
        current
    }

    /// How many blocks are held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The sources of orphans dropped without connecting since the last call, one entry
    /// per orphan.
    pub fn take_evicted(&mut self) -> Vec<Source> {
        std::mem::take(&mut self.evicted)
    }

    fn take(&mut self, hash: &BlockHash) -> Option<Held> {
        let held = self.blocks.remove(hash)?;
        self.bytes -= held.bytes;
        if let Some(queue) = self.by_source.get_mut(&held.source) {
            queue.retain(|h| h != hash);
            if queue.is_empty() {
                self.by_source.remove(&held.source);
            }
        }
        Some(held)
    }

    fn evict(&mut self, hash: &BlockHash) {
        if let Some(held) = self.take(hash) {
            if held.source != LOCAL {
                self.evicted.push(held.source);
            }
            if let Some(siblings) = self.by_parent.get_mut(&held.block.header.prev) {
                siblings.retain(|h| h != hash);
                if siblings.is_empty() {
                    self.by_parent.remove(&held.block.header.prev);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{easy_params, keypair, linear_blocks};

    #[test]
    fn given_a_flood_of_cheap_orphans_from_one_source_then_the_pool_stays_in_its_caps_and_keeps_others()
     {
        let params = easy_params();
        // Blocks past a missing first one are orphans; each can be held alone.
        let blocks = linear_blocks(&params, &keypair("flood"), 1_001, |_| Vec::new());
        let mut pool = OrphanPool::default();
        let (honest, flooder) = (2, 1);
        let genuine = blocks[1].clone();
        assert!(pool.insert(genuine.clone(), honest));
        for block in &blocks[2..] {
            pool.insert(block.clone(), flooder);
            assert!(pool.len() <= MAX_ORPHANS && pool.bytes <= MAX_ORPHAN_BYTES);
            assert!(pool.by_source[&flooder].len() <= MAX_ORPHANS_PER_SOURCE);
        }
        assert!(pool.contains(&genuine.hash()), "the other peer's orphan survives the flood");
        let evicted = pool.take_evicted();
        assert_eq!(evicted.len(), 999 - MAX_ORPHANS_PER_SOURCE, "each dropped one is reported");
        assert!(evicted.iter().all(|source| *source == flooder), "only against the flooder");
        // The parent arrives: the genuine orphan connects, and is not reported.
        assert_eq!(pool.take_children(&blocks[0].hash()), vec![genuine]);
        assert!(pool.take_evicted().is_empty());
    }

    #[test]
    fn given_many_sources_then_a_full_pool_drops_from_the_one_holding_the_most() {
        let params = easy_params();
        let blocks = linear_blocks(&params, &keypair("many"), 102, |_| Vec::new());
        let mut pool = OrphanPool::default();
        // Source 1 holds 10, sources 2 to 19 hold 5 each: the pool is full.
        for (index, block) in blocks.iter().enumerate().skip(1).take(100) {
            let source = if index <= 10 { 1 } else { 2 + ((index - 11) / 5) as Source };
            assert!(pool.insert(block.clone(), source));
        }
        assert_eq!(pool.len(), MAX_ORPHANS);
        assert!(pool.take_evicted().is_empty());
        pool.insert(blocks[101].clone(), 50);
        assert_eq!(pool.len(), MAX_ORPHANS);
        assert_eq!(pool.take_evicted(), vec![1], "from the source holding the most");
        assert_eq!(pool.by_source[&1].len(), 9);
        assert!(!pool.contains(&blocks[1].hash()), "its oldest");
    }
}
