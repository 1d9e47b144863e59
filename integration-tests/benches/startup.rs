//! `just bench startup`: a store that holds 10,000 blocks against one that holds 10
//! (both left by `just bench import`, which must run first).
//!
//! - Opening store, chain and mempool as a node does at start: opening reads the tip,
//!   never the chain, so the two should take about the same time (the bound is the
//!   10-block store).
//! - A node process started on each store and left idle: its resident memory, split
//!   into what the process allocated (anonymous) and LMDB's mapped pages (file). Target:
//!   ≤ 64 MiB in all, and no growth with the chain beyond the mapped pages.

use std::path::Path;
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{Report, bench_dir};
use raclette_integration_tests::harness::{NodeOptions, NodeProcess, network_file, wait_for};
use raclette_node::chain::Chain;
use raclette_node::mempool::Mempool;
use raclette_node::store::{LmdbStore, Store};
use raclette_node::testkit::easy_params;

const RSS_TARGET_MIB: f64 = 64.0;

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

/// A field of `/proc/PID/status` in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Resident memory of an idle node on a copy of `store` (total, anonymous, file), in
/// MiB: the highest of samples over three seconds once it has opened its chain.
fn idle_rss(store: &Path, blocks: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("node");
    std::fs::create_dir_all(data.join("store")).expect("store dir");
    std::fs::copy(store.join("data.mdb"), data.join("store").join("data.mdb")).expect("copy");
    let options = NodeOptions {
        network_file: Some(network_file(dir.path(), &easy_params())),
        ..NodeOptions::default()
    };
    eprintln!("an idle node on the {blocks}-block store...");
    let started = Instant::now();
    let node = NodeProcess::start("idle", &data, &options);
    eprintln!("started in {:.1} s", started.elapsed().as_secs_f64());
    wait_for("the node on its chain", Duration::from_secs(60), || {
        (node.height() == blocks).then_some(())
    });
    eprintln!("on its chain after {:.1} s", started.elapsed().as_secs_f64());
    let mut highest = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let pid = node.pid();
        highest.0 = highest.0.max(status_mib(pid, "VmRSS"));
        highest.1 = highest.1.max(status_mib(pid, "RssAnon"));
        highest.2 = highest.2.max(status_mib(pid, "RssFile"));
    }
    highest
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

    let (small_rss, large_rss) = (idle_rss(&small, 10), idle_rss(&large, 10_000));
    for (blocks, (total, anonymous, file)) in [(10, small_rss), (10_000, large_rss)] {
        println!(
            "idle node with {blocks} blocks: RSS {total:.1} MiB ({anonymous:.1} allocated, {file:.1} mapped from files)"
        );
    }
    println!(
        "bound = the idle node with 10 blocks; the allocated part should not grow with the chain"
    );
    Report {
        name: "idle_rss_allocated_10000_blocks".into(),
        value: large_rss.1,
        unit: "MiB".into(),
        bound: small_rss.1,
        target: None,
    }
    .publish();
    let highest = small_rss.0.max(large_rss.0);
    let verdict = if highest <= RSS_TARGET_MIB { "met" } else { "NOT met" };
    println!("target: idle RSS <= {RSS_TARGET_MIB} MiB: {verdict} ({highest:.1} MiB at most)");
}
