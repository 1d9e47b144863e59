//! The tracker between real processes on loopback: it pushes every accepted card to the
//! other nodes at once, keeps names bound to their first key, refuses forged, stolen,
//! malformed and oversized requests without falling over, keeps every name across a
//! SIGKILL, and nodes go on working from their own copy of the directory while it is
//! down.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, RawPeer, TrackerProcess, http_text, network_file, test_params,
    wait_for,
};
use raclette_node::network::{Protocol, RequestError};
use raclette_protocol::wire::{DirectoryRequest, DirectoryResponse};
use raclette_protocol::{Keypair, NetworkId, NetworkParams, PeerCard, PeerName, WireMessage};
use serde_json::Value;

/// Guard against hanging; never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);
/// Guard for a node that is expected to stop by itself.
const EXIT_PATIENCE: Duration = Duration::from_secs(30);
/// The node's exit code when the tracker refuses its name.
const EXIT_NAME_REFUSED: i32 = 3;

fn options(tracker: &TrackerProcess) -> NodeOptions {
    NodeOptions { trackers: vec![tracker.address.clone()], ..NodeOptions::default() }
}

/// The network nodes started without a network file are on (`--network dev`).
fn dev_network() -> NetworkId {
    NetworkParams::dev().network_id()
}

fn key(n: u8) -> Keypair {
    Keypair::from_secret_bytes([n; 32]).unwrap()
}

/// The PeerId at the end of a tracker's multiaddr.
fn peer_id_in(address: &str) -> String {
    address.rsplit("/p2p/").next().unwrap().to_string()
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| item["name"].as_str() == Some(name))
}

/// The key `node` lists for `name` in its directory, if it lists the name.
fn listed_key(node: &NodeProcess, name: &str) -> Option<String> {
    find(&node.get("peers"), name).and_then(|peer| peer["key"].as_str().map(str::to_string))
}

/// The node's own key, as it reports it.
fn own_key(node: &NodeProcess) -> String {
    node.get("whoami")["key"].as_str().unwrap().to_string()
}

