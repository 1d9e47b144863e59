//! Nodes on a real network of processes: racing miners, a late joiner, a partition that
//! heals, a receiver that was offline, a node killed mid-sync, and a peer that sends
//! garbage on every protocol.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, RawPeer, TrackerProcess, http_text, network_file, test_params,
    wait_for,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

/// A tracker and nodes on a test network of `2^log2_hashes` hashes a block.
struct Net {
    dir: tempfile::TempDir,
    _tracker: TrackerProcess,
    options: NodeOptions,
    params: raclette_protocol::NetworkParams,
}

impl Net {
    fn new(name: &str, log2_hashes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tracker = TrackerProcess::start(&dir.path().join("tracker"));
        let params = test_params(name, log2_hashes);
        let options = NodeOptions {
            trackers: vec![tracker.address.clone()],
            network_file: Some(network_file(dir.path(), &params)),
            ..NodeOptions::default()
        };
        Self { dir, _tracker: tracker, options, params }
    }

    fn node(&self, name: &str) -> NodeProcess {
        NodeProcess::start(name, &self.dir.path().join(name), &self.options)
    }
}

/// Waits until every node lists every other one as connected.
fn wait_connected(nodes: &[&NodeProcess]) {
    for node in nodes {
        let others: Vec<&str> =
            nodes.iter().filter(|n| n.name != node.name).map(|n| n.name.as_str()).collect();
        wait_for(&format!("{} connected to {others:?}", node.name), PATIENCE, || {
            let peers = node.peer_names();
            others
                .iter()
                .all(|o| peers.iter().any(|(name, connected)| name == o && *connected))
                .then_some(())
        });
    }
}

/// Waits until every node has the same tip and returns it.
fn wait_same_tip(nodes: &[&NodeProcess]) -> String {
    wait_for("every node on one tip", PATIENCE, || {
        let tips: Vec<String> = nodes.iter().map(|n| n.tip()).collect();
        tips.iter().all(|t| *t == tips[0]).then(|| tips[0].clone())
    })
}

fn block_hash(node: &NodeProcess, height: u64) -> String {
    node.get(&format!("block/{height}"))["hash"].as_str().unwrap().to_string()
}

fn inbox_entries(node: &NodeProcess, txid: &str) -> Vec<Value> {
    node.get("inbox").as_array().unwrap().iter().filter(|i| i["txid"] == txid).cloned().collect()
}

