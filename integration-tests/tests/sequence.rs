//! The plan's whole sequence between real processes: a tracker; alice, bob and carol
//! join; alice mines; alice sends bob 10 with "hello bob"; bob reads it; carol sees the
//! amount but never the text; carol mines; everyone agrees, and the money adds up.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, network_file, test_params, wait_for,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| item[key].as_str() == Some(value))
}

#[test]
fn given_three_nodes_when_the_plan_is_followed_then_all_agree_and_money_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("sequence", 12);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        ..NodeOptions::default()
    };
    let nodes: Vec<NodeProcess> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| NodeProcess::start(name, &dir.path().join(name), &options))
        .collect();
    let [alice, bob, carol] = &nodes[..] else { unreachable!() };

    for node in &nodes {
        wait_for(&format!("{} to see the other two, connected", node.name), PATIENCE, || {
            let peers = node.peer_names();
            (peers.len() == 2 && peers.iter().all(|(_, connected)| *connected)).then_some(())
        });
    }

    let mined = alice.mine(1);
    assert_eq!(mined["mined"].as_array().unwrap().len(), 1, "{mined}");
    for node in &nodes {
        wait_for(&format!("{} at height 1", node.name), PATIENCE, || {
            (node.height() == 1).then_some(())
        });
    }

    let (txid, status) = alice.send("bob", "10", "hello bob");
    assert_eq!(status, "accepted");
    let item = wait_for("bob's inbox to show alice's message", PATIENCE, || {
        find(&bob.get("inbox"), "txid", &txid).cloned()
    });
    assert_eq!(item["from"], "alice");
    assert_eq!(item["amount"], "10");
    assert_eq!(item["message"], "hello bob");
    assert_eq!(item["height"], Value::Null, "pending until mined");

    let seen = wait_for("carol to have the transaction", PATIENCE, || {
        find(&carol.get("mempool"), "txid", &txid).cloned()
    });
    assert_eq!(seen["amount"], "10");
    assert_eq!(seen["from"], "alice");
    assert!(carol.get("inbox").as_array().unwrap().is_empty(), "carol has no message");

    let mined = carol.mine(1);
    assert_eq!(mined["mined"].as_array().unwrap().len(), 1, "{mined}");
    let tip = carol.tip();
    for node in &nodes {
        wait_for(&format!("{} on carol's tip", node.name), PATIENCE, || {
            (node.tip() == tip).then_some(())
        });
    }

    // The text: bob reads it in the block, carol (who mined it) cannot.
    let in_block = |node: &NodeProcess| {
        find(&node.get("block/2")["transactions"], "txid", &txid).cloned().unwrap()
    };
    assert_eq!(in_block(bob)["message"], "hello bob");
    assert_eq!(in_block(carol)["message"], Value::Null);
    assert_eq!(in_block(carol)["amount"], "10");
    let item = wait_for("bob's inbox to show the block", PATIENCE, || {
        find(&bob.get("inbox"), "txid", &txid).filter(|item| item["height"] == 2).cloned()
    });
    assert_eq!(item["message"], "hello bob");

    // Everyone agrees on every balance, and they add up to two block rewards.
    for node in &nodes {
        assert_eq!(node.balance("alice"), "39.999", "alice as seen by {}", node.name);
        assert_eq!(node.balance("bob"), "10", "bob as seen by {}", node.name);
        assert_eq!(node.balance("carol"), "50.001", "carol as seen by {}", node.name);
        assert!(node.get("mempool").as_array().unwrap().is_empty());
    }
}
