//! `just bench pow`: the miner's nonce rate against this machine's raw SHA-256 rate.
//!
//! The bound: one SHA-256 compression chain on one core (what `sha2` does with the best
//! instructions this CPU has). Each nonce needs two compressions, so half the
//! compression rate is what a single-stream miner could reach; the two-lane SHA-NI
//! search can pass it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{Report, best_of_alternating, rate};
use raclette_protocol::mining::{
    CHECK_INTERVAL, NonceSearch, RAW_COMPRESSIONS_PER_CALL, nonce_range, raw_compressions,
};
use raclette_protocol::{BlockHash, BlockHeader, CompactTarget, Target};

const ROUND: Duration = Duration::from_millis(1500);

fn template() -> BlockHeader {
    BlockHeader {
        version: 1,
        bits: CompactTarget(0x0300_0001),
        height: 1,
        prev: BlockHash::from_bytes([1; 32]),
        merkle_root: [2; 32],
        time_ms: 1_767_225_600_000,
        nonce: 0,
    }
}

/// A search that can never succeed, so every nonce is tried.
fn impossible_search() -> NonceSearch {
    NonceSearch::with_target(&template(), Target::from_be_bytes([0; 32]))
}

fn all_cores_rate(threads: usize) -> f64 {
    let search = Arc::new(impossible_search());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|index| {
            let (search, stop, done) = (search.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || search.search(nonce_range(index, threads), &stop, &done))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // let every thread get going
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    std::thread::sleep(ROUND);
    let hashes = done.load(Ordering::Relaxed) - before;
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("miner thread does not panic");
    }
    hashes as f64 / seconds
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let search = impossible_search();
    let mut state = [0x6a09e667u32; 8];
    let block = [0x42u8; 64];
    let mut next = 0u64;

    let (compressions, one_core) = best_of_alternating(
        3,
        || rate(ROUND, RAW_COMPRESSIONS_PER_CALL, || raw_compressions(&mut state, &block)),
        || {
            rate(ROUND, CHECK_INTERVAL, || {
                assert_eq!(search.search_chunk(next..next + CHECK_INTERVAL), None);
                next += CHECK_INTERVAL;
            })
        },
    );
    std::hint::black_box(state);
    let scalar = rate(ROUND, CHECK_INTERVAL, || {
        assert_eq!(search.search_scalar(next..next + CHECK_INTERVAL), None);
        next += CHECK_INTERVAL;
    });
    let all = (0..2).map(|_| all_cores_rate(threads)).fold(0.0, f64::max);

    let bound = compressions / 2.0;
    println!(
        "raw SHA-256: {:.2} M compressions/s on one core; bound = half that in nonces/s",
        compressions / 1e6
    );
    Report {
        name: "pow_one_core".into(),
        value: one_core / 1e6,
        unit: "MH/s".into(),
        bound: bound / 1e6,
        target: Some(0.95),
    }
    .publish();
    Report {
        name: "pow_scalar_one_core".into(),
        value: scalar / 1e6,
        unit: "MH/s".into(),
        bound: bound / 1e6,
        target: None,
    }
    .publish();
    println!("all cores: {threads} threads; bound = the one-core rate");
    Report {
        name: "pow_all_cores".into(),
        value: all / 1e6,
        unit: "MH/s".into(),
        bound: one_core / 1e6,
        target: Some(1.8_f64.min(0.9 * threads as f64)),
    }
    .publish();
}
