//! Thirty nodes on one address: every node gets every block and every transfer, and no
//! node holds more connections than its cap.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, http_text, network_file, test_params, wait_for,
};
use raclette_node::network::MAX_CONNECTIONS;

/// Nodes in the test: three times gossipsub's default colocation threshold.
const NODES: usize = 30;
/// Guards against a hang; the figures the issue asks for are printed, not asserted.
const PATIENCE: Duration = Duration::from_secs(180);

/// Connections open now (`raclette_connections` in `/metrics`).
fn connections(node: &NodeProcess) -> u64 {
    let (_, text) = http_text(&format!("{}/metrics", node.api));
    text.lines()
        .find_map(|line| line.strip_prefix("raclette_connections ")?.parse().ok())
        .expect("the connections gauge")
}

#[test]
fn given_thirty_nodes_on_one_address_then_a_block_and_a_transfer_reach_all_and_connections_stay_capped()
 {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("crowd", 8);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        ..NodeOptions::default()
    };
    let started = Instant::now();
    let nodes: Vec<NodeProcess> = (0..NODES)
        .map(|i| {
            let name = format!("n{i:02}");
            NodeProcess::start(&name, &dir.path().join(&name), &options)
        })
        .collect();
    for node in &nodes {
        wait_for(&format!("{} to list every other node", node.name), PATIENCE, || {
            let peers = node.peer_names();
            (peers.len() == NODES - 1 && peers.iter().any(|(_, connected)| *connected))
                .then_some(())
        });
    }
    eprintln!("{NODES} nodes up and meshed in {:.1} s", started.elapsed().as_secs_f64());

    let mined = Instant::now();
    let tip = nodes[0].mine(1)["mined"][0]["hash"].as_str().unwrap().to_string();
    for node in &nodes {
        wait_for(&format!("{} to import the block", node.name), PATIENCE, || {
            (node.tip() == tip).then_some(())
        });
    }
    eprintln!("the block reached all {NODES} in {} ms", mined.elapsed().as_millis());

    let sent = Instant::now();
    let last = &nodes[NODES - 1];
    let (txid, _) = nodes[0].send(&last.name, "1", "to the last of thirty");
    for node in &nodes {
        wait_for(&format!("{} to hold the transfer", node.name), PATIENCE, || {
            node.mempool_ids().contains(&txid).then_some(())
        });
    }
    eprintln!("the transfer reached all {NODES} mempools in {} ms", sent.elapsed().as_millis());

    let counts: Vec<u64> = nodes.iter().map(connections).collect();
    eprintln!("connections per node: {counts:?}");
    assert!(
        counts.iter().all(|count| *count as usize <= MAX_CONNECTIONS),
        "a node holds more than {MAX_CONNECTIONS} connections: {counts:?}"
    );
}
