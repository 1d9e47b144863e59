//! `just bench network`: five nodes on loopback, measured in several rounds (`ROUNDS`,
//! 5 by default) so that one burst of load on a shared host does not decide the result.
//! Each round offers transfers at 500 a second for 6 seconds through one node, then,
//! with transfers still coming at that rate, has n1 mine about a block a second for 8
//! seconds. It records how long transfers and blocks take to reach every node (from
//! each node's own first-seen time, on the same clock) and how many transfers never
//! reached some node.
//!
//! The bound beside the latencies is a request round trip to a node through the same
//! libp2p stack (a chain status exchange on the sync protocol), measured in each round:
//! what a message costs with nothing else to do. Reported: the median across rounds of
//! each p50 and p99, with the spread (lowest and highest round). Targets: transfer p99 ≤
//! 50 ms and block p99 ≤ 100 ms (median across rounds), none lost.
//!
//! The transfers are 0-amount, 0-fee messages (valid without a balance) from 200
//! senders new in each round, so no sender exceeds the mempool's per-sender cap between
//! blocks; the nodes run with `--min-relay-fee 0` to take them, since fees are not what
//! this measures.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raclette_integration_tests::bench::{Report, percentile, write_json};
use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, RawPeer, TrackerProcess, network_file, test_params, wait_for,
};
use raclette_node::network::{Protocol, Topic};
use raclette_node::testkit::{keypair, transfer};
use raclette_protocol::{NetworkParams, Transfer, WireMessage};
use rayon::prelude::*;

const NODES: usize = 5;
const RATE: u64 = 500;
const SECONDS: u64 = 6;
const LIVE_SECONDS: u64 = 8;
const SENDERS: u64 = 200;
const TX_P99_TARGET_MS: f64 = 50.0;
const BLOCK_P99_TARGET_MS: f64 = 100.0;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// `count` 0-amount transfers from 200 senders named after `prefix`, signed across cores.
fn transfers(params: &NetworkParams, prefix: &str, count: u64) -> Vec<Transfer> {
    (0..count)
        .into_par_iter()
        .map(|i| {
            let (sender, nonce) = (i % SENDERS, i / SENDERS);
            let from = keypair(&format!("{prefix}-sender-{sender}"));
            transfer(params, &from, &keypair(&format!("receiver-{}", i % 7)), 0, 0, nonce)
        })
        .collect()
}

/// Publishes `transfers` through `entry` at `RATE` a second; returns when each went.
fn offer(entry: &RawPeer, transfers: &[Transfer]) -> HashMap<String, u64> {
    let mut offered = HashMap::new();
    let start = Instant::now();
    for (i, tx) in transfers.iter().enumerate() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        offered.insert(tx.txid().to_string(), now_ms());
        entry.publish(Topic::Transactions, tx.encode());
    }
    offered
}

/// What one round measured.
struct Round {
    round_trip_ms: f64,
    transfers: Vec<u64>,
    blocks: Vec<u64>,
    lost: usize,
}

struct Bench {
    nodes: Vec<NodeProcess>,
    entry: RawPeer,
    params: NetworkParams,
}

impl Bench {
    /// Median of 21 chain status round trips from the offering peer to n0, in ms.
    fn round_trip_ms(&self) -> f64 {
        let genesis = self.params.genesis();
        let status =
            raclette_protocol::wire::SyncRequest::Status(raclette_protocol::wire::ChainStatus {
                network: self.params.network_id(),
                height: 0,
                tip: genesis.hash(),
                work: genesis.header.bits.to_target().expect("valid bits").work(),
            })
            .encode();
        let mut trips: Vec<f64> = (0..21)
            .map(|_| {
                let start = Instant::now();
                self.entry
                    .request(&self.nodes[0].peer_id, Protocol::Sync, status.clone())
                    .expect("n0 answers its status");
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        trips.sort_by(f64::total_cmp);
        trips[10]
    }

    /// Transfer latencies to every node's mempool, and how many never arrived.
    fn deliveries(&self, offered: &HashMap<String, u64>) -> (Vec<u64>, usize) {
        let (mut latencies, mut lost) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            let pool = wait_for("the transfers to arrive", Duration::from_secs(60), || {
                let pool = node.get("mempool");
                let list = pool.as_array().expect("a list");
                let seen: HashMap<String, u64> = list
                    .iter()
                    .map(|t| {
                        let txid = t["txid"].as_str().unwrap_or_default().to_string();
                        (txid, t["received"].as_u64().unwrap_or(0))
                    })
                    .collect();
                let all = offered.keys().all(|txid| seen.contains_key(txid));
                (all || Instant::now() > deadline).then_some(seen)
            });
            for (txid, sent) in offered {
                match pool.get(txid) {
                    Some(received) => latencies.push(received.saturating_sub(*sent)),
                    None => lost += 1,
                }
            }
        }
        (latencies, lost)
    }

    /// n1 mines until every mempool is empty, and all reach its tip.
    fn mine_away(&self) {
        while self.nodes.iter().any(|node| !node.mempool_ids().is_empty()) {
            self.nodes[1].mine(1);
        }
        self.wait_same_tip();
    }

    fn wait_same_tip(&self) {
        let tip = self.nodes[1].tip();
        for node in &self.nodes {
            wait_for("every node on n1's tip", Duration::from_secs(120), || {
                (node.tip() == tip).then_some(())
            });
        }
    }

    fn round(&self, number: usize) -> Round {
        let (offered_now, live) = (
            transfers(&self.params, &format!("r{number}"), RATE * SECONDS),
            transfers(&self.params, &format!("r{number}-live"), RATE * LIVE_SECONDS),
        );
        let round_trip_ms = self.round_trip_ms();
        let offered = offer(&self.entry, &offered_now);
        let (transfer_latencies, lost) = self.deliveries(&offered);
        // The backlog is mined away unmeasured: it is not how a live network looks.
        self.mine_away();
        // Then transfers keep coming while n1 mines about a block a second; when did
        // each of those blocks reach the others, compared with when n1 made it?
        let from = self.nodes[1].height();
        let offering = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while offering.load(std::sync::atomic::Ordering::Relaxed) {
                    self.nodes[1].mine(1);
                    std::thread::sleep(Duration::from_millis(1000));
                }
            });
            offer(&self.entry, &live);
            offering.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        self.wait_same_tip();
        let mut blocks = Vec::new();
        for height in from + 1..=self.nodes[1].height() {
            let made = self.nodes[1].get(&format!("block/{height}"))["received"].as_u64();
            for node in self.nodes.iter().filter(|n| n.name != "n1") {
                let arrived = node.get(&format!("block/{height}"))["received"].as_u64();
                blocks.push(arrived.unwrap_or(0).saturating_sub(made.unwrap_or(0)));
            }
        }
        self.mine_away();
        Round { round_trip_ms, transfers: transfer_latencies, blocks, lost }
    }
}

