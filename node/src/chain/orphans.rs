//! Blocks whose parent is not known yet, held until it arrives.

use std::collections::{HashMap, VecDeque};

use raclette_protocol::{Block, BlockHash};

/// The most orphans held; the oldest is dropped first.
pub const MAX_ORPHANS: usize = 100;

/// A bounded pool of orphan blocks indexed by their parent.
#[derive(Debug, Default)]
pub struct OrphanPool {
    blocks: HashMap<BlockHash, Block>,
    by_parent: HashMap<BlockHash, Vec<BlockHash>>,
    arrival: VecDeque<BlockHash>,
}

impl OrphanPool {
    /// Holds `block`; returns false if it was already held.
    pub fn insert(&mut self, block: Block) -> bool {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return false;
        }
        while self.blocks.len() >= MAX_ORPHANS {
            let Some(oldest) = self.arrival.pop_front() else { break };
            self.remove(&oldest);
        }
        self.by_parent.entry(block.header.prev).or_default().push(hash);
        self.arrival.push_back(hash);
        self.blocks.insert(hash, block);
        true
    }

    /// Whether `hash` is held.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Takes out every held child of `parent`.
    pub fn take_children(&mut self, parent: &BlockHash) -> Vec<Block> {
        let children = self.by_parent.remove(parent).unwrap_or_default();
        children.iter().filter_map(|hash| self.take(hash)).collect()
    }

    /// The oldest missing ancestor behind `hash`: follows held parents back as far as
    /// they go and returns the first parent that is not held.
    pub fn missing_root(&self, hash: &BlockHash) -> BlockHash {
        let mut current = *hash;
        while let Some(block) = self.blocks.get(&current) {
            current = block.header.prev;
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

    fn take(&mut self, hash: &BlockHash) -> Option<Block> {
        let block = self.blocks.remove(hash)?;
        self.arrival.retain(|h| h != hash);
        Some(block)
    }

    fn remove(&mut self, hash: &BlockHash) {
        if let Some(block) = self.take(hash)
            && let Some(siblings) = self.by_parent.get_mut(&block.header.prev)
        {
            siblings.retain(|h| h != hash);
            if siblings.is_empty() {
                self.by_parent.remove(&block.header.prev);
            }
        }
    }
}
