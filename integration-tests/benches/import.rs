//! `just bench import`: a fresh LMDB store importing 10,000 blocks of 10 transfers, as a
//! syncing node does, against the bare verify rate of the same signatures times the cores.
//!
//! Also leaves the stores that `just bench startup` opens.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{Report, bare_verify_rate_of, bench_dir, cores};
use raclette_node::chain::Chain;
use raclette_node::store::LmdbStore;
use raclette_node::testkit::{easy_params, message_blocks};

const BLOCKS: u64 = 10_000;
const TRANSFERS_PER_BLOCK: u64 = 10;
const NOW: u64 = u64::MAX / 4;
/// Blocks per store transaction: the sync protocol's page size.
const PAGE: usize = raclette_protocol::wire::MAX_BLOCKS_PER_REQUEST;

/// The store directory holding a chain of `blocks` blocks, shared with the startup bench.
pub fn store_dir(blocks: u64) -> PathBuf {
    bench_dir().join(format!("store-{blocks}-blocks"))
}

fn main() {
    let params = easy_params();
    eprintln!("signing {} transfers...", BLOCKS * TRANSFERS_PER_BLOCK);
    let blocks = message_blocks(&params, BLOCKS, TRANSFERS_PER_BLOCK);
    let bound = bare_verify_rate_of(&blocks, Duration::from_secs(2)) * cores() as f64;

    for (count, report) in [(10u64, false), (BLOCKS, true)] {
        let dir = store_dir(count);
        let _ = std::fs::remove_dir_all(&dir);
        let mut chain =
            Chain::open(LmdbStore::open(&dir).expect("store opens"), params.clone(), None)
                .expect("chain opens");
        let start = Instant::now();
        // As a syncing node does: pages of blocks, one store transaction each.
        for page in blocks[..count as usize].chunks(PAGE) {
            let (imported, failure) = chain.import_blocks(page.to_vec(), NOW);
            assert!(failure.is_none() && imported.len() == page.len(), "valid blocks");
        }
        let seconds = start.elapsed().as_secs_f64();
        if report {
            let tx_rate = (count * TRANSFERS_PER_BLOCK) as f64 / seconds;
            println!(
                "imported {count} blocks in {seconds:.2} s: {:.0} blocks/s",
                count as f64 / seconds
            );
            Report {
                name: "import_blocks".into(),
                value: count as f64 / seconds,
                unit: "blocks/s".into(),
                bound: bound / TRANSFERS_PER_BLOCK as f64,
                target: None,
            }
            .publish();
            Report {
                name: "import_tx".into(),
                value: tx_rate / 1e3,
                unit: "k tx/s".into(),
                bound: bound / 1e3,
                target: None,
            }
            .publish();
        }
    }
}
