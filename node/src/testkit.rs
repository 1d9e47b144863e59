//! Building valid blocks quickly, for tests and benchmarks: test network parameters
//! with easy proof of work, deterministic keys, and mined blocks on any parent.

use std::sync::atomic::{AtomicBool, AtomicU64};

use raclette_protocol::encryption::encrypt;
use raclette_protocol::hash::sha256;
use raclette_protocol::{Amount, Block, BlockHash, Keypair, NetworkParams, Target, Transfer};

use crate::chain::Chain;
use crate::miner::{assemble_block, solve};
use crate::store::Store;

/// A network where a block takes about 16 hashes and the difficulty never changes.
pub fn easy_params() -> NetworkParams {
    let easy = Target::from_expected_hashes_log2(4).to_compact();
    NetworkParams {
        name: "test".into(),
        initial_bits: easy,
        pow_limit_bits: easy,
        retarget_interval: 0,
        ..NetworkParams::dev()
    }
}

/// A deterministic keypair from a name.
pub fn keypair(name: &str) -> Keypair {
    Keypair::from_secret_bytes(sha256(name.as_bytes())).expect("SHA-256 outputs are valid scalars")
}

/// A signed transfer with a short encrypted message.
pub fn transfer(
    params: &NetworkParams,
    from: &Keypair,
    to: &Keypair,
    amount: u64,
    fee: u64,
    nonce: u64,
) -> Transfer {
    let message = encrypt(from, &to.public(), [nonce as u8; 16], b"test").expect("short message");
    Transfer::sign(
        from,
        params.network_id(),
        to.public(),
        Amount::from_units(amount),
        Amount::from_units(fee),
        nonce,
        message,
    )
}

/// A mined block on `parent` paying `miner`, with `transfers`, timestamped
/// `time_offset_ms` after the earliest allowed time.
pub fn mine_on<S: Store>(
    chain: &Chain<S>,
    parent: &BlockHash,
    miner: &Keypair,
    transfers: Vec<Transfer>,
    time_offset_ms: u64,
) -> Block {
    let next = chain.next_block_on(parent).expect("store works").expect("parent is stored");
    let mut block = assemble_block(chain.params(), &next, miner.public(), transfers, 0, b"");
    block.header.time_ms += time_offset_ms;
    remine(block)
}

/// Searches a nonce for `block` as it is (after a test changed it).
pub fn remine(mut block: Block) -> Block {
    block.header = solve(&block.header, 1, &AtomicBool::new(false), &AtomicU64::new(0))
        .expect("an easy target is always met");
    block
}