fn addresses(value: &Value) -> Vec<String> {
    value["addresses"]
        .as_array()
        .map(|list| list.iter().filter_map(|a| a.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Names the tracker's API lists.
fn tracker_names(tracker: &TrackerProcess) -> Vec<String> {
    tracker
        .peers()
        .as_array()
        .unwrap()
        .iter()
        .map(|card| card["name"].as_str().unwrap().to_string())
        .collect()
}

/// Whether the tracker lists `name` as connected now.
fn tracker_shows_connected(tracker: &TrackerProcess, name: &str) -> bool {
    find(&tracker.peers(), name).is_some_and(|card| card["connected"] == Value::Bool(true))
}

fn is_connected_to(node: &NodeProcess, name: &str) -> bool {
    node.peer_names().iter().any(|(peer, connected)| peer == name && *connected)
}

/// A raw peer for `network` with a connection to the tracker, ready for requests.
fn raw_peer_at(keypair: Keypair, network: NetworkId, tracker: &TrackerProcess) -> RawPeer {
    let peer = RawPeer::start(keypair, network, &[]);
    let tracker_id = peer_id_in(&tracker.address);
    peer.dial(&tracker.address);
    wait_for("the raw peer to connect to the tracker", PATIENCE, || {
        peer.connected().contains(&tracker_id).then_some(())
    });
    peer
}

/// Sends `bytes` to the tracker's directory and returns the raw outcome.
fn ask_directory(
    peer: &RawPeer,
    tracker: &TrackerProcess,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    peer.request(&peer_id_in(&tracker.address), Protocol::Directory, bytes)
}

/// Sends `bytes` and expects a well-formed refusal; returns its reason.
fn refusal_for(peer: &RawPeer, tracker: &TrackerProcess, bytes: Vec<u8>) -> String {
    let answer = ask_directory(peer, tracker, bytes).expect("the tracker answers");
    match DirectoryResponse::decode(&answer).expect("a well-formed answer") {
        DirectoryResponse::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A card for `name` signed by `signer`, with an address of `signer`'s PeerId.
fn card(signer: &Keypair, network: NetworkId, name: &str, seq: u64) -> PeerCard {
    let peer = raclette_node::network::identity::peer_id_of(&signer.public());
    PeerCard::sign(
        signer,
        network,
        PeerName::new(name).unwrap(),
        vec![format!("/ip4/127.0.0.1/tcp/9/p2p/{peer}")],
        seq,
    )
}

#[test]
fn given_tracker_and_three_nodes_when_they_join_then_each_lists_the_others_by_name_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let options = options(&tracker);
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let bob = NodeProcess::start("bob", &dir.path().join("bob"), &options);
    let bob_key = own_key(&bob);
    wait_for("alice to list bob", PATIENCE, || listed_key(&alice, "bob"));
    wait_for("bob to list alice", PATIENCE, || listed_key(&bob, "alice"));

    let started = Instant::now();
    let carol = NodeProcess::start("carol", &dir.path().join("carol"), &options);
    wait_for("alice and bob to list carol, told by the tracker", PATIENCE, || {
        (listed_key(&alice, "carol").is_some() && listed_key(&bob, "carol").is_some()).then_some(())
    });
    eprintln!("push latency: {} ms", started.elapsed().as_millis());

    let nodes = [&alice, &bob, &carol];
    let keys: Vec<String> = nodes.iter().map(|node| own_key(node)).collect();
    assert_eq!(keys[1], bob_key, "bob's key is stable");
    for node in nodes {
        wait_for(&format!("{} to list the other two", node.name), PATIENCE, || {
            (node.get("peers").as_array().unwrap().len() == 2).then_some(())
        });
        for (other, other_key) in nodes.iter().zip(&keys) {
            if other.name == node.name {
                continue;
            }
            assert_eq!(
                listed_key(node, &other.name).as_ref(),
                Some(other_key),
                "{} lists {} with the key {} reports",
                node.name,
                other.name,
                other.name
            );
        }
        assert_eq!(listed_key(node, &node.name), None, "{} does not list itself", node.name);
    }
}

#[test]
fn given_name_taken_when_another_key_asks_for_it_then_refused_and_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let options = options(&tracker);
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    wait_for("the tracker to list alice", PATIENCE, || find(&tracker.peers(), "alice").map(|_| ()));

    // Another data directory is another key; names are the same whatever their case.
    for (i, name) in ["alice", "Alice"].into_iter().enumerate() {
        let data = dir.path().join(format!("impostor-{i}"));
        let (code, log) = NodeProcess::run_to_exit(name, &data, &options, EXIT_PATIENCE);

        assert_eq!(code, Some(EXIT_NAME_REFUSED), "{name} stops with code 3:\n{log}");
        assert!(log.contains("taken"), "{name} is told the name is taken:\n{log}");
    }
    let card = find(&tracker.peers(), "alice").cloned().unwrap();
    assert_eq!(card["key"].as_str().unwrap(), own_key(&alice), "alice keeps her name");
    assert_eq!(tracker_names(&tracker), vec!["alice".to_string()]);
}

#[test]
fn given_owner_rejoins_from_new_address_then_its_card_is_updated_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let options = options(&tracker);
    let mut alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let bob = NodeProcess::start("bob", &dir.path().join("bob"), &options);
    let old = wait_for("bob to list alice's addresses", PATIENCE, || {
        find(&bob.get("peers"), "alice").map(addresses).filter(|list| !list.is_empty())
    });
    let key = own_key(&alice);

    alice.restart(); // same data directory (same key), new port

    let new_own = addresses(&alice.get("whoami"));
    assert_ne!(new_own, old, "alice listens on a new port");
    let published = wait_for("the tracker to show alice's new address", PATIENCE, || {
        let card = find(&tracker.peers(), "alice").cloned()?;
        let list = addresses(&card);
        (list != old && !list.is_empty() && list.iter().all(|a| new_own.contains(a)))
            .then_some(list)
    });
    wait_for("bob to list alice's new address", PATIENCE, || {
        let listed = find(&bob.get("peers"), "alice").map(addresses)?;
        (listed == published).then_some(())
    });
    assert_eq!(listed_key(&bob, "alice"), Some(key), "still alice's key");
    assert_eq!(own_key(&alice), find(&tracker.peers(), "alice").unwrap()["key"]);
    wait_for("bob to reach alice at her new address", PATIENCE, || {
        is_connected_to(&bob, "alice").then_some(())
    });
}

#[test]
fn given_forged_or_stolen_cards_when_registered_then_refused_and_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let network = dev_network();
    let (mallory, victim) = (key(0x0a), key(0x0b));
    let peer = raw_peer_at(mallory.clone(), network, &tracker);

    // Signed, then changed: the signature no longer covers what the card says.
    let mut forged = card(&mallory, network, "forger", 1);
    forged.name = PeerName::new("forged").unwrap();
    let reason = refusal_for(&peer, &tracker, DirectoryRequest::Register(forged).encode());
    assert!(reason.contains("signature"), "says the signature is bad: {reason}");

    let mut reseq = card(&mallory, network, "reseq", 1);
    reseq.seq = 2;
    let reason = refusal_for(&peer, &tracker, DirectoryRequest::Register(reseq).encode());
    assert!(reason.contains("signature"), "says the signature is bad: {reason}");

    // A genuine card of another key, sent over mallory's connection.
    let stolen = card(&victim, network, "victim", 1);
    let reason = refusal_for(&peer, &tracker, DirectoryRequest::Register(stolen).encode());
    assert!(reason.contains("key"), "says the key is not the sender's: {reason}");

    // Its own card, signed, but pointing dials at someone else's PeerId.
    let victim_peer = raclette_node::network::identity::peer_id_of(&victim.public());
    let misdirecting = PeerCard::sign(
        &mallory,
        network,
        PeerName::new("misdirect").unwrap(),
        vec![format!("/ip4/127.0.0.1/tcp/9/p2p/{victim_peer}")],
        1,
    );
    let reason = refusal_for(&peer, &tracker, DirectoryRequest::Register(misdirecting).encode());
    assert!(reason.contains("/p2p/"), "says the address is not its own: {reason}");

    // The same connection with an honest card of its own is accepted: the refusals
    // above are about the cards, not the peer.
    let honest = card(&mallory, network, "mallory", 1);
    let answer =
        ask_directory(&peer, &tracker, DirectoryRequest::Register(honest).encode()).unwrap();
    assert_eq!(DirectoryResponse::decode(&answer).unwrap(), DirectoryResponse::Registered);

    let names = tracker_names(&tracker);
    assert_eq!(names, vec!["mallory".to_string()], "only the honest card is listed");
    let listed = find(&tracker.peers(), "mallory").cloned().unwrap();
    assert_eq!(listed["key"].as_str().unwrap(), mallory.public().to_string());
}

#[test]
fn given_tracker_killed_when_started_again_then_names_kept_and_nodes_reconnect_unaided() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let options = options(&tracker);
    let mut nodes: Vec<NodeProcess> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| NodeProcess::start(name, &dir.path().join(name), &options))
        .collect();
    for node in &nodes {
        wait_for(&format!("the tracker to show {} connected", node.name), PATIENCE, || {
            tracker_shows_connected(&tracker, &node.name).then_some(())
        });
    }
    let before = tracker.peers();
    let (data, port, address) = (tracker.data.clone(), tracker.port(), tracker.address.clone());

    tracker.kill9();
    tracker = TrackerProcess::start_on(&data, port);

    assert_eq!(tracker.address, address, "same identity, same port");
    let after = tracker.peers();
    for node in &nodes {
        let (was, is) = (find(&before, &node.name).unwrap(), find(&after, &node.name));
        let is = is.unwrap_or_else(|| panic!("{} lost by the restart: {after}", node.name));
        assert_eq!(is["key"], was["key"], "{}'s name still bound to its key", node.name);
    }
    for node in &nodes {
        let old_seq = find(&before, &node.name).unwrap()["seq"].as_u64().unwrap();
        wait_for(&format!("{} to reconnect and register again", node.name), PATIENCE, || {
            let card = find(&tracker.peers(), &node.name).cloned()?;
            (card["connected"] == Value::Bool(true) && card["seq"].as_u64()? > old_seq)
                .then_some(())
        });
    }
    for node in &mut nodes {
        assert!(node.is_running(), "{} was never restarted", node.name);
    }
    assert_eq!(tracker.peers().as_array().unwrap().len(), 3, "{}", tracker.peers());
}

