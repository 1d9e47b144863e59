//! `just bench tracker`: a tracker holding a directory of 10,000 cards, against the same
//! work done without it in the same run: its memory against a tracker with an empty
//! directory; fetching the whole directory over the network in pages against reading it
//! straight from LMDB; looking up one name over the network against a local lookup.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raclette_integration_tests::bench::Report;
use raclette_integration_tests::harness::{RawPeer, binaries, wait_for};
use raclette_node::network::Protocol;
use raclette_node::store::LmdbStore;
use raclette_protocol::wire::{DirectoryRequest, DirectoryResponse, MAX_CARDS_PER_PAGE};
use raclette_protocol::{Keypair, NetworkId, NetworkParams, PeerCard, PeerName, WireMessage};
use raclette_tracker::directory::{Directory, Registered};

/// Cards in the large directory.
const CARDS: u32 = 10_000;
/// Full-directory fetches per side; the fastest of each is kept.
const FETCH_ROUNDS: usize = 5;
/// Lookups per side; the median is kept.
const LOOKUPS: usize = 501;
const PATIENCE: Duration = Duration::from_secs(60);

/// The `i`-th bench key: a valid secret scalar for every `i` (far below the group order).
fn bench_key(i: u32) -> Keypair {
    let mut secret = [0u8; 32];
    secret[0] = 0x01;
    secret[28..].copy_from_slice(&i.to_be_bytes());
    Keypair::from_secret_bytes(secret).expect("a valid scalar")
}

fn bench_name(i: u32) -> PeerName {
    PeerName::new(&format!("peer{i:05}")).expect("a valid name")
}

/// Fills `directory` with `CARDS` cards, each registered by its own key, as the tracker
/// would have stored them.
fn prefill(directory: &Directory<LmdbStore>, network: NetworkId) {
    for i in 0..CARDS {
        let key = bench_key(i);
        let peer = raclette_node::network::identity::peer_id_of(&key.public());
        let card = PeerCard::sign(
            &key,
            network,
            bench_name(i),
            vec![
                format!("/ip4/10.{}.{}.{}/tcp/7001/p2p/{peer}", i >> 16, (i >> 8) & 0xff, i & 0xff),
                format!("/ip4/127.0.0.1/tcp/7001/p2p/{peer}"),
            ],
            1,
        );
        let outcome = directory.register(&key.public(), &card, 1).expect("the store writes");
        assert_eq!(outcome, Ok(Registered::New), "card {i}");
    }
}

/// A tracker process spawned here, so that its pid is known for `/proc`.
struct Tracker {
    child: Child,
    address: String,
}

