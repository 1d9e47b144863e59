//! The blocks phase of catching up: which block is asked of whom, what arrived, what is
//! next to import.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Instant;

use raclette_protocol::wire::MAX_BLOCKS_PER_REQUEST;
use raclette_protocol::{Block, BlockHash};

use super::ImportLimit;

/// Blocks are asked for only this far ahead of the next one to import, which bounds the
/// blocks held (in flight or waiting for their turn) to this many.
pub(super) const DOWNLOAD_WINDOW: usize = 16 * MAX_BLOCKS_PER_REQUEST;

#[derive(Debug)]
pub(super) struct Download<P> {
    /// The attempt this download belongs to.
    pub(super) attempt: u64,
    /// Every block to get, in chain order.
    pub(super) order: Vec<BlockHash>,
    /// Each block's index in `order`.
    position: HashMap<BlockHash, usize>,
    /// Index in `order` of the next block to import.
    pub(super) next: usize,
    /// Not yet asked for.
    pub(super) queue: VecDeque<BlockHash>,
    /// Asked for, by whom, when.
    pub(super) in_flight: HashMap<BlockHash, (P, Instant)>,
    /// Arrived, waiting for their turn, with who sent them.
    pub(super) received: HashMap<BlockHash, (Block, P)>,
    /// Block requests waiting for an answer, per peer.
    requests: HashMap<P, usize>,
    /// Failed block requests, per peer.
    pub(super) failures: HashMap<P, u32>,
    /// Peers that cannot deliver (answered without blocks they were asked for, sent a
    /// body that is not its header's, or failed too often): not asked again.
    pub(super) unhelpful: HashSet<P>,
    /// Height of the last header.
    pub(super) target_height: u64,
    /// The peer whose headers these are: it has every block.
    pub(super) source: P,
    /// When the last block was imported (or the download began).
    pub(super) progress_at: Instant,
    /// A batch handed to the node for import, not yet reported back: each block's hash
    /// and sender.
    pub(super) importing: Option<Vec<(BlockHash, P)>>,
}

impl<P: Copy + Eq + Hash> Download<P> {
    pub(super) fn new(
        attempt: u64,
        order: Vec<BlockHash>,
        target_height: u64,
        source: P,
        now: Instant,
    ) -> Self {
        Self {
            attempt,
            queue: order.iter().copied().collect(),
            position: order.iter().enumerate().map(|(at, hash)| (*hash, at)).collect(),
            order,
            next: 0,
            in_flight: HashMap::new(),
            received: HashMap::new(),
            requests: HashMap::new(),
            failures: HashMap::new(),
            unhelpful: HashSet::new(),
            target_height,
            source,
            progress_at: now,
            importing: None,
        }
    }

    /// Whether `hash` is one of the blocks to get.
    pub(super) fn holds(&self, hash: &BlockHash) -> bool {
        self.position.contains_key(hash)
    }

    /// Puts whatever was in flight from `peer` back in the queue.
    pub(super) fn requeue_from(&mut self, peer: &P) {
        let lost: Vec<BlockHash> =
            self.in_flight.iter().filter(|(_, (p, _))| p == peer).map(|(h, _)| *h).collect();
        self.requeue(peer, &lost);
    }

    pub(super) fn requests_of(&self, peer: &P) -> usize {
        self.requests.get(peer).copied().unwrap_or(0)
    }

    /// A block request to `peer` was sent.
    pub(super) fn request_sent(&mut self, peer: P, page: &[BlockHash], now: Instant) {
        for hash in page {
            self.in_flight.insert(*hash, (peer, now));
        }
        *self.requests.entry(peer).or_default() += 1;
    }

    /// A block request to `peer` was answered or failed.
    pub(super) fn request_ended(&mut self, peer: &P) {
        if let Some(count) = self.requests.get_mut(peer) {
            *count = count.saturating_sub(1);
        }
    }

    /// Whether `hash` is still to be imported and has not arrived yet.
    pub(super) fn wants(&self, hash: &BlockHash) -> bool {
        self.position.get(hash).is_some_and(|at| *at >= self.next)
            && !self.received.contains_key(hash)
    }

    /// Whether `hash` is in flight from `peer`.
    fn asked_of(&self, hash: &BlockHash, peer: &P) -> bool {
        self.in_flight.get(hash).is_some_and(|(owner, _)| owner == peer)
    }

