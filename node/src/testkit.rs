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

/// A fixed sequence of blocks to import in order: a main branch of `main_len` blocks
/// with transfers between alice, bob and carol, then a heavier branch forking
/// `fork_depth` blocks below its tip (with dave's transfers), so that importing the
/// sequence reorganises once, then `tail` more blocks on the new branch. The same
/// arguments always give the same blocks.
pub fn scripted_blocks(main_len: u64, fork_depth: u64, tail: u64) -> Vec<Block> {
    let params = easy_params();
    let now = params.genesis_time_ms + 1_000_000_000;
    let mut builder =
        Chain::open(crate::store::MemoryStore::new(), params.clone(), None).expect("memory store");
    let people = [keypair("alice"), keypair("bob"), keypair("carol")];
    let dave = keypair("dave");
    let mut blocks = Vec::new();
    let mut nonces = [0u64; 3];
    for height in 1..=main_len {
        let miner = &people[height as usize % 3];
        let mut transfers = Vec::new();
        for (index, from) in people.iter().enumerate() {
            let balance = builder.account(&from.public()).expect("memory store").balance.units();
            if balance > 1_000 {
                let to = &people[(index + 1) % 3];
                transfers.push(transfer(&params, from, to, balance / 10, 7, nonces[index]));
                nonces[index] += 1;
            }
        }
        let block = mine_on(&builder, &builder.tip().hash(), miner, transfers, 0);
        builder.import_block(block.clone(), now).expect("scripted blocks are valid");
        blocks.push(block);
    }
    let fork_height = main_len.saturating_sub(fork_depth);
    let mut parent =
        builder.block_at(fork_height).expect("memory store").expect("fork point exists").1.hash();
    let (mut dave_nonce, mut dave_balance) = (0u64, 0u64);
    for _ in 0..fork_depth + 1 + tail {
        let mut transfers = Vec::new();
        if dave_balance > 1_000 {
            transfers.push(transfer(&params, &dave, &people[0], dave_balance / 3, 5, dave_nonce));
            dave_balance -= dave_balance / 3 + 5;
            dave_nonce += 1;
        }
        let block = mine_on(&builder, &parent, &dave, transfers, 3);
        dave_balance += params.reward_at(block.header.height).units();
        builder.import_block(block.clone(), now).expect("scripted blocks are valid");
        parent = block.hash();
        blocks.push(block);
    }
    blocks
}

/// A chain of `count` blocks on genesis for a fixed-difficulty network (no retarget),
/// assembled without a chain to consult: block `h` holds `transfers(h)` and is
/// timestamped one second after its parent. For benchmarks that need thousands of
/// blocks quickly.
pub fn linear_blocks(
    params: &NetworkParams,
    miner: &Keypair,
    count: u64,
    mut transfers: impl FnMut(u64) -> Vec<Transfer>,
) -> Vec<Block> {
    assert_eq!(params.retarget_interval, 0, "only for fixed-difficulty networks");
    let genesis = params.genesis();
    let mut parent = (genesis.hash(), genesis.header.time_ms);
    (1..=count)
        .map(|height| {
            let next = crate::chain::NextBlock {
                parent: parent.0,
                height,
                bits: params.initial_bits,
                median_time_ms: parent.1,
                window_floor_ms: 0,
            };
            let block = remine(assemble_block(
                params,
                &next,
                miner.public(),
                transfers(height),
                parent.1 + 1000,
                b"",
            ));
            parent = (block.hash(), block.header.time_ms);
            block
        })
        .collect()
}

/// `count` blocks for a fixed-difficulty network, each holding one 0-amount message
/// from each of `senders` senders (valid without any balance), signed across cores.
pub fn message_blocks(params: &NetworkParams, count: u64, senders: u64) -> Vec<Block> {
    use rayon::prelude::*;
    let keys: Vec<Keypair> = (0..senders).map(|i| keypair(&format!("sender-{i}"))).collect();
    let receiver = keypair("receiver");
    let transfers: Vec<Vec<Transfer>> = (0..count)
        .into_par_iter()
        .map(|nonce| {
            keys.iter().map(|from| transfer(params, from, &receiver, 0, 0, nonce)).collect()
        })
        .collect();
    linear_blocks(params, &keypair("miner"), count, |height| transfers[height as usize - 1].clone())
}
