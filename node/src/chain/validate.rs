//! The consensus rules that need no state: the header ladder and the block ladder.
//!
//! Every rule has its own error, and every error says whether the peer that sent the
//! block is at fault (so the network layer can penalise it) or not (a block from the
//! future, say, may become valid later).

use raclette_protocol::block::{MAX_BLOCK_BYTES, merkle_root};
use raclette_protocol::encoding::to_canonical_cbor;
use raclette_protocol::hash::sha256d;
use raclette_protocol::header::HEADER_VERSION;
use raclette_protocol::pow::CompactTargetError;
use raclette_protocol::transaction::{MAX_COINBASE_MEMO_BYTES, TransferError};
use raclette_protocol::{
    Block, BlockHeader, CompactTarget, NetworkId, NetworkParams, Transaction, TxId,
};
use rayon::prelude::*;

/// A header rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Unknown header version.
    #[error("header version {0} is not 1")]
    BadVersion(u32),
    /// Height is not the parent's plus one.
    #[error("height {found} does not follow its parent (expected {expected})")]
    BadHeight {
        /// Parent height + 1.
        expected: u64,
        /// The header's.
        found: u64,
    },
    /// The compact target does not decode.
    #[error("invalid target: {0}")]
    BadTarget(CompactTargetError),
    /// The target is not what the retarget rule gives at this height.
    #[error("target {found} is not the required {expected}")]
    WrongTarget {
        /// What the rule gives.
        expected: CompactTarget,
        /// The header's.
        found: CompactTarget,
    },
    /// The hash does not meet the target.
    #[error("header hash does not meet its target")]
    BadPow,
    /// Not after the median of the previous 11 timestamps.
    #[error("time {time_ms} is not after the median time {median_ms} of the previous blocks")]
    TimeTooOld {
        /// The header's time.
        time_ms: u64,
        /// The median it must exceed.
        median_ms: u64,
    },
    /// The first block of a retarget window dated too far before the last block of the
    /// previous window (the timewarp rule).
    #[error(
        "time {time_ms} is more than the future limit before the previous window's end ({floor_ms} at the earliest)"
    )]
    TimeBeforeWindow {
        /// The header's time.
        time_ms: u64,
        /// The earliest it may be.
        floor_ms: u64,
    },
    /// Too far ahead of this node's clock.
    #[error(
        "time {time_ms} is more than the allowed drift ahead of this node's clock (limit {limit_ms})"
    )]
    TimeTooNew {
        /// The header's time.
        time_ms: u64,
        /// Now plus the allowed drift.
        limit_ms: u64,
    },
}

impl HeaderError {
    /// Whether whoever sent this header broke the rules (as opposed to sending something
    /// that may become valid later).
    /// ([`crate::verdict`] decides.)
    pub fn is_peer_fault(&self) -> bool {
        crate::verdict::verdict(crate::verdict::Refusal::Header(self)).is_fault()
    }
}

/// A block rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Encoded size over the limit.
    #[error("block is {size} bytes, the limit is {MAX_BLOCK_BYTES}")]
    TooLarge {
        /// Encoded size.
        size: usize,
    },
    /// The merkle root does not match the transactions.
    #[error("merkle root does not match the transactions")]
    BadMerkleRoot,
    /// The first transaction is not a coinbase (or there is none).
    #[error("block does not start with a coinbase")]
    MissingCoinbase,
    /// A coinbase after the first transaction.
    #[error("transaction {index} is a second coinbase")]
    ExtraCoinbase {
        /// Its position.
        index: usize,
    },
    /// The coinbase names another height.
    #[error("coinbase height {found} is not the block height {expected}")]
    CoinbaseHeight {
        /// The block's height.
        expected: u64,
        /// The coinbase's.
        found: u64,
    },
    /// The coinbase memo is too long.
    #[error("coinbase memo is {len} bytes, the limit is {MAX_COINBASE_MEMO_BYTES}")]
    CoinbaseMemoTooLong {
        /// Its length.
        len: usize,
    },
    /// A transfer breaks a stateless rule.
    #[error("transaction {index}: {error}")]
    Transfer {
        /// Its position.
        index: usize,
        /// The rule.
        error: TransferError,
    },
}

/// What the header checks need to know about the header's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderContext {
    /// The parent's height.
    pub parent_height: u64,
    /// The target the retarget rule requires at this height.
    pub expected_bits: CompactTarget,
    /// Median time of the parent and up to ten of its ancestors.
    pub median_time_ms: u64,
    /// The earliest time allowed: at a retarget height, the parent's time less
    /// `max_future_block_time_ms` (the timewarp rule); otherwise 0.
    pub window_floor_ms: u64,
}