#[test]
fn given_two_miners_racing_for_a_height_then_one_block_wins_everywhere_and_the_loser_says_so() {
    // About 2^24 hashes a block: a second or more on one thread, so both search at once.
    let net = Net::new("race", 24);
    let (alice, bob, carol) = (net.node("alice"), net.node("bob"), net.node("carol"));
    wait_connected(&[&alice, &bob, &carol]);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| alice.mine(1));
        let b = scope.spawn(|| bob.mine(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mined = |report: &Value| report["mined"].as_array().unwrap().len();
    let lost = |report: &Value| report["lost"].as_array().unwrap().clone();
    if mined(&a) == 1 && mined(&b) == 1 {
        // Both found a block before hearing of the other's (rare): a tie that the next
        // block breaks. Carol mines on whichever she saw first.
        eprintln!("both miners found height 1; carol breaks the tie");
        carol.mine(1);
    } else {
        let (winner, loser_report) = if mined(&a) == 1 { ("alice", &b) } else { ("bob", &a) };
        let lost = lost(loser_report);
        assert_eq!(lost.len(), 1, "the loser reports the lost height: {loser_report}");
        assert_eq!(lost[0]["height"], 1);
        assert_eq!(lost[0]["winner"], winner);
    }
    wait_same_tip(&[&alice, &bob, &carol]);
    let at_one: Vec<String> = [&alice, &bob, &carol].iter().map(|n| block_hash(n, 1)).collect();
    assert!(at_one.iter().all(|h| *h == at_one[0]), "one block at height 1 everywhere: {at_one:?}");
}

#[test]
fn given_a_chain_of_hundreds_of_blocks_when_a_node_joins_late_then_it_syncs_to_the_same_tip_and_balances()
 {
    let net = Net::new("late", 8);
    let (alice, bob) = (net.node("alice"), net.node("bob"));
    wait_connected(&[&alice, &bob]);
    alice.mine(150);
    alice.send("bob", "7.5", "for the cheese");
    alice.mine(150);
    let tip = wait_same_tip(&[&alice, &bob]);
    assert_eq!(alice.height(), 300);

    let carol = net.node("carol");
    wait_for("carol to catch up", PATIENCE, || (carol.tip() == tip).then_some(()));
    for name in ["alice", "bob", "carol"] {
        assert_eq!(carol.balance(name), alice.balance(name), "{name}'s balance");
    }
    assert_eq!(carol.get("status")["syncing"], false);
}

#[test]
fn given_a_partition_when_it_heals_then_all_take_the_heavier_chain_and_abandoned_transfers_get_mined()
 {
    let net = Net::new("partition", 8);
    let (alice, bob, carol, dave) =
        (net.node("alice"), net.node("bob"), net.node("carol"), net.node("dave"));
    let everyone = [&alice, &bob, &carol, &dave];
    wait_connected(&everyone);
    alice.mine(2);
    // Carol mines on Alice's blocks (on a stale tip she could lose both heights to them
    // and have nothing to send later).
    wait_same_tip(&everyone);
    carol.mine(2);
    wait_same_tip(&everyone);

    // Cut the network in two: each side bans the other.
    let side_a = [&alice, &bob];
    let side_b = [&carol, &dave];
    for (ours, theirs) in [(&side_a, &side_b), (&side_b, &side_a)] {
        for node in ours.iter() {
            for other in theirs.iter() {
                let (status, body) = node.post("ban", json!({ "name": other.name }));
                assert_eq!(status, 200, "{body}");
            }
        }
    }
    for node in everyone {
        wait_for(&format!("{} cut off from the other side", node.name), PATIENCE, || {
            (node.get("status")["peers"] == 1).then_some(())
        });
    }

    // Side A: one block with alice's payment to bob. Side B: three blocks with carol's.
    let (a_txid, _) = alice.send("bob", "5", "side a");
    wait_for("bob to have alice's payment", PATIENCE, || {
        bob.mempool_ids().contains(&a_txid).then_some(())
    });
    alice.mine(1);
    let (b_txid, _) = carol.send("dave", "7", "side b");
    wait_for("dave to have carol's payment", PATIENCE, || {
        dave.mempool_ids().contains(&b_txid).then_some(())
    });
    carol.mine(3);
    let side_a_tip = wait_same_tip(&side_a);
    let side_b_tip = wait_same_tip(&side_b);
    assert_ne!(side_a_tip, side_b_tip);

    // Heal: everyone converges on side B's heavier chain; alice's payment is pending again.
    for node in everyone {
        for other in everyone {
            if node.name != other.name {
                node.post("unban", json!({ "name": other.name }));
            }
        }
    }
    wait_for("everyone on side B's chain", PATIENCE, || {
        everyone.iter().all(|n| n.tip() == side_b_tip).then_some(())
    });
    for node in side_a {
        wait_for(&format!("alice's payment back in {}'s mempool", node.name), PATIENCE, || {
            node.mempool_ids().contains(&a_txid).then_some(())
        });
    }
    bob.mine(1);
    let tip = wait_same_tip(&everyone);
    for node in everyone {
        assert_eq!(node.tip(), tip);
        assert_eq!(node.balance("bob"), bob.balance("bob"));
    }
    let confirmed = inbox_entries(&bob, &a_txid);
    assert_eq!(confirmed.len(), 1);
    wait_for("alice's payment confirmed in bob's inbox", PATIENCE, || {
        inbox_entries(&bob, &a_txid).first().and_then(|e| e["height"].as_u64())
    });
    assert!(
        dave.get("inbox")
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["txid"] == b_txid && e["height"].is_u64())
    );
}

#[test]
fn given_receiver_offline_when_sent_then_broadcast_mined_and_delivered_once_when_back() {
    let net = Net::new("offline", 8);
    let (alice, mut bob, carol) = (net.node("alice"), net.node("bob"), net.node("carol"));
    wait_connected(&[&alice, &bob, &carol]);
    alice.mine(1);
    wait_same_tip(&[&alice, &bob, &carol]);

    bob.stop();
    wait_for("alice to see bob gone", PATIENCE, || {
        alice.peer_names().iter().any(|(name, connected)| name == "bob" && !connected).then_some(())
    });
    let (txid, status) = alice.send("bob", "3", "while you were away");
    assert_eq!(status, "broadcast");
    assert_eq!(alice.get("status")["outbox"], 1);
    wait_for("carol to have the broadcast transfer", PATIENCE, || {
        carol.mempool_ids().contains(&txid).then_some(())
    });
    carol.mine(1);
    wait_same_tip(&[&alice, &carol]);

    bob.restart();
    wait_for("alice to deliver her outbox", PATIENCE, || {
        (alice.get("status")["outbox"] == 0).then_some(())
    });
    wait_same_tip(&[&alice, &bob, &carol]);
    let entries = wait_for("bob's inbox to show the message in its block", PATIENCE, || {
        let entries = inbox_entries(&bob, &txid);
        entries.first().is_some_and(|e| e["height"] == 2).then_some(entries)
    });
    assert_eq!(entries.len(), 1, "delivered once: {entries:?}");
    assert_eq!(entries[0]["message"], "while you were away");
}