    /// Puts `hashes` that were in flight from `peer` back at the front of the queue, in
    /// order; returns whether there were any.
    pub(super) fn requeue(&mut self, peer: &P, hashes: &[BlockHash]) -> bool {
        let mut any = false;
        for hash in hashes.iter().rev() {
            if self.asked_of(hash, peer) {
                self.in_flight.remove(hash);
                self.queue.push_front(*hash);
                any = true;
            }
        }
        any
    }

    /// The next page to ask for: up to a request's worth from the front of the queue,
    /// within the window ahead of the next block to import.
    pub(super) fn next_page(&mut self) -> Vec<BlockHash> {
        let mut page = Vec::new();
        while page.len() < MAX_BLOCKS_PER_REQUEST
            && let Some(hash) = self.queue.front()
            && self.position.get(hash).is_some_and(|at| *at < self.next + DOWNLOAD_WINDOW)
        {
            let hash = *hash;
            self.queue.pop_front();
            // (A late answer may have brought it meanwhile.)
            if self.wants(&hash) && !self.in_flight.contains_key(&hash) {
                page.push(hash);
            }
        }
        page
    }

    /// The blocks next in line that have arrived, as many as `limit` admits, with each
    /// one's hash and sender.
    pub(super) fn take_ready(
        &mut self,
        limit: ImportLimit,
        now: Instant,
    ) -> (Vec<Block>, Vec<(BlockHash, P)>) {
        let (mut batch, mut senders) = (Vec::new(), Vec::new());
        let mut transactions = 0;
        while let Some(hash) = self.order.get(self.next)
            && let Some((block, _)) = self.received.get(hash)
            && limit.admits(batch.len(), transactions, block.transactions.len())
            && let Some((block, sender)) = self.received.remove(hash)
        {
            transactions += block.transactions.len();
            batch.push(block);
            senders.push((*hash, sender));
            self.next += 1;
            self.progress_at = now;
        }
        (batch, senders)
    }

    /// Blocks handed for import that did not get in (from the one that failed on): to
    /// be fetched again, first thing.
    pub(super) fn refetch(&mut self, hashes: &[BlockHash]) {
        if let Some(first) = hashes.first().and_then(|hash| self.position.get(hash)) {
            self.next = self.next.min(*first);
        }
        for hash in hashes.iter().rev() {
            self.queue.push_front(*hash);
        }
    }

    /// Whether every block was imported.
    pub(super) fn is_done(&self) -> bool {
        self.next == self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{easy_params, message_blocks};

    /// Blocks of 1, 3, 4, 2 and 9 transactions (a coinbase and that many transfers less
    /// one), all arrived, taken with `limit` blocks and `max_transactions`: the sizes of the
    /// batches handed out in turn.
    fn batches(limit: usize, max_transactions: usize) -> Vec<usize> {
        let params = easy_params();
        let blocks: Vec<Block> = [0, 2, 3, 1, 8]
            .into_iter()
            .map(|senders| message_blocks(&params, 1, senders).remove(0))
            .collect();
        let order: Vec<BlockHash> = blocks.iter().map(Block::hash).collect();
        let now = Instant::now();
        let mut download = Download::new(0, order, 1, 0u8, now);
        for block in blocks {
            download.received.insert(block.hash(), (block, 0));
        }
        let mut sizes = Vec::new();
        while !download.is_done() {
            let limit = ImportLimit { blocks: limit, transactions: max_transactions };
            let (batch, senders) = download.take_ready(limit, now);
            assert_eq!(batch.len(), senders.len());
            sizes.push(batch.len());
        }
        sizes
    }

    #[test]
    fn given_arrived_blocks_then_batches_stop_at_the_block_limit_or_the_transaction_limit() {
        assert_eq!(batches(256, 8192), vec![5]);
        assert_eq!(batches(2, 8192), vec![2, 2, 1]);
        // 1 + 3 + 4 = 8 fits in 8; 2 more would not; 2 + 9 would not either.
        assert_eq!(batches(256, 8), vec![3, 1, 1]);
        // A block over the limit still goes, alone.
        assert_eq!(batches(256, 2), vec![1, 1, 1, 1, 1]);
    }
}
