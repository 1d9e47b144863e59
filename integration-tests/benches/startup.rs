//! `just bench startup`: opening a store that holds 10,000 blocks against one that holds
//! 10 (both left by `just bench import`, which this runs first if they are missing).
//! Opening reads the tip, never the chain, so the two should take about the same time.

use std::path::Path;
use std::time::Instant;

use raclette_integration_tests::bench::{Report, bench_dir};
use raclette_node::chain::Chain;
use raclette_node::mempool::Mempool;
use raclette_node::store::{LmdbStore, Store};
use raclette_node::testkit::easy_params;

/// Opens store, chain and mempool as a node does at start; returns seconds.
fn open_once(dir: &Path) -> f64 {
    let start = Instant::now();
    let chain = Chain::open(LmdbStore::open(dir).expect("store opens"), easy_params(), None)
        .expect("chain opens");
    let pool = Mempool::load(chain.network(), &chain.store().reader().expect("reader"))
        .expect("mempool loads");
    std::hint::black_box((chain.tip().height(), pool.len()));
    start.elapsed().as_secs_f64()
}

fn median_open(dir: &Path, rounds: usize) -> f64 {
    let mut times: Vec<f64> = (0..rounds).map(|_| open_once(dir)).collect();
    times.sort_by(f64::total_cmp);
    times[rounds / 2]
}

fn main() {
    let (small, large) =
        (bench_dir().join("store-10-blocks"), bench_dir().join("store-10000-blocks"));
    if !small.exists() || !large.exists() {
        eprintln!("run `just bench import` first: it builds the stores this opens");
        std::process::exit(1);
    }
    let (mut small_time, mut large_time) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        small_time = small_time.min(median_open(&small, 21));
        large_time = large_time.min(median_open(&large, 21));
    }
    println!(
        "bound = opening the store with 10 blocks; ratio near 1 means start-up does not grow with the chain"
    );
    Report {
        name: "startup_10000_blocks".into(),
        value: large_time * 1e3,
        unit: "ms".into(),
        bound: small_time * 1e3,
        target: None,
    }
    .publish();
}
