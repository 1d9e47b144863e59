//! `just bench sim` (`N=…` nodes, 1,000 by default): the whole network in one process, to
//! study it far past what processes allow on one machine. Every node is the real node
//! (chain, mempool, directory, sync, gossip, tip announcements, peer selection and
//! limits) on libp2p's memory transport with the in-memory store, and so is the tracker;
//! they share one tokio runtime.
//!
//! Blocks are mined by different nodes in turn; for each, the time from the miner's tip
//! to every other node's (each node's own notice, on the same clock) and the number of
//! hops from the miner in the connection graph (the shortest path: a lower bound of the
//! gossip path). Written to `target/bench/sim.json`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{summary, write_json};
use raclette_integration_tests::harness::test_params;
use raclette_node::network::{OUTBOUND_TARGET, Transport};
use raclette_node::node::{self, NodeConfig, NodeHandle, Notice, Request, STATUS_POLL_EVERY};
use raclette_node::store::{LmdbStore, MemoryStore};
use raclette_protocol::{Amount, BlockHash, Keypair, PeerName};
use raclette_tracker::directory::Directory;
use raclette_tracker::server::{Connected, Tracker};

/// Blocks measured.
const ROUNDS: usize = 3;
/// Guards against a network that never converges.
const PATIENCE: Duration = Duration::from_secs(300);

fn key(i: usize) -> Keypair {
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    Keypair::from_secret_bytes(secret).expect("a valid scalar")
}

/// Waits until `check` holds, polling every 100 ms, at most [`PATIENCE`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn peers(node: &NodeHandle) -> Vec<raclette_node::node::PeerView> {
    node.ask(Request::Peers).await.expect("the node answers")
}

