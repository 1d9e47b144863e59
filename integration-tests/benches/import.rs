//! `just bench import`: a fresh LMDB store importing 10,000 blocks of 10 transfers, as a
//! syncing node does (batches as large as `IMPORT_LIMIT` admits, one store transaction
//! each), against the
//! bare verify rate of the same signatures times the cores. Target: 0.8 of the bound.
//!
//! The host is shared: import and bound are measured in turn, three times each, and the
//! best of each kept. The same import into the in-memory store, also best of three,
//! gives the share of the time that goes to LMDB (puts, page copies, commits, fsync).
//!
//! Also leaves the stores that `just bench startup` opens.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{Report, bare_verify_rate_of, bench_dir, cores};
use raclette_node::chain::Chain;
use raclette_node::store::{LmdbStore, MemoryStore, Store};
use raclette_node::sync::IMPORT_LIMIT;
use raclette_node::testkit::{easy_params, message_blocks};
use raclette_protocol::Block;

const BLOCKS: u64 = 10_000;
const TRANSFERS_PER_BLOCK: u64 = 10;
const NOW: u64 = u64::MAX / 4;
const ROUNDS: usize = 3;

/// The store directory holding a chain of `blocks` blocks, shared with the startup bench.
pub fn store_dir(blocks: u64) -> PathBuf {
    bench_dir().join(format!("store-{blocks}-blocks"))
}

/// `blocks` cut as sync hands them over when they have all arrived.
fn sync_batches(blocks: &[Block]) -> Vec<Vec<Block>> {
    let mut batches: Vec<Vec<Block>> = Vec::new();
    let mut transactions = 0;
    for block in blocks {
        let full = batches.last().is_none_or(|batch| {
            !IMPORT_LIMIT.admits(batch.len(), transactions, block.transactions.len())
        });
        if full {
            batches.push(Vec::new());
            transactions = 0;
        }
        transactions += block.transactions.len();
        batches.last_mut().expect("a batch").push(block.clone());
    }
    batches
}

/// Seconds to import `batches` into a fresh chain on `store`.
fn import<S: Store>(store: S, batches: &[Vec<Block>]) -> f64 {
    let mut chain = Chain::open(store, easy_params(), None).expect("chain opens");
    let start = Instant::now();
    for batch in batches {
        let (imported, failure) = chain.import_blocks(batch.clone(), NOW);
        assert!(failure.is_none() && imported.len() == batch.len(), "valid blocks");
    }
    start.elapsed().as_secs_f64()
}

/// Seconds to import `batches` into a fresh LMDB store in `dir`.
fn import_lmdb(dir: &std::path::Path, batches: &[Vec<Block>]) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    import(LmdbStore::open(dir).expect("store opens"), batches)
}

fn main() {
    let params = easy_params();
    eprintln!("signing {} transfers...", BLOCKS * TRANSFERS_PER_BLOCK);
    let blocks = message_blocks(&params, BLOCKS, TRANSFERS_PER_BLOCK);
    let batches = sync_batches(&blocks);
    import_lmdb(&store_dir(10), &sync_batches(&blocks[..10]));

    let dir = store_dir(BLOCKS);
    let (mut lmdb, mut memory, mut bound) = (f64::MAX, f64::MAX, 0.0f64);
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS}: bound, LMDB import, in-memory import...");
        bound = bound.max(bare_verify_rate_of(&blocks, Duration::from_secs(1)) * cores() as f64);
        lmdb = lmdb.min(import_lmdb(&dir, &batches));
        memory = memory.min(import(MemoryStore::new(), &batches));
    }
    let transactions = (BLOCKS * TRANSFERS_PER_BLOCK) as f64;
    println!(
        "imported {BLOCKS} blocks in {} batches in {lmdb:.2} s ({:.0} blocks/s); into memory in {memory:.2} s: LMDB's share {:.0}%",
        batches.len(),
        BLOCKS as f64 / lmdb,
        100.0 * (1.0 - memory / lmdb).max(0.0)
    );
    Report {
        name: "import_blocks".into(),
        value: BLOCKS as f64 / lmdb,
        unit: "blocks/s".into(),
        bound: bound / TRANSFERS_PER_BLOCK as f64,
        target: Some(0.8),
    }
    .publish();
    Report {
        name: "import_tx".into(),
        value: transactions / lmdb / 1e3,
        unit: "k tx/s".into(),
        bound: bound / 1e3,
        target: Some(0.8),
    }
    .publish();
    Report {
        name: "import_store_share".into(),
        value: lmdb - memory,
        unit: "s in LMDB".into(),
        bound: lmdb,
        target: None,
    }
    .publish();
}
