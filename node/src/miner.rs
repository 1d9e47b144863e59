//! The miner: assembles a block on the tip and searches nonces on several threads.
//!
//! Assembly is a pure function of what the chain requires next, the chosen transfers
//! and the time. The search splits the nonce space between threads and stops as soon
//! as one finds a solution or the caller raises the stop flag (a new tip arrived, or
//! the user asked to stop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raclette_protocol::block::merkle_root;
use raclette_protocol::header::HEADER_VERSION;
use raclette_protocol::mining::{NonceSearch, nonce_range};
use raclette_protocol::{
    Amount, Block, BlockHeader, Coinbase, NetworkParams, PublicKey, Transaction, Transfer, TxId,
};

use crate::chain::NextBlock;

/// Builds an unmined block (nonce 0): a coinbase paying `miner` the reward plus the
/// fees, then `transfers` in order. `transfers` must be valid in that order on the
/// parent's state (the mempool's selection guarantees it).
pub fn assemble_block(
    params: &NetworkParams,
    next: &NextBlock,
    miner: PublicKey,
    transfers: Vec<Transfer>,
    now_ms: u64,
    memo: &[u8],
) -> Block {
    let fees = transfers
        .iter()
        .try_fold(Amount::ZERO, |sum, t| sum.checked_add(t.fee))
        .expect("valid transfers' fees fit in an amount");
    let amount = params.reward_at(next.height).checked_add(fees).unwrap_or(Amount::MAX);
    let coinbase = Coinbase { height: next.height, to: miner, amount, memo: memo.to_vec() };
    let mut transactions = Vec::with_capacity(transfers.len() + 1);
    transactions.push(Transaction::Coinbase(coinbase));
    transactions.extend(transfers.into_iter().map(Transaction::Transfer));
    let ids: Vec<TxId> = transactions.iter().map(Transaction::txid).collect();
    let header = BlockHeader {
        version: HEADER_VERSION,
        bits: next.bits,
        height: next.height,
        prev: next.parent,
        merkle_root: merkle_root(&ids),
        time_ms: now_ms.max(next.median_time_ms + 1).max(next.window_floor_ms),
        nonce: 0,
    };
    Block { header, transactions }
}

/// Searches nonces for `header` on `threads` threads until one meets its target or
/// `stop` is raised. A thread that finds a solution raises `stop` itself so the others
/// end. Every nonce tried is added to `hashes_done`.
pub fn solve(
    header: &BlockHeader,
    threads: usize,
    stop: &AtomicBool,
    hashes_done: &AtomicU64,
) -> Option<BlockHeader> {
    let search = NonceSearch::new(header).ok()?;
    let threads = threads.max(1);
    let found = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let search = &search;
                scope.spawn(move || {
                    let nonce = search.search(nonce_range(index, threads), stop, hashes_done);
                    if nonce.is_some() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    nonce
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| worker.join().expect("nonce search does not panic"))
            .min()
    });
    found.map(|nonce| BlockHeader { nonce, ..*header })
}

#[cfg(test)]
mod tests {
    use raclette_protocol::Target;

    use super::*;

    #[test]
    fn given_easy_target_when_solved_on_several_threads_then_header_meets_it() {
        let params = NetworkParams::dev();
        let next = NextBlock {
            parent: params.genesis().hash(),
            height: 1,
            bits: Target::from_expected_hashes_log2(10).to_compact(),
            median_time_ms: params.genesis_time_ms,
            window_floor_ms: 0,
        };
        let miner = params.genesis().coinbase().unwrap().to;
        let block = assemble_block(&params, &next, miner, vec![], 0, b"");
        assert_eq!(block.header.time_ms, params.genesis_time_ms + 1, "time is above the median");
        let hashes = AtomicU64::new(0);
        let solved = solve(&block.header, 3, &AtomicBool::new(false), &hashes).unwrap();
        assert!(solved.bits.to_target().unwrap().is_met_by(&solved.hash()));
        assert!(hashes.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn given_stop_raised_when_solving_impossible_target_then_none() {
        let params = NetworkParams::dev();
        let mut header = params.genesis().header;
        header.bits = raclette_protocol::CompactTarget(0x03000001);
        assert_eq!(solve(&header, 2, &AtomicBool::new(true), &AtomicU64::new(0)), None);
    }
}