fn mempool_and_inbox(node: &NodeProcess) -> (Vec<String>, Vec<String>) {
    let mut pool = node.mempool_ids();
    pool.sort();
    let mut inbox: Vec<String> = node
        .get("inbox")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["txid"].as_str().unwrap().to_string())
        .collect();
    inbox.sort();
    (pool, inbox)
}

#[test]
fn given_node_killed_in_the_middle_of_a_sync_then_it_restarts_intact_and_catches_up() {
    let net = Net::new("crash", 8);
    let (alice, mut dave) = (net.node("alice"), net.node("dave"));
    wait_connected(&[&alice, &dave]);
    alice.mine(3);
    let (paid, _) = alice.send("dave", "2", "before the crash");
    alice.mine(1);
    wait_same_tip(&[&alice, &dave]);
    dave.mine(1);
    let (pending, _) = dave.send("alice", "1", "pending");
    let before = mempool_and_inbox(&dave);
    assert!(before.0.contains(&pending) && before.1.contains(&paid));
    let peers_before = dave.peer_names();

    // Dave goes away; alice mines a long chain (with dave's pending transfer in it).
    dave.stop();
    alice.mine(600);
    let target = alice.height();
    dave.restart();
    let height_at_kill = wait_for("dave to be part way through", PATIENCE, || {
        let height = dave.height();
        (height > 6 && height < target).then_some(height)
    });
    dave.kill9();
    dave.restart();
    let after = dave.height();
    assert!(after >= height_at_kill, "kept what it had imported ({after} >= {height_at_kill})");
    let (pool, inbox) = mempool_and_inbox(&dave);
    assert!(inbox.contains(&paid), "inbox intact");
    let status = dave.get(&format!("tx/{pending}"))["status"].as_str().unwrap().to_string();
    // Never lost: still pending, or mined (by alice, who had it) into the chain.
    assert!(status == "pending" || status == "confirmed", "{status}");
    assert_eq!(pool.contains(&pending), status == "pending");
    let peers = dave.peer_names();
    assert_eq!(
        peers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        peers_before.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "directory intact"
    );
    wait_for("dave to catch up after the restart", PATIENCE, || {
        (dave.tip() == alice.tip()).then_some(())
    });
    assert_eq!(dave.balance("dave"), alice.balance("dave"));
    assert_eq!(dave.balance("alice"), alice.balance("alice"));
}