#[test]
fn given_tracker_down_when_nodes_use_their_directory_then_they_send_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("trackerless", 12);
    let options =
        NodeOptions { network_file: Some(network_file(dir.path(), &params)), ..options(&tracker) };
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let mut bob = NodeProcess::start("bob", &dir.path().join("bob"), &options);
    for (node, other) in [(&alice, "bob"), (&bob, "alice")] {
        wait_for(&format!("{} connected to {other}", node.name), PATIENCE, || {
            is_connected_to(node, other).then_some(())
        });
    }

    tracker.kill9();

    assert!(listed_key(&alice, "bob").is_some(), "alice still lists bob");
    assert!(listed_key(&bob, "alice").is_some(), "bob still lists alice");
    let mined = alice.mine(1);
    assert_eq!(mined["mined"].as_array().unwrap().len(), 1, "{mined}");
    wait_for("bob at height 1", PATIENCE, || (bob.height() == 1).then_some(()));
    let (txid, status) = alice.send("bob", "10", "no tracker needed");
    assert_eq!(status, "accepted");
    let item = wait_for("bob's inbox to show alice's message", PATIENCE, || {
        bob.get("inbox")
            .as_array()?
            .iter()
            .find(|item| item["txid"].as_str() == Some(txid.as_str()))
            .cloned()
    });
    assert_eq!(item["from"], "alice");
    assert_eq!(item["amount"], "10");
    assert_eq!(item["message"], "no tracker needed");

    bob.restart(); // the tracker is still down: only his stored directory knows alice

    wait_for("bob to reconnect to alice from his stored directory", PATIENCE, || {
        is_connected_to(&bob, "alice").then_some(())
    });
    assert!(listed_key(&bob, "alice").is_some());
}

