//! `GET /metrics` on a node and on the tracker: Prometheus text that a scraper parses,
//! with the chain, peers, mempool and verdict counters moving as blocks and transfers
//! come, and libp2p's own figures beside them.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, http_text, network_file, test_params, wait_for,
};

const PATIENCE: Duration = Duration::from_secs(60);

/// One sample: series name, labels as written, value.
type Sample = (String, String, f64);

/// Parses Prometheus/OpenMetrics text strictly: every line is a comment (`# HELP`,
/// `# TYPE`, `# UNIT`, the final `# EOF`) or `name{labels} value`.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    let mut samples = Vec::new();
    let mut families = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split_whitespace();
            let word = words.next().unwrap();
            assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&word), "comment: {line}");
            if word == "TYPE" {
                let family = words.next().unwrap().to_string();
                assert!(families.insert(family), "each metric is described once: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "labels closed: {line}");
                (name, labels.trim_end_matches('}').to_string())
            }
            None => (series, String::new()),
        };
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "name in {line}"
        );
        samples.push((name.to_string(), labels, value));
    }
    samples
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn total(samples: &[Sample], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|label| l.contains(label)))
        .map(|(_, _, value)| value)
        .sum()
}

fn scrape(node: &NodeProcess) -> Vec<Sample> {
    let (status, text) = http_text(&format!("{}/metrics", node.api));
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

#[test]
fn given_mining_and_a_transfer_then_the_metrics_parse_and_their_counters_moved() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("metrics", 12);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        ..NodeOptions::default()
    };
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let bob = NodeProcess::start("bob", &dir.path().join("bob"), &options);
    wait_for("alice and bob connected", PATIENCE, || {
        (alice.peer_names() == [("bob".to_string(), true)]).then_some(())
    });

    let before = scrape(&bob);
    assert_eq!(total(&before, "raclette_height", &[]), 0.0);
    alice.mine(2);
    wait_for("bob at height 2", PATIENCE, || (bob.height() == 2).then_some(()));
    let (_, status) = alice.send("bob", "5", "for the metrics");
    assert_eq!(status, "accepted");

    let alice_now = scrape(&alice);
    assert_eq!(total(&alice_now, "raclette_height", &[]), 2.0);
    assert_eq!(total(&alice_now, "raclette_peers", &["link=\"direct\""]), 1.0);
    assert_eq!(total(&alice_now, "raclette_mempool_transactions", &[]), 1.0);
    assert!(total(&alice_now, "raclette_mempool_bytes", &[]) > 100.0);
    assert!(total(&alice_now, "raclette_work", &[]) > 0.0);
    assert!(total(&alice_now, "raclette_store_bytes", &[]) > 0.0);
    assert_eq!(total(&alice_now, "raclette_hash_rate", &[]), 0.0, "idle");
    assert!(
        total(&alice_now, "raclette_request_seconds_count", &["kind=\"direct\""]) >= 1.0,
        "the direct transfer's round trip"
    );
    assert!(total(&alice_now, "raclette_libp2p_swarm_connections_established_total", &[]) >= 1.0);

    let bob_now = scrape(&bob);
    let gossip_blocks = ["source=\"gossip\"", "outcome=\"accepted\""];
    assert!(total(&bob_now, "raclette_blocks_total", &gossip_blocks) >= 1.0, "{bob_now:?}");
    assert!(total(&bob_now, "raclette_blocks_total", &[]) >= 2.0, "two blocks came");
    let direct = ["source=\"direct\"", "outcome=\"accepted\""];
    assert_eq!(total(&bob_now, "raclette_transfers_total", &direct), 1.0);
    assert!(total(&bob_now, "raclette_gossipsub_topic_msg_recv_counts_total", &[]) >= 1.0);

    // The tracker: its cards, pushes and registrations.
    let (status, text) = http_text(&format!("{}/metrics", tracker.api));
    assert_eq!(status, 200);
    let tracker_now = parse(&text);
    assert_eq!(total(&tracker_now, "raclette_tracker_cards", &[]), 2.0);
    assert!(total(&tracker_now, "raclette_tracker_pushes_total", &[]) >= 1.0);
    assert!(
        total(&tracker_now, "raclette_tracker_registrations_total", &["kind=\"accepted\""]) >= 2.0
    );
    assert!(
        total(&tracker_now, "raclette_tracker_libp2p_swarm_connections_established_total", &[])
            >= 2.0
    );
}