/// Median, lowest and highest of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("bench", 14);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        extra: vec!["--min-relay-fee".into(), "0".into()],
        ..NodeOptions::default()
    };
    let nodes: Vec<NodeProcess> = (0..NODES)
        .map(|i| NodeProcess::start(&format!("n{i}"), &dir.path().join(format!("n{i}")), &options))
        .collect();
    for node in &nodes {
        wait_for("a full mesh", Duration::from_secs(60), || {
            let peers = node.peer_names();
            (peers.len() == NODES - 1 && peers.iter().all(|(_, connected)| *connected))
                .then_some(())
        });
    }
    // One entry point: the offering peer is connected to n0 only.
    let entry = RawPeer::start(keypair("offering-peer"), params.network_id(), &[]);
    let entry_address =
        nodes[0].get("whoami")["addresses"][0].as_str().expect("an address").to_string();
    entry.dial(&entry_address);
    wait_for("the offering peer connected", Duration::from_secs(30), || {
        entry.connected().contains(&nodes[0].peer_id).then_some(())
    });
    // Gossip reaches n0 only once the offering peer knows n0 subscribes to transfers: a
    // probe a second until one arrives, so that no round starts into the void.
    let probes = transfers(&params, "probe", 60);
    let mut next_probe = probes.iter();
    wait_for("the offering peer's gossip to reach n0", Duration::from_secs(60), || {
        let probe = next_probe.next().expect("a probe left");
        entry.publish(Topic::Transactions, probe.encode());
        std::thread::sleep(Duration::from_secs(1));
        nodes[0].mempool_ids().contains(&probe.txid().to_string()).then_some(())
    });
    let bench = Bench { nodes, entry, params };
    bench.mine_away();

    let mut results = Vec::new();
    for number in 1..=rounds {
        let round = bench.round(number);
        let (mut transfers, mut blocks) = (round.transfers.clone(), round.blocks.clone());
        transfers.sort_unstable();
        blocks.sort_unstable();
        let figures = serde_json::json!({
            "round_trip_ms": round.round_trip_ms,
            "tx_p50": percentile(&transfers, 0.5),
            "tx_p99": percentile(&transfers, 0.99),
            "tx_samples": transfers.len(),
            "tx_lost": round.lost,
            "block_p50": percentile(&blocks, 0.5),
            "block_p99": percentile(&blocks, 0.99),
            "block_samples": blocks.len(),
        });
        println!("round {number} of {rounds}: {figures}");
        results.push(figures);
    }
    let column =
        |key: &str| spread(results.iter().map(|r| r[key].as_f64().unwrap_or(0.0)).collect());
    let (round_trip, _, _) = column("round_trip_ms");
    let lost: u64 = results.iter().map(|r| r["tx_lost"].as_u64().unwrap_or(0)).sum();
    println!(
        "{rounds} rounds of {} transfers and about {LIVE_SECONDS} blocks to {NODES} nodes; bound = a request round trip to a node, {round_trip:.2} ms (median)",
        RATE * SECONDS
    );
    for (key, name) in [
        ("tx_p50", "network_tx_p50"),
        ("tx_p99", "network_tx_p99"),
        ("block_p50", "network_block_p50"),
        ("block_p99", "network_block_p99"),
    ] {
        let (median, low, high) = column(key);
        println!("{name}: median {median} ms across rounds, spread {low}–{high} ms");
        // Lower is better here: the ratio is how many round trips the latency is worth.
        Report {
            name: name.into(),
            value: median,
            unit: "ms".into(),
            bound: round_trip,
            target: None,
        }
        .publish();
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let (tx_p99, block_p99) = (column("tx_p99").0, column("block_p99").0);
    println!(
        "targets: transfer p99 <= {TX_P99_TARGET_MS} ms: {}; block p99 <= {BLOCK_P99_TARGET_MS} ms: {}; lost = 0: {} ({lost})",
        verdict(tx_p99 <= TX_P99_TARGET_MS),
        verdict(block_p99 <= BLOCK_P99_TARGET_MS),
        verdict(lost == 0),
    );
    write_json("network", &serde_json::json!({ "rounds": results, "lost": lost }));
    if let Some(keep) = std::env::var_os("RACLETTE_BENCH_KEEP_LOGS") {
        for node in &bench.nodes {
            let _ = std::fs::copy(
                node.data.join("node.log"),
                std::path::Path::new(&keep).join(format!("{}.log", node.name)),
            );
        }
    }
    drop(tracker);
}