#[test]
fn given_garbage_and_oversized_requests_then_refused_and_tracker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let network = dev_network();
    let sender = key(0x07);
    let peer = raw_peer_at(sender.clone(), network, &tracker);

    // Deterministic noise (xorshift), starting with a byte no CBOR item starts with.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    noise[0] = 0xff;
    let reason = refusal_for(&peer, &tracker, noise);
    assert!(reason.contains("malformed"), "{reason}");

    // Nothing, or half a message, reads as a stream its sender dropped half-way: no
    // answer, and nobody blamed (PROTOCOL.md §2).
    let answer = ask_directory(&peer, &tracker, Vec::new());
    assert!(answer.is_err(), "an empty request is no request: {answer:?}");
    let whole = DirectoryRequest::Register(card(&sender, network, "truncated", 1)).encode();
    let answer = ask_directory(&peer, &tracker, whole[..whole.len() / 2].to_vec());
    assert!(answer.is_err(), "a request cut short is no request: {answer:?}");

    // Well-formed CBOR of the wrong message.
    let reason = refusal_for(&peer, &tracker, DirectoryResponse::Registered.encode());
    assert!(reason.contains("malformed"), "a response sent as a request: {reason}");

    // Over the limit: not even read to the end, refused with the reason.
    let oversized = vec![0x42u8; DirectoryRequest::MAX_BYTES + 1024];
    let reason = refusal_for(&peer, &tracker, oversized);
    assert!(reason.contains("exceeds"), "an oversized request: {reason}");

    // Still serving: the same peer gets answers, and a real node joins and is listed.
    let lookup = DirectoryRequest::Lookup { network, name: PeerName::new("nobody").unwrap() };
    let answer = ask_directory(&peer, &tracker, lookup.encode());
    let answer = answer.or_else(|_| {
        // The oversized request may have cost the connection: dial again.
        let peer_id = peer_id_in(&tracker.address);
        peer.dial(&tracker.address);
        wait_for("the raw peer to reconnect", PATIENCE, || {
            peer.connected().contains(&peer_id).then_some(())
        });
        ask_directory(&peer, &tracker, lookup.encode())
    });
    assert_eq!(
        DirectoryResponse::decode(&answer.unwrap()).unwrap(),
        DirectoryResponse::Cards { cards: Vec::new(), more: false }
    );
    let dave = NodeProcess::start("dave", &dir.path().join("dave"), &options(&tracker));
    wait_for("the tracker to list dave, connected", PATIENCE, || {
        tracker_shows_connected(&tracker, "dave").then_some(())
    });
    assert_eq!(tracker_names(&tracker), vec!["dave".to_string()], "no garbage was stored");
    assert_eq!(find(&tracker.peers(), "dave").unwrap()["key"].as_str().unwrap(), own_key(&dave));
}