impl Tracker {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(&binaries().tracker)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tracker starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("tracker address: ").map(str::to_string))
            .expect("the tracker prints its address");
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, address }
    }

    fn peer_id(&self) -> String {
        self.address.rsplit("/p2p/").next().expect("a /p2p/ address").to_string()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> f64 {
        raclette_integration_tests::harness::rss_mib(self.child.id()) * 1024.0
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw peer connected to `tracker`.
fn client_of(tracker: &Tracker, network: NetworkId, seed: u8) -> RawPeer {
    let peer = RawPeer::start(
        Keypair::from_secret_bytes([seed; 32]).expect("a valid scalar"),
        network,
        &[],
    );
    peer.dial(&tracker.address);
    let tracker_id = tracker.peer_id();
    wait_for("the bench peer to connect to the tracker", PATIENCE, || {
        peer.connected().contains(&tracker_id).then_some(())
    });
    peer
}

fn ask(peer: &RawPeer, tracker: &Tracker, request: &DirectoryRequest) -> DirectoryResponse {
    let answer = peer
        .request(&tracker.peer_id(), Protocol::Directory, request.encode())
        .expect("the tracker answers");
    DirectoryResponse::decode(&answer).expect("a well-formed answer")
}

/// Every card of `network`, page by page over the network, as a node does.
fn fetch_over_network(peer: &RawPeer, tracker: &Tracker, network: NetworkId) -> usize {
    let (mut count, mut after) = (0, None);
    loop {
        let request = DirectoryRequest::List { network, after, limit: MAX_CARDS_PER_PAGE as u32 };
        match ask(peer, tracker, &request) {
            DirectoryResponse::Cards { cards, more } => {
                count += cards.len();
                after = cards.last().map(|card| card.name.key());
                if !more {
                    return count;
                }
            }
            other => panic!("a page of cards, not {other:?}"),
        }
    }
}

/// Every card of `network`, page by page straight from LMDB.
fn read_locally(directory: &Directory<LmdbStore>, network: NetworkId) -> usize {
    let (mut count, mut after) = (0, None::<String>);
    loop {
        let (cards, more) = directory
            .list(&network, after.as_deref(), MAX_CARDS_PER_PAGE)
            .expect("the store reads");
        count += cards.len();
        after = cards.last().map(|card| card.name.key());
        if !more {
            return count;
        }
    }
}

fn seconds(work: impl FnOnce() -> usize, expected: usize) -> f64 {
    let start = Instant::now();
    let count = work();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(count, expected, "every card, once");
    elapsed
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let network = NetworkParams::dev().network_id();
    let root = tempfile::tempdir().expect("a temporary directory");
    let (full_data, empty_data) = (root.path().join("full"), root.path().join("empty"));

    let directory =
        Directory::new(LmdbStore::open(&full_data.join("directory")).expect("the store opens"));
    let start = Instant::now();
    prefill(&directory, network);
    eprintln!("prefilled {CARDS} cards in {:.1} s", start.elapsed().as_secs_f64());

    let empty = Tracker::start(&empty_data);
    let full = Tracker::start(&full_data);
    let empty_peer = client_of(&empty, network, 0x31);
    let full_peer = client_of(&full, network, 0x32);

    // Fetch the whole directory, alternating with the local read; keep the best of each.
    let expected = CARDS as usize;
    assert_eq!(fetch_over_network(&empty_peer, &empty, network), 0);
    let (mut remote, mut local) = (f64::MAX, f64::MAX);
    for _ in 0..FETCH_ROUNDS {
        remote = remote.min(seconds(|| fetch_over_network(&full_peer, &full, network), expected));
        local = local.min(seconds(|| read_locally(&directory, network), expected));
    }

    // Memory once both trackers have served their whole directory.
    let (full_rss, empty_rss) = (full.rss_kib(), empty.rss_kib());

    // One name, over the network and locally.
    let (mut remote_lookups, mut local_lookups) = (Vec::new(), Vec::new());
    for round in 0..LOOKUPS {
        let name = bench_name((round as u32 * 7919) % CARDS);
        let request = DirectoryRequest::Lookup { network, name: name.clone() };
        let start = Instant::now();
        let answer = ask(&full_peer, &full, &request);
        remote_lookups.push(start.elapsed().as_secs_f64());
        assert!(matches!(answer, DirectoryResponse::Cards { ref cards, .. } if cards.len() == 1));
        let start = Instant::now();
        let card = directory.lookup(&network, &name).expect("the store reads");
        local_lookups.push(start.elapsed().as_secs_f64());
        assert!(card.is_some());
    }

    println!("bound = a tracker with an empty directory, started in the same run");
    Report {
        name: "tracker_memory_10000_cards".into(),
        value: full_rss / 1024.0,
        unit: "MiB".into(),
        bound: empty_rss / 1024.0,
        target: None,
    }
    .publish();
    println!("bound = reading the same {CARDS} cards in the same pages straight from LMDB");
    Report {
        name: "tracker_list_10000_cards".into(),
        value: remote * 1e3,
        unit: "ms".into(),
        bound: local * 1e3,
        target: None,
    }
    .publish();
    println!("bound = the same lookup straight from LMDB (median of {LOOKUPS})");
    Report {
        name: "tracker_lookup".into(),
        value: median(remote_lookups) * 1e6,
        unit: "us".into(),
        bound: median(local_lookups) * 1e6,
        target: None,
    }
    .publish();
}