fn main() {
    let n: usize = std::env::var("N").ok().and_then(|n| n.parse().ok()).unwrap_or(1000).max(2);
    // `RUST_LOG=...` logs the nodes to stderr, each line naming its node.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let params = test_params("sim", 8);
        // The tracker, in this process on the memory transport.
        let tracker_key = key(usize::MAX - 1);
        let tracker_peer = raclette_node::network::identity::peer_id_of(&tracker_key.public());
        let port: u64 = rand_port();
        let tracker_address: libp2p::Multiaddr =
            format!("/memory/{port}/p2p/{tracker_peer}").parse().expect("a multiaddr");
        let store = LmdbStore::open(&dir.path().join("tracker")).expect("tracker store");
        let tracker = Tracker::new(
            &tracker_key,
            &[format!("/memory/{port}").parse().expect("a multiaddr")],
            &[],
            Arc::new(Directory::new(store)),
            Connected::default(),
            &mut Default::default(),
            (raclette_tracker::relay::config(true), Transport::Memory),
        )
        .expect("the tracker starts")
        .serving(raclette_tracker::networks::Networks::Any);
        tokio::spawn(tracker.run());

        // Tips seen, per node, with when.
        let seen: Arc<Mutex<HashMap<(usize, BlockHash), Instant>>> = Arc::default();
        eprintln!("starting {n} nodes in one process...");
        let started = Instant::now();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let config = NodeConfig {
                name: PeerName::new(&format!("n{i:04}")).expect("a valid name"),
                data_dir: dir.path().join(format!("n{i:04}")),
                params: params.clone(),
                listen: vec!["/memory/0".parse().expect("a multiaddr")],
                trackers: vec![tracker_address.clone()],
                external: Vec::new(),
                threads: 1,
                min_relay_fee: Amount::from_units(10_000),
                ignore_block_gossip: false,
                status_poll: STATUS_POLL_EVERY,
            };
            let (handle, _task) =
                node::start_with(config, key(i), MemoryStore::new(), Transport::Memory)
                    .expect("the node starts");
            let mut notices = handle.notices.subscribe();
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    match notices.recv().await {
                        Ok(Notice::Tip { hash, .. }) => {
                            seen.lock().expect("not poisoned").insert((i, hash), Instant::now());
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
            });
            nodes.push(handle);
        }
        // In the network: connected to its outbound peers' worth (or everyone, if fewer).
        let enough = OUTBOUND_TARGET.min(n - 1);
        for (i, node) in nodes.iter().enumerate() {
            let waiting = Instant::now();
            while peers(node).await.iter().filter(|peer| peer.connected).count() < enough {
                if waiting.elapsed() > PATIENCE {
                    let status = node.ask(Request::Status).await.expect("the node answers");
                    panic!(
                        "node {i} never got {enough} peers: {} connected, {} known, trackers {:?}",
                        status.peers, status.known_peers, status.trackers
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let start_seconds = started.elapsed().as_secs_f64();
        eprintln!("{n} nodes up in {start_seconds:.1} s");
        // Every node holds the whole directory: the tracker's listings and pushes reach
        // everyone, however many join at once.
        for (i, node) in nodes.iter().enumerate() {
            let waiting = Instant::now();
            loop {
                let status = node.ask(Request::Status).await.expect("the node answers");
                if status.known_peers == n - 1 {
                    break;
                }
                if waiting.elapsed() > PATIENCE {
                    let mut short = Vec::new();
                    for (j, other) in nodes.iter().enumerate() {
                        let known = other.ask(Request::Status).await.expect("answers").known_peers;
                        if known < n - 1 {
                            short.push((j, known));
                        }
                    }
                    let names: std::collections::HashSet<String> =
                        peers(node).await.into_iter().map(|peer| peer.name).collect();
                    let missing: Vec<String> = (0..n)
                        .map(|j| format!("n{j:04}"))
                        .filter(|name| !names.contains(name) && *name != format!("n{i:04}"))
                        .take(10)
                        .collect();
                    panic!(
                        "node {i} knows {} of {}; missing {missing:?}; short: {} nodes {:?}",
                        status.known_peers,
                        n - 1,
                        short.len(),
                        &short[..short.len().min(20)]
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let directory_seconds = started.elapsed().as_secs_f64();
        eprintln!("every node knows all {} others after {directory_seconds:.1} s", n - 1);

        let mut latencies = Vec::new();
        let mut hops = Vec::new();
        let mut convergence = Vec::new();
        let mut graph = None;
        for round in 0..ROUNDS {
            let miner = (round * 397) % n;
            let mined = nodes[miner]
                .ask(|reply| Request::Mine { blocks: 1, reply })
                .await
                .expect("the node answers")
                .expect("it mines");
            let hash: BlockHash = mined.mined[0].hash.parse().expect("a hash");
            until(&format!("every node on block {hash}"), async || {
                let seen = seen.lock().expect("not poisoned");
                (0..n).all(|i| seen.contains_key(&(i, hash)))
            })
            .await;
            let seen = seen.lock().expect("not poisoned").clone();
            let made = seen[&(miner, hash)];
            let mut last = 0;
            for i in (0..n).filter(|i| *i != miner) {
                let ms = seen[&(i, hash)].saturating_duration_since(made).as_millis() as u64;
                last = last.max(ms);
                latencies.push(ms);
            }
            convergence.push(last);
            if round == 0 {
                // The graph barely changes between rounds: read it once.
                graph = Some(graph_of(&nodes).await);
            }
            hops.extend(hop_counts(graph.as_ref().expect("read in round 0"), miner));
            eprintln!("block {} reached all {n} nodes in {last} ms", round + 1);
        }
        let mut connections = Vec::with_capacity(n);
        for node in &nodes {
            connections.push(peers(node).await.iter().filter(|peer| peer.connected).count());
        }
        let mean = connections.iter().sum::<usize>() as f64 / n as f64;
        let report = serde_json::json!({
            "nodes": n,
            "converged": true,
            "start_seconds": (start_seconds * 10.0).round() / 10.0,
            "convergence_ms": summary(convergence),
            "block_ms": summary(latencies),
            "block_hops": summary(hops),
            "peers": {"mean": (mean * 10.0).round() / 10.0, "max": connections.iter().max()},
            "directory_complete_seconds": (directory_seconds * 10.0).round() / 10.0,
        });
        println!("{report:#}");
        println!("target all {n} converge, each knowing every other: met");
        write_json("sim", &report);
    });
    // The nodes' tasks end with the runtime.
    drop(runtime);
}

/// The graph of connected peers, as adjacency lists by node index.
async fn graph_of(nodes: &[NodeHandle]) -> Vec<Vec<usize>> {
    let index: HashMap<String, usize> =
        nodes.iter().enumerate().map(|(i, node)| (node.peer_id.to_string(), i)).collect();
    let mut adjacent = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for peer in peers(node).await.iter().filter(|peer| peer.connected) {
            if let Some(&j) = index.get(&peer.peer_id) {
                adjacent[i].push(j);
                adjacent[j].push(i);
            }
        }
    }
    adjacent
}

/// Shortest-path hop counts from `miner` to every other node.
fn hop_counts(adjacent: &[Vec<usize>], miner: usize) -> Vec<u64> {
    let mut distance = vec![u64::MAX; adjacent.len()];
    distance[miner] = 0;
    let mut queue = VecDeque::from([miner]);
    while let Some(at) = queue.pop_front() {
        for &next in &adjacent[at] {
            if distance[next] == u64::MAX {
                distance[next] = distance[at] + 1;
                queue.push_back(next);
            }
        }
    }
    distance.into_iter().enumerate().filter(|(i, _)| *i != miner).map(|(_, d)| d).collect()
}

/// A memory-transport port unlikely to be taken.
fn rand_port() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    1_000_000 + u64::from(nanos)
}