#[test]
fn given_oversized_request_then_the_tracker_logs_why() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let peer = raw_peer_at(key(0x08), dev_network(), &tracker);

    let _ = ask_directory(&peer, &tracker, vec![0x42u8; DirectoryRequest::MAX_BYTES + 1024]);

    wait_for("the tracker to log the oversized request", PATIENCE, || {
        tracker.log().contains("exceeds").then_some(())
    });
}

#[test]
fn given_a_node_with_two_trackers_then_it_registers_with_both_and_merges_their_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        TrackerProcess::start(&dir.path().join("t1")),
        TrackerProcess::start(&dir.path().join("t2")),
    );
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options(&first));
    let bob = NodeProcess::start("bob", &dir.path().join("bob"), &options(&second));
    let both = NodeOptions {
        trackers: vec![first.address.clone(), second.address.clone()],
        ..NodeOptions::default()
    };
    let carol = NodeProcess::start("carol", &dir.path().join("carol"), &both);

    // Carol's card reaches both trackers; each one-tracker node learns her from its own.
    for tracker in [&first, &second] {
        wait_for("carol registered with both trackers", PATIENCE, || {
            find(&tracker.peers(), "carol").map(|_| ())
        });
    }
    wait_for("carol to know alice and bob from their two trackers", PATIENCE, || {
        (listed_key(&carol, "alice") == Some(own_key(&alice))
            && listed_key(&carol, "bob") == Some(own_key(&bob)))
        .then_some(())
    });
    for node in [&alice, &bob] {
        wait_for(&format!("{} to know carol", node.name), PATIENCE, || {
            (listed_key(node, "carol") == Some(own_key(&carol))).then_some(())
        });
    }
    // Each tracker only holds the cards registered with it.
    assert!(find(&first.peers(), "bob").is_none() && find(&second.peers(), "alice").is_none());
}