fn read_peer_address(node: &NodeProcess) -> String {
    node.get("whoami")["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
        .unwrap()
}

/// A misbehaving peer connected to `node`.
fn rogue(net: &Net, seed: u8, node: &NodeProcess) -> RawPeer {
    let key = raclette_protocol::Keypair::from_secret_bytes([seed; 32]).unwrap();
    let peer = RawPeer::start(key, net.params.network_id(), &[]);
    peer.dial(&read_peer_address(node));
    wait_for("the rogue peer connected", PATIENCE, || {
        peer.connected().contains(&node.peer_id).then_some(())
    });
    peer
}

/// Waits until `node` has banned `peer`, and checks a new dial is refused.
fn wait_banned(peer: &RawPeer, node: &NodeProcess) {
    wait_for("the honest node to ban the rogue peer", PATIENCE, || {
        (!peer.connected().contains(&node.peer_id)).then_some(())
    });
    // The ban holds: a new request has to dial, and the node refuses the connection.
    let status =
        raclette_protocol::wire::SyncRequest::Status(raclette_protocol::wire::ChainStatus {
            network: raclette_protocol::NetworkId::ZERO,
            height: 0,
            tip: raclette_protocol::BlockHash::ZERO,
            work: raclette_protocol::Work::ZERO,
        });
    use raclette_protocol::WireMessage as _;
    let answer =
        peer.request(&node.peer_id, raclette_node::network::Protocol::Sync, status.encode());
    assert!(answer.is_err(), "a banned peer got an answer: {answer:?}");
}

#[test]
fn given_peers_sending_garbage_on_every_protocol_then_honest_nodes_reject_them_ban_them_and_go_on()
{
    use raclette_node::network::{Protocol, Topic};
    use raclette_protocol::wire::{DirectResponse, SyncResponse};
    use raclette_protocol::{Amount, WireMessage};

    let net = Net::new("garbage", 8);
    let (alice, bob) = (net.node("alice"), net.node("bob"));
    wait_connected(&[&alice, &bob]);
    alice.mine(2);
    wait_same_tip(&[&alice, &bob]);

    // Mallory: garbage requests. Each gets a refusal with a reason before the ban.
    let mallory = rogue(&net, 0x61, &alice);
    let answer =
        mallory.request(&alice.peer_id, Protocol::Direct, b"not cbor at all".to_vec()).unwrap();
    assert!(matches!(DirectResponse::decode(&answer), Ok(DirectResponse::Rejected { .. })));
    let answer = mallory.request(&alice.peer_id, Protocol::Sync, vec![0xff; 100]).unwrap();
    assert!(matches!(SyncResponse::decode(&answer), Ok(SyncResponse::Refused { .. })));
    wait_banned(&mallory, &alice);

    // Trudy: an invalid transfer (forged amount) and an invalid block (no proof of work).
    let trudy = rogue(&net, 0x62, &alice);
    let alice_key: raclette_protocol::PublicKey =
        alice.get("whoami")["key"].as_str().unwrap().parse().unwrap();
    let message =
        raclette_protocol::encryption::encrypt(&trudy.keypair, &alice_key, [1; 16], b"spam")
            .unwrap();
    let mut forged = raclette_protocol::Transfer::sign(
        &trudy.keypair,
        net.params.network_id(),
        alice_key,
        Amount::from_units(1),
        Amount::ZERO,
        0,
        message,
    );
    forged.amount = Amount::from_units(1_000_000);
    trudy.publish(Topic::Transactions, forged.encode());
    let mut bad_block = net.params.genesis();
    bad_block.header.height = 1;
    bad_block.header.prev = net.params.genesis().hash();
    bad_block.header.nonce = 7;
    trudy.publish(Topic::Blocks, bad_block.encode());
    wait_banned(&trudy, &alice);

    // Eve: gossip that is not even CBOR, and a transfer over the size limit.
    let eve = rogue(&net, 0x63, &alice);
    eve.publish(Topic::Blocks, b"garbage".to_vec());
    eve.publish(Topic::Transactions, vec![0xa1; 3000]);
    wait_banned(&eve, &alice);
    assert!(alice.log().contains("banned a peer"), "{}", alice.log());

    // Honest work goes on, and nothing of the garbage stuck.
    assert_eq!(alice.height(), 2);
    assert!(alice.mempool_ids().is_empty() && bob.mempool_ids().is_empty());
    let (txid, status) = alice.send("bob", "1", "still here");
    assert_eq!(status, "accepted");
    alice.mine(1);
    wait_same_tip(&[&alice, &bob]);
    assert_eq!(inbox_entries(&bob, &txid).len(), 1);
}

#[test]
fn given_peers_flooding_sync_requests_then_the_excess_is_refused_and_they_are_still_served_after() {
    use raclette_node::network::Protocol;
    use raclette_protocol::WireMessage;
    use raclette_protocol::wire::{
        MAX_BLOCKS_PER_REQUEST, MAX_SYNC_REQUESTS_IN_FLIGHT, SyncRequest, SyncResponse,
    };

    let net = Net::new("flood", 8);
    let alice = net.node("alice");
    alice.mine(16);
    let hashes: Vec<raclette_protocol::BlockHash> =
        (1..=16).map(|height| block_hash(&alice, height).parse().unwrap()).collect();
    let page = SyncRequest::Blocks { hashes }.encode();

    // Rogue peers each ask for the same 16-block page 32 times at once (an honest node
    // has at most four sync requests in flight). How many arrive before the first
    // answers have gone out depends on scheduling, so up to five try.
    let mut refused_somewhere = false;
    for seed in 0x65..0x6a {
        let rogue = rogue(&net, seed, &alice);
        let answers = rogue.request_all(&alice.peer_id, Protocol::Sync, vec![page.clone(); 32]);
        let (mut served, mut refused) = (0, 0);
        for answer in answers {
            match SyncResponse::decode(&answer.unwrap()).unwrap() {
                SyncResponse::Blocks(blocks) if blocks.len() == 16 => served += 1,
                SyncResponse::Refused { reason } if reason.contains("too many sync requests") => {
                    refused += 1
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert!(served >= MAX_SYNC_REQUESTS_IN_FLIGHT, "served {served}, refused {refused}");

        // The refusals cost little: asking one page at a time, the peer is still served.
        let answer = rogue.request(&alice.peer_id, Protocol::Sync, page.clone()).unwrap();
        let one = SyncResponse::decode(&answer);
        assert!(matches!(one, Ok(SyncResponse::Blocks(ref b)) if b.len() == 16), "{one:?}");
        if refused > 0 {
            refused_somewhere = true;
            break;
        }
    }
    assert!(refused_somewhere, "32 requests at once were served in full five times");

    // Nor can one request ask for the same block many times over.
    let rogue = rogue(&net, 0x6a, &alice);
    let tip: raclette_protocol::BlockHash = alice.tip().parse().unwrap();
    let twice = SyncRequest::Blocks { hashes: vec![tip; MAX_BLOCKS_PER_REQUEST] }.encode();
    let answer =
        SyncResponse::decode(&rogue.request(&alice.peer_id, Protocol::Sync, twice).unwrap());
    assert!(matches!(answer, Ok(SyncResponse::Refused { ref reason }) if reason.contains("twice")));
}

#[test]
fn given_a_long_mining_session_when_asked_to_stop_then_it_stops_and_reports() {
    // About 2^32 hashes a block: nothing will be found before the stop.
    let net = Net::new("stop", 32);
    let alice = net.node("alice");
    std::thread::scope(|scope| {
        let session = scope.spawn(|| alice.mine(1000));
        let rate = wait_for("the miner to report its hash rate", PATIENCE, || {
            let status = alice.get("status");
            status["hash_rate"].as_f64().filter(|rate| *rate > 0.0)
        });
        assert_eq!(alice.get("status")["mining"], true, "mining at {rate} H/s");
        let (status, body) = alice.post("mine/stop", json!({}));
        assert_eq!((status, body["stopped"].as_bool()), (200, Some(true)));
        let report = session.join().unwrap();
        assert!(
            report["mined"].as_array().unwrap().is_empty()
                && report["lost"].as_array().unwrap().is_empty()
        );
    });
    assert_eq!(alice.get("status")["mining"], false);
    assert_eq!(alice.post("mine/stop", json!({})).1["stopped"], false);
}

/// A peer that announces `claimed` as its chain and answers the other sync requests with
/// `answer` (with nothing at all where that gives `None`, and on other protocols).
fn sync_peer(
    net: &Net,
    seed: u8,
    claimed: raclette_protocol::wire::ChainStatus,
    answer: impl Fn(
        raclette_protocol::wire::SyncRequest,
    ) -> Option<raclette_protocol::wire::SyncResponse>
    + Send
    + 'static,
) -> RawPeer {
    use raclette_node::network::InboundProtocol;
    use raclette_protocol::WireMessage;
    use raclette_protocol::wire::{SyncRequest, SyncResponse};

    let key = raclette_protocol::Keypair::from_secret_bytes([seed; 32]).unwrap();
    RawPeer::start_answering(key, net.params.network_id(), &[], move |protocol, bytes| {
        match (protocol, SyncRequest::decode(bytes)) {
            (InboundProtocol::Sync, Ok(SyncRequest::Status(_))) => {
                SyncResponse::Status(claimed.clone()).encode()
            }
            (InboundProtocol::Sync, Ok(request)) => {
                answer(request).map_or_else(Vec::new, |response| response.encode())
            }
            _ => Vec::new(),
        }
    })
}

/// `count` headers on genesis at `bits`, a second apart, each with its proof of work.
fn headers_on_genesis(
    net: &Net,
    bits: raclette_protocol::CompactTarget,
    count: usize,
) -> Vec<raclette_protocol::BlockHeader> {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    let mut headers = Vec::with_capacity(count);
    let mut parent = net.params.genesis().header;
    for _ in 0..count {
        let mut header = parent;
        header.height = parent.height + 1;
        header.prev = parent.hash();
        header.time_ms = parent.time_ms + 1000;
        header.bits = bits;
        parent =
            raclette_node::miner::solve(&header, 1, &AtomicBool::new(false), &AtomicU64::new(0))
                .unwrap();
        headers.push(parent);
    }
    headers
}

/// The work of genesis and `headers` after it.
fn work_after_genesis(
    net: &Net,
    headers: &[raclette_protocol::BlockHeader],
) -> raclette_protocol::Work {
    let work_of = |bits: raclette_protocol::CompactTarget| bits.to_target().unwrap().work();
    headers.iter().fold(work_of(net.params.genesis().header.bits), |work, h| work + work_of(h.bits))
}

#[test]
fn given_a_peer_announcing_more_work_than_its_headers_carry_then_no_blocks_are_fetched() {
    use raclette_protocol::Work;
    use raclette_protocol::wire::{ChainStatus, SyncRequest, SyncResponse};

    let net = Net::new("liar", 8);
    let alice = net.node("alice");
    alice.mine(2);

    // Mallory has one real block on genesis (less work than Alice's two) and claims a
    // chain of a thousand.
    let headers = headers_on_genesis(&net, net.params.genesis().header.bits, 1);
    let one_block_work = headers[0].bits.to_target().unwrap().work();
    let claimed = ChainStatus {
        network: net.params.network_id(),
        height: 1000,
        tip: headers[0].hash(),
        work: (0..1000).fold(Work::ZERO, |work, _| work + one_block_work),
    };
    let mallory = sync_peer(&net, 0x64, claimed, move |request| match request {
        SyncRequest::Headers { .. } => Some(SyncResponse::Headers(headers.clone())),
        _ => None,
    });
    mallory.dial(&read_peer_address(&alice));

    wait_for("Alice to see through the claim", PATIENCE, || {
        alice.log().contains("its headers do not lead to the work it announced").then_some(())
    });
    assert!(!alice.log().contains("catching up"), "{}", alice.log());
    assert_eq!(alice.height(), 2);
}

#[test]
fn given_headers_with_a_harder_target_than_the_rules_give_then_they_are_refused() {
    use raclette_protocol::Target;
    use raclette_protocol::wire::{ChainStatus, SyncRequest, SyncResponse};

    let net = Net::new("harder", 8);
    let alice = net.node("alice");
    alice.mine(2);

    // Mallory's three headers each carry twice the work the rules allow (and have it: a
    // harder target, really met), so together they beat Alice's two blocks.
    let headers = headers_on_genesis(&net, Target::from_expected_hashes_log2(9).to_compact(), 3);
    let claimed = ChainStatus {
        network: net.params.network_id(),
        height: 3,
        tip: headers[2].hash(),
        work: work_after_genesis(&net, &headers),
    };
    let mallory = sync_peer(&net, 0x67, claimed, move |request| match request {
        SyncRequest::Headers { .. } => Some(SyncResponse::Headers(headers.clone())),
        _ => None,
    });
    mallory.dial(&read_peer_address(&alice));

    wait_for("Alice to refuse the headers", PATIENCE, || {
        alice.log().contains("invalid headers").then_some(())
    });
    assert!(alice.log().contains("is not the required"), "{}", alice.log());
    assert!(!alice.log().contains("catching up"), "{}", alice.log());
    assert_eq!(alice.height(), 2);
}

#[test]
fn given_a_helper_sending_forged_block_bodies_then_it_is_blamed_and_the_download_goes_on() {
    use raclette_node::network::Protocol;
    use raclette_protocol::wire::{ChainStatus, SyncRequest, SyncResponse};
    use raclette_protocol::{Block, BlockHash, Transaction, WireMessage};
    use std::collections::HashMap;

    let net = Net::new("forged", 8);
    // Bob mines forty blocks on his own (three pages of blocks to download).
    let bob_alone = NodeOptions { trackers: Vec::new(), ..net.options.clone() };
    let bob_dir = net.dir.path().join("bob");
    let mut bob = NodeProcess::start("bob", &bob_dir, &bob_alone);
    bob.mine(40);

    // Mallory copies Bob's chain, then changes every block body (the coinbase memo):
    // the headers, hashes and work stay Bob's.
    let key = raclette_protocol::Keypair::from_secret_bytes([0x68; 32]).unwrap();
    let copier = RawPeer::start(key, net.params.network_id(), &[]);
    copier.dial(&read_peer_address(&bob));
    let hashes: Vec<BlockHash> =
        (1..=40).map(|height| block_hash(&bob, height).parse().unwrap()).collect();
    let mut blocks: Vec<Block> = Vec::new();
    for page in hashes.chunks(16) {
        let request = SyncRequest::Blocks { hashes: page.to_vec() }.encode();
        let answer = copier.request(&bob.peer_id, Protocol::Sync, request).unwrap();
        let Ok(SyncResponse::Blocks(page)) = SyncResponse::decode(&answer) else { panic!() };
        blocks.extend(page);
    }
    drop(copier);
    bob.stop();
    let headers: Vec<_> = blocks.iter().map(|block| block.header).collect();
    let claimed = ChainStatus {
        network: net.params.network_id(),
        height: 40,
        tip: *hashes.last().unwrap(),
        work: work_after_genesis(&net, &headers),
    };
    let forged: HashMap<BlockHash, Block> = blocks
        .into_iter()
        .map(|mut block| {
            if let Some(Transaction::Coinbase(coinbase)) = block.transactions.first_mut() {
                coinbase.memo = b"not what the header commits to".to_vec();
            }
            (block.hash(), block)
        })
        .collect();
    // She gives no headers (so she is never the one Alice catches up from), only bodies.
    let mallory = sync_peer(&net, 0x68, claimed, move |request| match request {
        SyncRequest::Blocks { hashes } => Some(SyncResponse::Blocks(
            hashes.iter().filter_map(|hash| forged.get(hash).cloned()).collect(),
        )),
        _ => Some(SyncResponse::Refused { reason: "not today".into() }),
    });

    // Alice meets both and catches up from Bob, with Mallory helping: her pages are
    // refused on arrival and asked of Bob, in the same download.
    let alice = net.node("alice");
    mallory.dial(&read_peer_address(&alice));
    let bob = NodeProcess::start("bob", &bob_dir, &net.options);
    wait_for("Alice to catch up from Bob", PATIENCE, || (alice.tip() == bob.tip()).then_some(()));
    let log = alice.log();
    assert!(log.contains("a block body that is not its header's"), "{log}");
    let downloads_from_bob =
        log.lines().filter(|l| l.contains("catching up") && l.contains(&bob.peer_id)).count();
    assert_eq!(downloads_from_bob, 1, "one download: {log}");
    assert!(!log.contains("invalid block while catching up"), "{log}");
}

#[test]
fn given_a_peer_claiming_more_work_that_answers_with_nothing_then_the_node_syncs_from_others() {
    use raclette_protocol::wire::{ChainStatus, SyncRequest, SyncResponse};
    use raclette_protocol::{BlockHash, Work};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let net = Net::new("stall", 8);
    // Bob mines on his own first, so that Alice can only get his blocks by syncing.
    let bob_alone = NodeOptions { trackers: Vec::new(), ..net.options.clone() };
    let bob_dir = net.dir.path().join("bob");
    let mut bob = NodeProcess::start("bob", &bob_dir, &bob_alone);
    bob.mine(5);
    bob.stop();
    let alice = net.node("alice");

    // Mallory claims the most work of all, and answers every headers request slowly,
    // with none: before the fix the node asked her again each second, so it was always
    // "catching up", never from Bob, and never mined.
    let one_block_work = net.params.pow_limit().work();
    let claimed = ChainStatus {
        network: net.params.network_id(),
        height: 1000,
        tip: BlockHash::from_bytes([9; 32]),
        work: (0..1000).fold(Work::ZERO, |work, _| work + one_block_work),
    };
    let asked = Arc::new(AtomicBool::new(false));
    let asked_in_answer = asked.clone();
    let mallory = sync_peer(&net, 0x66, claimed, move |request| match request {
        SyncRequest::Headers { .. } => {
            asked_in_answer.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(4));
            Some(SyncResponse::Headers(Vec::new()))
        }
        _ => None,
    });
    mallory.dial(&read_peer_address(&alice));
    wait_for("Alice to ask Mallory for headers", PATIENCE, || {
        asked.load(Ordering::SeqCst).then_some(())
    });

    // Bob comes back, with the tracker, while Alice is busy with Mallory.
    let bob = NodeProcess::start("bob", &bob_dir, &net.options);
    wait_for("Alice to catch up from Bob", PATIENCE, || (alice.tip() == bob.tip()).then_some(()));
    assert!(alice.log().contains("announced more work than ours but sent no headers"));
    assert_eq!(alice.height(), 5);
    assert_eq!(alice.mine(1)["mined"].as_array().unwrap().len(), 1, "mining is not held up");
}

#[test]
fn given_a_gossiped_block_forking_far_below_the_tip_then_it_is_not_stored() {
    use raclette_node::chain::NextBlock;
    use raclette_node::network::Topic;
    use raclette_protocol::{BlockHash, WireMessage};

    let net = Net::new("deepfork", 8);
    let alice = net.node("alice");
    alice.mine(102);
    let mallory = rogue(&net, 0x65, &alice);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let block_on = |parent: BlockHash, height: u64| {
        let next = NextBlock {
            parent,
            height,
            bits: net.params.initial_bits,
            median_time_ms: 0,
            window_floor_ms: 0,
        };
        let block = raclette_node::miner::assemble_block(
            &net.params,
            &next,
            mallory.keypair.public(),
            Vec::new(),
            now_ms,
            b"",
        );
        let header = raclette_node::miner::solve(
            &block.header,
            1,
            &std::sync::atomic::AtomicBool::new(false),
            &std::sync::atomic::AtomicU64::new(0),
        )
        .unwrap();
        raclette_protocol::Block { header, ..block }
    };
    // A valid block 102 below the tip, then a valid one a block below it: both side
    // branches, the first too deep to take from gossip.
    let deep = block_on(net.params.genesis().hash(), 1);
    let parent: BlockHash = alice.get("block/101")["hash"].as_str().unwrap().parse().unwrap();
    let shallow = block_on(parent, 102);
    mallory.publish(Topic::Blocks, deep.encode());
    mallory.publish(Topic::Blocks, shallow.encode());

    let block_status = |hash: BlockHash| alice.try_get(&format!("block/{hash}")).0;
    wait_for("Alice to store the shallow side block", PATIENCE, || {
        (block_status(shallow.hash()) == 200).then_some(())
    });
    assert_eq!(block_status(deep.hash()), 404, "the deep fork was stored");
    assert_eq!(alice.height(), 102);
    assert!(mallory.connected().contains(&alice.peer_id), "a valid block is no offence");
}

#[test]
fn given_a_free_message_then_it_is_neither_taken_nor_relayed_and_the_sender_is_not_banned() {
    use raclette_node::network::Topic;
    use raclette_protocol::{Amount, WireMessage as _};

    let net = Net::new("fees", 12);
    let (alice, bob) = (net.node("alice"), net.node("bob"));
    wait_connected(&[&alice, &bob]);

    // A valid transfer of 0 with a fee of 0 needs no balance: without a minimum fee,
    // anyone could fill every mempool and inbox for nothing.
    let spammer = rogue(&net, 0x64, &alice);
    let bob_key: raclette_protocol::PublicKey =
        bob.get("whoami")["key"].as_str().unwrap().parse().unwrap();
    let message =
        raclette_protocol::encryption::encrypt(&spammer.keypair, &bob_key, [2; 16], b"free")
            .unwrap();
    let free = raclette_protocol::Transfer::sign(
        &spammer.keypair,
        net.params.network_id(),
        bob_key,
        Amount::ZERO,
        Amount::ZERO,
        0,
        message,
    );
    spammer.publish(Topic::Transactions, free.encode());
    // Alice judged it (her metrics count the verdict) ...
    let verdict =
        "raclette_transfers_total{source=\"gossip\",outcome=\"ignored\",reason=\"FeeTooLow\"} 1";
    wait_for("alice to judge the free transfer", PATIENCE, || {
        http_text(&format!("{}/metrics", alice.api)).1.contains(verdict).then_some(())
    });
    // ... and a paid transfer of hers still reaches bob's mempool.
    alice.mine(1);
    let (txid, _) = alice.send("bob", "1", "paid");
    wait_for("bob to get alice's transfer", PATIENCE, || {
        bob.mempool_ids().contains(&txid).then_some(())
    });
    let free_id = free.txid().to_string();
    assert!(!alice.mempool_ids().contains(&free_id), "alice took the free transfer");
    assert!(!bob.mempool_ids().contains(&free_id), "the free transfer was relayed to bob");
    assert!(inbox_entries(&bob, &free_id).is_empty(), "no inbox row for it");
    assert!(spammer.connected().contains(&alice.peer_id), "policy, not an offence");

    // The REPL's and the API's own sends say why.
    let (status, body) = alice.post(
        "send",
        serde_json::json!({ "to": "bob", "amount": "0", "message": "free", "fee": "0" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("minimum relay fee"), "{body}");
}

#[test]
fn given_a_node_that_misses_every_block_gossip_then_tip_announcements_alone_bring_it_to_the_tip() {
    let net = Net::new("deaf", 8);
    // Nobody polls a peer's status during the test: announcements alone.
    let no_poll = ("RACLETTE_TEST_STATUS_POLL_SECS".to_string(), "3600".to_string());
    let quiet = NodeOptions { env: vec![no_poll.clone()], ..net.options.clone() };
    let alice = NodeProcess::start("alice", &net.dir.path().join("alice"), &quiet);
    let bob = NodeProcess::start("bob", &net.dir.path().join("bob"), &quiet);
    let deaf = NodeOptions {
        env: vec![no_poll, ("RACLETTE_TEST_IGNORE_BLOCK_GOSSIP".into(), "1".into())],
        ..net.options.clone()
    };
    let carol = NodeProcess::start("carol", &net.dir.path().join("carol"), &deaf);
    wait_connected(&[&alice, &bob, &carol]);
    for round in 1..=3 {
        let started = std::time::Instant::now();
        alice.mine(1);
        let tip = alice.tip();
        wait_for(&format!("carol at height {round}"), PATIENCE, || {
            (carol.tip() == tip).then_some(())
        });
        eprintln!(
            "carol reached height {round} in {} ms without block gossip",
            started.elapsed().as_millis()
        );
    }
    assert!(
        carol.log().contains("blocks arriving by gossip are dropped"),
        "the switch is on: {}",
        carol.log()
    );
}