/// The context a child of `parent` is checked in, derived in one place for block import,
/// header chains and the miner. `window_first` gives the first block of the window that
/// `parent` ends (asked for only at a retarget height); `times` are the times of up to
/// eleven blocks ending with `parent`.
pub fn header_context<E>(
    params: &NetworkParams,
    parent: &BlockHeader,
    window_first: impl FnOnce() -> Result<BlockHeader, E>,
    times: Vec<u64>,
) -> Result<HeaderContext, E> {
    let height = parent.height + 1;
    let (expected_bits, window_floor_ms) = if params.is_retarget_height(height) {
        let first = window_first()?;
        (
            params.retarget_bits(parent.bits, first.time_ms, parent.time_ms),
            parent.time_ms.saturating_sub(params.max_future_block_time_ms),
        )
    } else {
        (parent.bits, 0)
    };
    Ok(HeaderContext {
        parent_height: parent.height,
        expected_bits,
        median_time_ms: median_time(times),
        window_floor_ms,
    })
}

/// The median of up to eleven timestamps (the upper middle element for even counts).
pub fn median_time(mut times: Vec<u64>) -> u64 {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or(0)
}

/// Checks the header's proof of work against its own `bits`, and that those bits are no
/// easier than the network allows. Needs no context, so it guards orphans and
/// header-only sync against cheap junk.
pub fn check_proof_of_work(
    params: &NetworkParams,
    header: &BlockHeader,
) -> Result<(), HeaderError> {
    let target = header.bits.to_target().map_err(HeaderError::BadTarget)?;
    if target > params.pow_limit() {
        return Err(HeaderError::WrongTarget {
            expected: params.pow_limit_bits,
            found: header.bits,
        });
    }
    if !target.is_met_by(&header.hash()) {
        return Err(HeaderError::BadPow);
    }
    Ok(())
}

/// The header ladder: version, height, target, proof of work, median time, window floor,
/// future limit.
pub fn check_header(
    params: &NetworkParams,
    header: &BlockHeader,
    context: &HeaderContext,
    now_ms: u64,
) -> Result<(), HeaderError> {
    if header.version != HEADER_VERSION {
        return Err(HeaderError::BadVersion(header.version));
    }
    if header.height != context.parent_height + 1 {
        return Err(HeaderError::BadHeight {
            expected: context.parent_height + 1,
            found: header.height,
        });
    }
    if header.bits != context.expected_bits {
        return Err(HeaderError::WrongTarget {
            expected: context.expected_bits,
            found: header.bits,
        });
    }
    check_proof_of_work(params, header)?;
    if header.time_ms <= context.median_time_ms {
        return Err(HeaderError::TimeTooOld {
            time_ms: header.time_ms,
            median_ms: context.median_time_ms,
        });
    }
    if header.time_ms < context.window_floor_ms {
        return Err(HeaderError::TimeBeforeWindow {
            time_ms: header.time_ms,
            floor_ms: context.window_floor_ms,
        });
    }
    let limit_ms = now_ms.saturating_add(params.max_future_block_time_ms);
    if header.time_ms > limit_ms {
        return Err(HeaderError::TimeTooNew { time_ms: header.time_ms, limit_ms });
    }
    Ok(())
}

/// The transaction ids of a block, each transaction encoded once, across cores; with
/// the block's encoded size.
pub fn transaction_ids(block: &Block) -> (Vec<TxId>, usize) {
    let encoded: Vec<(TxId, usize)> = block
        .transactions
        .par_iter()
        .map(|tx| {
            let bytes = to_canonical_cbor(tx);
            (TxId::from_bytes(sha256d(&bytes)), bytes.len())
        })
        .collect();
    let size = Block::encoded_size_from(encoded.iter().map(|(_, size)| *size));
    (encoded.into_iter().map(|(id, _)| id).collect(), size)
}

/// Whether the body is the one the header commits to (merkle root) and within the size
/// limit: what an orphan must show before it is held, since it is held under its
/// header's hash.
pub fn check_commitment(block: &Block) -> Result<(), BlockError> {
    let (txids, size) = transaction_ids(block);
    if merkle_root(&txids) != block.header.merkle_root {
        return Err(BlockError::BadMerkleRoot);
    }
    if size > MAX_BLOCK_BYTES {
        return Err(BlockError::TooLarge { size });
    }
    Ok(())
}