#[test]
fn given_mallory_takes_alices_name_at_a_second_tracker_then_alice_is_still_reached_and_mallory_shown_as_a_conflict()
 {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        TrackerProcess::start(&dir.path().join("t1")),
        TrackerProcess::start(&dir.path().join("t2")),
    );
    let both = NodeOptions {
        trackers: vec![first.address.clone(), second.address.clone()],
        ..NodeOptions::default()
    };
    // Carol uses both trackers and knows alice, who registered at the first.
    let carol = NodeProcess::start("carol", &dir.path().join("carol"), &both);
    let alice_data = dir.path().join("alice");
    let mut alice = NodeProcess::start("alice", &alice_data, &options(&first));
    let alice_key = own_key(&alice);
    wait_for("carol to know alice", PATIENCE, || {
        (listed_key(&carol, "alice") == Some(alice_key.clone())).then_some(())
    });

    // Mallory takes "alice" at the second tracker, which had never heard of her.
    let mallory = NodeProcess::start("alice", &dir.path().join("mallory"), &options(&second));
    let mallory_short = own_key(&mallory)[..12].to_string();
    let conflict = wait_for("carol to show mallory's claim", PATIENCE, || {
        let peers = carol.get("peers");
        let alice = find(&peers, "alice")?.clone();
        (alice["also_claimed_by"] == serde_json::json!([mallory_short])).then_some(alice)
    });
    assert_eq!(conflict["key"].as_str(), Some(alice_key.as_str()), "the name stays with alice");

    // Carol's money goes to alice, and she is told that another key claims the name.
    alice.mine(1);
    wait_for("carol to have a block's worth", PATIENCE, || (carol.height() >= 1).then_some(()));
    carol.mine(1);
    let (status, sent) = carol.post(
        "send",
        serde_json::json!({ "to": "alice", "amount": "5", "message": "for the real alice" }),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["also_claimed_by"], serde_json::json!([mallory_short]));
    wait_for("alice to get carol's transfer", PATIENCE, || {
        alice
            .get("inbox")
            .as_array()?
            .iter()
            .any(|m| m["message"] == "for the real alice")
            .then_some(())
    });
    assert!(mallory.get("inbox").as_array().unwrap().is_empty(), "nothing reached mallory");

    // Alice, now with both trackers, is refused at the second but keeps running.
    alice.stop();
    let mut alice = NodeProcess::start("alice", &alice_data, &both);
    let log = alice_data.join("node.log");
    wait_for("the second tracker to refuse alice", PATIENCE, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("the name is taken at this tracker").then_some(())
    });
    assert!(alice.is_running(), "one tracker still holds her name: {}", alice.log());
    assert!(
        listed_key(&alice, "alice").is_none(),
        "her own name is not mallory's in her directory"
    );
    wait_for("alice at carol's height", PATIENCE, || (alice.height() == 2).then_some(()));
}

#[test]
fn given_a_source_at_its_card_cap_then_a_new_key_from_it_is_refused_and_listed_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback counts as one source here: no --exempt-private, and a cap of 2.
    let tracker = TrackerProcess::start_with_flags(
        &dir.path().join("tracker"),
        &["--max-cards-per-source", "2"],
    );
    let options = options(&tracker);
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let bob = NodeProcess::start("bob", &dir.path().join("bob"), &options);
    wait_for("alice and bob listed", PATIENCE, || {
        (tracker_names(&tracker) == ["alice", "bob"]).then_some(())
    });
    let carol = NodeProcess::start("carol", &dir.path().join("carol"), &options);
    wait_for("the tracker to refuse carol", PATIENCE, || {
        tracker.log().contains("the most one address may").then_some(())
    });
    assert_eq!(tracker_names(&tracker), ["alice", "bob"]);
    let mut carol = carol;
    assert!(carol.is_running(), "a refused card is not a taken name: {}", carol.log());
    // Alice's own updates still pass: she is a known key of that source. Her new card
    // (a new port) is the third accepted registration.
    drop(alice);
    let _alice = NodeProcess::start("alice", &dir.path().join("alice"), &options);
    let accepted = "raclette_tracker_registrations_total{kind=\"accepted\"} 3";
    wait_for("alice's new card accepted", PATIENCE, || {
        http_text(&format!("{}/metrics", tracker.api)).1.contains(accepted).then_some(())
    });
    drop(bob);
}

#[test]
fn given_a_tracker_for_dev_then_a_card_of_another_network_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start_with_flags(
        &dir.path().join("tracker"),
        &["--exempt-private", "--network", "dev"],
    );
    let alice = NodeProcess::start("alice", &dir.path().join("alice"), &options(&tracker));
    let lab = NodeOptions {
        network_file: Some(network_file(dir.path(), &test_params("lab", 4))),
        ..options(&tracker)
    };
    let mallory = NodeProcess::start("mallory", &dir.path().join("mallory"), &lab);
    wait_for("the tracker to refuse mallory's network", PATIENCE, || {
        mallory.log().contains("this tracker serves dev (").then_some(())
    });
    wait_for("alice listed", PATIENCE, || (tracker_names(&tracker) == ["alice"]).then_some(()));
    let refused = "raclette_tracker_registrations_total{kind=\"wrong_network\"}";
    assert!(http_text(&format!("{}/metrics", tracker.api)).1.contains(refused));
    assert_eq!(tracker_names(&tracker), ["alice"], "only dev cards are kept");
    drop(alice);
}
