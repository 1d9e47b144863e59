//! `just bench scale` (`N=…` nodes, 100 by default): real node processes and a tracker on
//! loopback. Reports the time to start them all; how long blocks and transfers take to
//! reach every node (p50, p99, max, from each node's own first-seen time on the same
//! clock); connections per node; idle memory per node and the tracker's. Written to
//! `target/bench/scale.json`.
//!
//! The bound each latency is compared with is the target (1 s); the request
//! round trip to a node's API, measured in the same run, is printed beside it as the
//! floor.

use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{summary, write_json};
use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, http_text, network_file, rss_mib, test_params,
    wait_for,
};
use raclette_node::network::MAX_CONNECTIONS;

/// Blocks and transfers measured.
const ROUNDS: usize = 5;
const PATIENCE: Duration = Duration::from_secs(300);

fn mean_max(values: &[f64]) -> serde_json::Value {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = values.iter().copied().fold(0.0, f64::max);
    serde_json::json!({ "mean": (mean * 10.0).round() / 10.0, "max": (max * 10.0).round() / 10.0 })
}

fn connections(node: &NodeProcess) -> f64 {
    let (_, text) = http_text(&format!("{}/metrics", node.api));
    text.lines()
        .find_map(|line| line.strip_prefix("raclette_connections ")?.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let n: usize = std::env::var("N").ok().and_then(|n| n.parse().ok()).unwrap_or(100).max(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("scale", 10);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        ..NodeOptions::default()
    };
    eprintln!("starting {n} nodes...");
    let started = Instant::now();
    let nodes: Vec<NodeProcess> = (0..n)
        .map(|i| {
            let name = format!("n{i:03}");
            NodeProcess::start(&name, &dir.path().join(&name), &options)
        })
        .collect();
    for node in &nodes {
        wait_for(&format!("{} in the network", node.name), PATIENCE, || {
            let peers = node.peer_names();
            (peers.len() == n - 1 && peers.iter().any(|(_, connected)| *connected)).then_some(())
        });
    }
    let start_seconds = started.elapsed().as_secs_f64();
    eprintln!("{n} nodes up in {start_seconds:.1} s");

    // Floor: a round trip to a node's API, median of 21.
    let mut trips: Vec<f64> = (0..21)
        .map(|_| {
            let at = Instant::now();
            nodes[0].get("status");
            at.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    trips.sort_by(f64::total_cmp);
    let round_trip_ms = trips[10];

    let mut blocks = Vec::new();
    let mut transfers = Vec::new();
    for round in 0..ROUNDS {
        // A block from a different node each round.
        let miner = &nodes[(round * 37) % n];
        let mined = miner.mine(1);
        let hash = mined["mined"][0]["hash"].as_str().expect("a mined block").to_string();
        let height = mined["mined"][0]["height"].as_u64().expect("its height");
        for node in &nodes {
            wait_for(&format!("{} on block {height}", node.name), PATIENCE, || {
                (node.tip() == hash).then_some(())
            });
        }
        let made = miner.get(&format!("block/{height}"))["received"].as_u64().unwrap_or(0);
        for node in nodes.iter().filter(|node| node.name != miner.name) {
            let arrived = node.get(&format!("block/{height}"))["received"].as_u64().unwrap_or(0);
            blocks.push(arrived.saturating_sub(made));
        }

        // A transfer from the miner (who now has coins) to someone far away.
        let receiver = &nodes[(round * 37 + n / 2) % n];
        let (txid, _) = miner.send(&receiver.name, "1", "across the network");
        let received_at = |node: &NodeProcess| {
            let pool = node.get("mempool");
            pool.as_array()?
                .iter()
                .find(|item| item["txid"] == txid.as_str())
                .and_then(|item| item["received"].as_u64())
        };
        let sent = received_at(miner).expect("in the sender's mempool");
        for node in nodes.iter().filter(|node| node.name != miner.name) {
            let at =
                wait_for(&format!("{} holding {txid}", node.name), PATIENCE, || received_at(node));
            transfers.push(at.saturating_sub(sent));
        }
    }

    // Idle: let the network settle, then read connections and memory.
    std::thread::sleep(Duration::from_secs(5));
    let connection_counts: Vec<f64> = nodes.iter().map(connections).collect();
    let rss: Vec<f64> = nodes.iter().map(|node| rss_mib(node.pid())).collect();
    let tracker_rss = rss_mib(tracker.pid());

    let report = serde_json::json!({
        "nodes": n,
        "start_seconds": (start_seconds * 10.0).round() / 10.0,
        "block_ms": summary(blocks.clone()),
        "transfer_ms": summary(transfers.clone()),
        "connections": mean_max(&connection_counts),
        "connection_cap": MAX_CONNECTIONS,
        "idle_rss_mib": mean_max(&rss),
        "tracker_rss_mib": (tracker_rss * 10.0).round() / 10.0,
        "api_round_trip_ms": (round_trip_ms * 100.0).round() / 100.0,
        "targets": {"block_p99_ms": 1000, "transfer_p99_ms": 1000, "connections_max": MAX_CONNECTIONS, "idle_rss_mib_max": 64},
    });
    println!("{report:#}");
    let block_p99 = report["block_ms"]["p99"].as_u64().unwrap_or(0);
    let transfer_p99 = report["transfer_ms"]["p99"].as_u64().unwrap_or(0);
    let max_connections = report["connections"]["max"].as_f64().unwrap_or(0.0);
    let max_rss = report["idle_rss_mib"]["max"].as_f64().unwrap_or(0.0);
    for (what, met) in [
        ("all converge", true),
        ("block p99 <= 1 s", block_p99 <= 1000),
        ("transfer p99 <= 1 s", transfer_p99 <= 1000),
        ("max connections <= cap", max_connections <= MAX_CONNECTIONS as f64),
        ("idle RSS <= 64 MiB", max_rss <= 64.0),
    ] {
        println!("target {what}: {}", if met { "met" } else { "NOT met" });
    }
    write_json("scale", &report);
    drop(nodes);
    drop(tracker);
}