/// The block ladder: merkle root, size, coinbase placement, and every transfer's
/// stateless rules. One parallel pass across cores encodes each transaction once (for
/// its id, its size and the stored block) and checks its signature; the order of the
/// checks below decides which error a block with several faults gets.
///
/// `verified` says whether a transaction's signature was already checked (it was in the
/// mempool, say): a transaction id covers the signature, so the same id means the same
/// valid signature, and only the cheap rules are checked again.
pub fn check_block(
    network: &NetworkId,
    block: &Block,
    verified: &(dyn Fn(&TxId) -> bool + Sync),
) -> Result<CheckedBlock, BlockError> {
    let checked: Vec<(TxId, Vec<u8>, Option<TransferError>)> = block
        .transactions
        .par_iter()
        .map(|tx| {
            let bytes = to_canonical_cbor(tx);
            let txid = TxId::from_bytes(sha256d(&bytes));
            let fault = tx.as_transfer().and_then(|transfer| match verified(&txid) {
                true => transfer.check_form(network).err(),
                false => transfer.check_stateless(network).err(),
            });
            (txid, bytes, fault)
        })
        .collect();
    // The merkle root first: until it matches, the body is not the one the header
    // commits to, and nothing wrong with it says anything about the header's block.
    let txids: Vec<TxId> = checked.iter().map(|(id, _, _)| *id).collect();
    if merkle_root(&txids) != block.header.merkle_root {
        return Err(BlockError::BadMerkleRoot);
    }
    let size = Block::encoded_size_from(checked.iter().map(|(_, bytes, _)| bytes.len()));
    if size > MAX_BLOCK_BYTES {
        return Err(BlockError::TooLarge { size });
    }
    let coinbase = block.coinbase().ok_or(BlockError::MissingCoinbase)?;
    if coinbase.height != block.header.height {
        return Err(BlockError::CoinbaseHeight {
            expected: block.header.height,
            found: coinbase.height,
        });
    }
    if coinbase.memo.len() > MAX_COINBASE_MEMO_BYTES {
        return Err(BlockError::CoinbaseMemoTooLong { len: coinbase.memo.len() });
    }
    if let Some(index) =
        block.transactions.iter().skip(1).position(|tx| matches!(tx, Transaction::Coinbase(_)))
    {
        return Err(BlockError::ExtraCoinbase { index: index + 1 });
    }
    let mut encodings = Vec::with_capacity(checked.len());
    for (index, (_, bytes, fault)) in checked.into_iter().enumerate() {
        if let Some(error) = fault {
            return Err(BlockError::Transfer { index, error });
        }
        encodings.push(bytes);
    }
    Ok(CheckedBlock { encoded: Block::encode_from_parts(&block.header, &encodings), txids })
}

/// What [`check_block`] learned on the way, so nothing is encoded or hashed twice.
#[derive(Debug, Clone)]
pub struct CheckedBlock {
    /// The transaction ids, in block order.
    pub txids: Vec<TxId>,
    /// The block's canonical encoding.
    pub encoded: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use raclette_protocol::{BlockHash, Target};

    use super::*;

    /// PROTOCOL.md §5.4, the timewarp vector: on `dev` (windows of 10, future limit 2 h),
    /// a parent at height 9 dated 1 700 000 000 000 puts the floor of height 10 at
    /// 1 699 992 800 000; height 11 has none.
    #[test]
    fn given_the_timewarp_vector_then_the_floor_and_the_verdicts_match_the_document() {
        let dev = NetworkParams::dev();
        let parent = |height: u64| BlockHeader {
            version: HEADER_VERSION,
            bits: dev.initial_bits,
            height,
            prev: BlockHash::from_bytes([0; 32]),
            merkle_root: [0; 32],
            time_ms: 1_700_000_000_000,
            nonce: 0,
        };
        let first = || Ok::<_, ()>(parent(0));
        let at_ten = header_context(&dev, &parent(9), first, vec![1_600_000_000_000]).unwrap();
        assert_eq!(at_ten.window_floor_ms, 1_699_992_800_000);
        let at_eleven = header_context(&dev, &parent(10), first, vec![1_600_000_000_000]).unwrap();
        assert_eq!(at_eleven.window_floor_ms, 0);

        // The same rule on an easy twin of dev, so the headers can be mined here.
        let easy = Target::from_expected_hashes_log2(2).to_compact();
        let params = NetworkParams { initial_bits: easy, pow_limit_bits: easy, ..dev };
        let context = HeaderContext { expected_bits: easy, ..at_ten };
        let verdict = |time_ms: u64| {
            let header = BlockHeader { bits: easy, height: 10, time_ms, ..parent(9) };
            let header =
                crate::miner::solve(&header, 1, &AtomicBool::new(false), &AtomicU64::new(0))
                    .expect("an easy target is met");
            check_header(&params, &header, &context, 1_700_000_000_000)
        };
        assert_eq!(verdict(1_699_992_800_000), Ok(()));
        assert_eq!(
            verdict(1_699_992_799_999),
            Err(HeaderError::TimeBeforeWindow {
                time_ms: 1_699_992_799_999,
                floor_ms: 1_699_992_800_000
            })
        );
    }
}
