//! The node task: the one place where chain, mempool, miner, directory and network meet.
//!
//! It owns the chain and the mempool and handles, one at a time, requests from the REPL
//! and the API, events from the network, and the results of work it spawned (requests
//! in flight, the nonce search). Work that waits on the network runs in spawned tasks
//! that post their result back here, so this loop never blocks on a peer.

mod directory;
mod mining;
mod sync;
mod transfers;
pub mod views;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::gossipsub::MessageAcceptance;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use raclette_protocol::{
    Amount, Block, Keypair, NetworkParams, PeerName, PublicKey, Transaction, TxId, WireMessage,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Instrument, debug, error, info, warn};

use crate::chain::{Chain, ForkDepth, ImportError, Placement, TipChange};
use crate::mempool::Mempool;
use crate::metrics::{LinkLabel, NodeMetrics, SharedRegistry};
use crate::network::{
    self, Client, InboundProtocol, Link, NetworkConfig, NetworkEvent, Penalty, Protocol, Topic,
};
use crate::store::{InboxRecord, LmdbStore, Store, StoreError, StoreRead, Table};
use crate::verdict::{Outcome, Refusal, Verdict, verdict};
use directory::DirectoryBook;
use mining::MiningSession;
pub use views::*;

/// Capacity of the request channel from the REPL and the API.
pub const REQUEST_CAPACITY: usize = 256;
/// Capacity of the notice channel to the REPL (a slow reader misses old notices).
const NOTICE_CAPACITY: usize = 1024;
/// How often pending mempool changes are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A gossiped block forking deeper than this below the tip is left to sync.
const MAX_GOSSIP_FORK_DEPTH: u64 = 100;
/// The fee a `send` pays when none is given: 0.001 coin.
pub const DEFAULT_FEE: Amount = Amount::from_units(100_000);

/// How often the inbox is swept of transfers that were never mined.
const INBOX_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name in the directory.
    pub name: PeerName,
    /// Data directory: key file, store, REPL history.
    pub data_dir: PathBuf,
    /// The network.
    pub params: NetworkParams,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Trackers, each with `/p2p/<PeerId>`.
    pub trackers: Vec<Multiaddr>,
    /// Extra addresses to announce (a forwarded port).
    pub external: Vec<Multiaddr>,
    /// Mining threads.
    pub threads: usize,
    /// The least fee a transfer must pay for this node to take and relay it.
    pub min_relay_fee: Amount,
    /// Test only (`RACLETTE_TEST_IGNORE_BLOCK_GOSSIP`): blocks arriving by gossip are
    /// dropped unread, so tests can show that tip announcements alone keep a node up.
    pub ignore_block_gossip: bool,
    /// How often one random peer is asked for its status while not syncing (tests set it
    /// with `RACLETTE_TEST_STATUS_POLL_SECS`, to show announcements alone at work).
    pub status_poll: Duration,
}

/// What gossip does with a message, by its verdict.
fn acceptance(verdict: Verdict) -> MessageAcceptance {
    match verdict.outcome {
        Outcome::Accept => MessageAcceptance::Accept,
        Outcome::Ignore => MessageAcceptance::Ignore,
        Outcome::Reject => MessageAcceptance::Reject,
    }
}

/// How often one random peer is asked for its status while not syncing: the safety net
/// under tip announcements.
pub const STATUS_POLL_EVERY: Duration = Duration::from_secs(10);

/// Results of spawned work, posted back to the node task.
enum Internal {
    /// A direct send finished.
    DirectAnswer {
        txid: TxId,
        to_name: String,
        result: Result<Vec<u8>, network::RequestError>,
        reply: Option<oneshot::Sender<Result<SendView, UserError>>>,
    },
    /// A directory request finished.
    DirectoryAnswer {
        tracker: PeerId,
        request: directory::SentRequest,
        result: Result<Vec<u8>, network::RequestError>,
    },
    /// The nonce search ended (found, or stopped).
    Solved { job: u64, block: Box<Block>, solved: bool },
}

/// A running node's handles: send it requests, hear its notices.
#[derive(Clone)]
pub struct NodeHandle {
    /// Requests to the node task.
    pub requests: mpsc::Sender<Request>,
    /// Subscribe for notices.
    pub notices: broadcast::Sender<Notice>,
    /// The node's PeerId.
    pub peer_id: PeerId,
    /// Its metrics, for `GET /metrics` (refreshed by [`Request::RefreshMetrics`]).
    pub registry: SharedRegistry,
}

impl NodeHandle {
    /// Sends a request built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, UserError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| UserError::Unavailable("the node has stopped".into()))?;
        answer.await.map_err(|_| UserError::Unavailable("the node has stopped".into()))
    }
}

/// The time now, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] crate::network::identity::KeyFileError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The network.
    #[error(transparent)]
    Network(#[from] crate::network::StartError),
}

/// The node task.
pub struct Node<S: Store> {
    config: NodeConfig,
    keypair: Keypair,
    peer_id: PeerId,
    chain: Chain<S>,
    mempool: Mempool,
    client: Client,
    internal: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    notices: broadcast::Sender<Notice>,
    directory: DirectoryBook,
    connected: HashMap<PeerId, Link>,
    /// Connected peers this node dialled itself: it keeps
    /// [`OUTBOUND_TARGET`](crate::network::OUTBOUND_TARGET) of them.
    outbound: HashSet<PeerId>,
    /// The peers behind the chain's orphan sources (a number per connected peer).
    orphan_sources: HashMap<crate::chain::orphans::Source, PeerId>,
    trackers: HashMap<PeerId, bool>,
    sync: crate::sync::Sync<PeerId>,
    mining: Option<MiningSession>,
    next_job: u64,
    notified: HashSet<TxId>,
    /// Set when the node must stop on its own (its name was refused).
    exit: Option<NodeExit>,
    /// Trackers that give our name to another key.
    name_refused_by: HashSet<PeerId>,
    /// Trackers whose first full listing has not come yet.
    first_listings: HashSet<PeerId>,
    /// When the node started.
    started: std::time::Instant,
    /// When the inbox was last swept of transfers that were never mined.
    last_inbox_sweep: Option<std::time::Instant>,
    /// What `GET /metrics` shows.
    metrics: NodeMetrics,
}

/// Why the node task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeExit {
    /// Asked to (`quit`, Ctrl-D, a signal).
    Shutdown,
    /// A tracker refused the node's name.
    NameRefused(String),
}

/// Starts the node: opens the key and the store, builds the network, spawns the network
/// event loop and the node task. Returns the handle and the task to await.
pub fn start(
    config: NodeConfig,
) -> Result<(NodeHandle, tokio::task::JoinHandle<NodeExit>), StartError> {
    let keypair = crate::network::identity::load_or_create(&config.data_dir.join("node.key"))?;
    let store = LmdbStore::open(&config.data_dir.join("store"))?;
    start_with(config, keypair, store, network::Transport::Os)
}

/// Starts a node on a given key, store and transport: what [`start`] does after opening
/// the key file and LMDB. Simulations run many nodes in one process this way, each with
/// a [`MemoryStore`](crate::store::MemoryStore) on the memory transport.
pub fn start_with<S: Store>(
    config: NodeConfig,
    keypair: Keypair,
    store: S,
    transport: network::Transport,
) -> Result<(NodeHandle, tokio::task::JoinHandle<NodeExit>), StartError> {
    let peer_id = crate::network::identity::peer_id_of(&keypair.public());
    let sync = crate::sync::Sync::new(config.status_poll);
    let chain = Chain::open(store, config.params.clone(), Some(keypair.public()))?;
    let mempool = Mempool::load(chain.network(), &chain.store().reader()?)?
        .with_min_fee(config.min_relay_fee);
    let directory = DirectoryBook::load(&chain.store().reader()?, keypair.public())?;
    let notified = chain
        .store()
        .reader()?
        .values::<InboxRecord>(Table::Inbox)?
        .iter()
        .map(|r| r.transfer.txid())
        .collect();
    let mut registry = Registry::with_prefix("raclette");
    let metrics = NodeMetrics::register(&mut registry);
    let network_config = NetworkConfig {
        keypair: keypair.clone(),
        network: chain.network(),
        listen: config.listen.clone(),
        trackers: config.trackers.clone(),
        external: config.external.clone(),
        transport,
    };
    let (client, events, event_loop) = network::new(network_config, &mut registry)?;
    // Every line this node logs names it: several nodes may share one process (the
    // in-process simulation). At the error level, so that no filter hides the name.
    let span = tracing::error_span!("node", name = %config.name);
    tokio::spawn(event_loop.run().instrument(span.clone()));
    let (requests, request_rx) = mpsc::channel(REQUEST_CAPACITY);
    let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
    let (internal, internal_rx) = mpsc::channel(REQUEST_CAPACITY);
    let trackers: HashMap<PeerId, bool> =
        config.trackers.iter().filter_map(network::peer_of).map(|peer| (peer, false)).collect();
    let first_listings = trackers.keys().copied().collect();
    info!(
        network = %chain.network(),
        height = chain.tip().height(),
        tip = %chain.tip().hash(),
        mempool = mempool.len(),
        "opened the chain"
    );
    if config.ignore_block_gossip {
        warn!(
            "test switch RACLETTE_TEST_IGNORE_BLOCK_GOSSIP: blocks arriving by gossip are dropped"
        );
    }
    let node = Node {
        config,
        keypair,
        peer_id,
        chain,
        mempool,
        client,
        internal,
        internal_rx,
        notices: notices.clone(),
        directory,
        connected: HashMap::new(),
        outbound: HashSet::new(),
        orphan_sources: HashMap::new(),
        trackers,
        sync,
        mining: None,
        next_job: 0,
        notified,
        exit: None,
        name_refused_by: HashSet::new(),
        first_listings,
        started: std::time::Instant::now(),
        last_inbox_sweep: None,
        metrics,
    };
    let task = tokio::spawn(node.run(request_rx, events).instrument(span));
    Ok((NodeHandle { requests, notices, peer_id, registry: Arc::new(registry) }, task))
}

impl<S: Store> Node<S> {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut events: mpsc::Receiver<NetworkEvent>,
    ) -> NodeExit {
        self.dial_known_peers().await;
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            if let Some(exit) = self.exit.take() {
                self.shut_down();
                return exit;
            }
            tokio::select! {
                Some(request) = requests.recv() => {
                    if let Request::Shutdown(done) = request {
                        self.shut_down();
                        let _ = done.send(());
                        return NodeExit::Shutdown;
                    }
                    self.handle_request(request).await;
                }
                Some(event) = events.recv() => self.handle_network_event(event).await,
                Some(message) = self.internal_rx.recv() => self.handle_internal(message).await,
                _ = flush.tick() => self.flush(),
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    fn shut_down(&mut self) {
        if let Some(session) = &self.mining {
            session.stop();
        }
        self.flush();
        info!("node stopped");
    }

    /// A store failure: the node cannot trust its state any more.
    fn fatal(&self, error: StoreError) -> ! {
        error!(%error, "storage failed; stopping");
        eprintln!("raclette-node: storage failed: {error}");
        std::process::exit(1);
    }

    /// Publishes on a gossip topic from a spawned task: publishing waits for the network
    /// loop's answer, and this loop must never wait on the network loop, which may itself
    /// be waiting for this loop to take its events.
    fn publish(&self, topic: Topic, data: Vec<u8>, what: &'static str) {
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.publish(topic, data).await {
                warn!(%error, what, "could not publish (no peers yet?)");
            }
        });
    }

    fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    fn flush(&mut self) {
        if !self.mempool.has_unsaved() {
            return;
        }
        let result = (|| {
            let mut writer = self.chain.store().writer()?;
            self.mempool.flush(&mut writer)?;
            crate::store::WriteTables::commit(writer)
        })();
        if let Err(error) = result {
            self.fatal(error);
        }
    }

    async fn tick(&mut self) {
        self.report_mining_rate();
        self.drive_sync(crate::sync::Input::Tick).await;
        self.directory_housekeeping().await;
        if self.last_inbox_sweep.is_none_or(|at| at.elapsed() >= INBOX_SWEEP_EVERY) {
            self.last_inbox_sweep = Some(std::time::Instant::now());
            self.sweep_inbox(now_ms());
        }
    }

    /// A peer's display name: its directory name, or the start of its key.
    fn name_of(&self, key: &PublicKey) -> String {
        if *key == self.keypair.public() {
            return self.config.name.to_string();
        }
        self.directory.name_of(key).unwrap_or_else(|| key.short())
    }

    async fn handle_network_event(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Listening(address) => {
                // The line users copy to reach this node, and that scripts look for.
                println!("node address: {address}");
                self.directory.addresses_changed();
            }
            NetworkEvent::PeerConnected { peer, link, outbound } => {
                let first = self.connected.insert(peer, link).is_none();
                if outbound {
                    self.outbound.insert(peer);
                } else {
                    self.outbound.remove(&peer);
                }
                self.directory.seen(&peer, now_ms());
                self.directory.connected(&peer);
                if first {
                    self.on_peer_connected(peer).await;
                }
            }
            NetworkEvent::PeerDisconnected { peer } => {
                self.connected.remove(&peer);
                self.outbound.remove(&peer);
                self.orphan_sources.retain(|_, known| *known != peer);
                self.directory.seen(&peer, now_ms());
                self.drive_sync(crate::sync::Input::Disconnected(peer)).await;
            }
            NetworkEvent::TrackerConnected(tracker) => {
                self.trackers.insert(tracker, true);
                self.register_with(tracker).await;
            }
            NetworkEvent::TrackerDisconnected(tracker) => {
                self.trackers.insert(tracker, false);
            }
            NetworkEvent::Gossip { source, message_id, topic, data } => match topic {
                Topic::Transactions => {
                    let acceptance = self.on_gossip_transfer(source, &data).await;
                    self.client.validate(message_id, source, acceptance).await;
                }
                Topic::Blocks if self.config.ignore_block_gossip => {
                    self.client.validate(message_id, source, MessageAcceptance::Ignore).await;
                }
                Topic::Blocks => {
                    let (acceptance, change) = self.on_gossip_block(source, &data).await;
                    // Relay first: the block's verdict does not depend on our mempool.
                    self.client.validate(message_id, source, acceptance).await;
                    if let Some(change) = change {
                        self.on_tip_change(change).await;
                    }
                }
            },
            NetworkEvent::Answer { id, peer, protocol: Protocol::Sync, result } => {
                self.on_sync_answer(peer, id, result).await;
            }
            // Only sync sends requests that are answered as events.
            NetworkEvent::Answer { .. } => {}
            NetworkEvent::Request(request) if request.oversized.is_some() => {
                self.refuse_oversized(request).await
            }
            NetworkEvent::Request(request) => match request.protocol {
                InboundProtocol::Direct => self.on_direct_request(request).await,
                InboundProtocol::Sync => self.on_sync_request(request).await,
                InboundProtocol::DirectoryPush => self.on_directory_push(request).await,
            },
        }
    }

    /// A request over its protocol's size limit: say so in the protocol's own terms and
    /// count it against the sender (honest peers never send one).
    async fn refuse_oversized(&mut self, request: crate::network::InboundRequest) {
        let limit = request.oversized.unwrap_or_default();
        let reason = format!("request exceeds {limit} bytes");
        let answer = match request.protocol {
            InboundProtocol::Direct => {
                raclette_protocol::wire::DirectResponse::Rejected { reason: reason.clone() }
                    .encode()
            }
            InboundProtocol::Sync => {
                raclette_protocol::wire::SyncResponse::Refused { reason: reason.clone() }.encode()
            }
            InboundProtocol::DirectoryPush => {
                raclette_protocol::wire::DirectoryPushAck { accepted: 0 }.encode()
            }
        };
        self.client.respond(request.token, answer).await;
        self.client.penalize(request.peer, Penalty::LowTolerance, reason).await;
    }

    async fn on_peer_connected(&mut self, peer: PeerId) {
        self.drive_sync(crate::sync::Input::Connected(peer)).await;
        self.deliver_outbox_to(peer).await;
    }

    async fn handle_internal(&mut self, message: Internal) {
        match message {
            Internal::DirectAnswer { txid, to_name, result, reply } => {
                self.on_direct_answer(txid, to_name, result, reply).await;
            }
            Internal::DirectoryAnswer { tracker, request, result } => {
                self.on_directory_answer(tracker, request, result).await;
            }
            Internal::Solved { job, block, solved } => self.on_solved(job, *block, solved).await,
        }
    }

    /// Imports a gossiped block; says how gossip should treat it and how the best chain
    /// moved (for the caller to follow once the block is on its way to others).
    async fn on_gossip_block(
        &mut self,
        source: PeerId,
        data: &[u8],
    ) -> (MessageAcceptance, Option<TipChange>) {
        let started = std::time::Instant::now();
        let block = match Block::decode(data) {
            Ok(block) => block,
            Err(error) => {
                let verdict = verdict(Refusal::Malformed(&error));
                self.metrics.block("gossip", verdict.label(), "malformed");
                self.blame(source, verdict, format!("malformed block: {error}")).await;
                return (acceptance(verdict), None);
            }
        };
        let height = block.header.height;
        // A gossiped block on a branch that left the best chain long ago is not imported
        // from gossip (it would cost every node a store write and its signatures for a
        // branch nobody follows): if that branch has more work, its peer's status says so
        // and sync fetches it, headers first.
        let parent = block.header.prev;
        match self.chain.fork_depth(&parent, MAX_GOSSIP_FORK_DEPTH) {
            Ok(ForkDepth::Deeper) => {
                debug!(%source, height, "ignored a gossiped block forking too deep below the tip");
                self.metrics.block("gossip", "ignored", "deep_fork");
                return (MessageAcceptance::Ignore, None);
            }
            // An unknown (or orphan) parent makes the block an orphan: its ancestors get
            // fetched.
            Ok(ForkDepth::Unknown | ForkDepth::Within(_)) => {}
            Err(error) => self.fatal(error),
        }
        let (transfers, decoded) = (block.transactions.len().saturating_sub(1), started.elapsed());
        let orphan_source = self.orphan_source(source);
        let imported = self.chain.import_block_from(block, now_ms(), orphan_source);
        self.blame_orphans().await;
        let acceptance = match imported {
            Ok(imported) => {
                info!(
                    height,
                    transfers,
                    bytes = data.len(),
                    decode_ms = decoded.as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    placement = ?imported.placement,
                    "imported a block from gossip"
                );
                let (acceptance, reason) = match imported.placement {
                    Placement::BestChain => (MessageAcceptance::Accept, "best_chain"),
                    // Valid, but on no one's best chain: kept, not spread.
                    Placement::SideChain => (MessageAcceptance::Ignore, "side_chain"),
                    Placement::Orphan { missing } => {
                        info!(%source, height, %missing, "block with unknown parent: fetching its ancestors");
                        self.drive_sync(crate::sync::Input::Orphan(source)).await;
                        (MessageAcceptance::Ignore, "orphan")
                    }
                    Placement::AlreadyKnown => (MessageAcceptance::Ignore, "known"),
                };
                let outcome = match acceptance {
                    MessageAcceptance::Accept => "accepted",
                    _ => "ignored",
                };
                self.metrics.block("gossip", outcome, reason);
                return (acceptance, imported.tip_change);
            }
            Err(ImportError::Store(error)) => self.fatal(error),
            Err(error) => {
                warn!(%source, height, %error, "rejected a block");
                let verdict = verdict(Refusal::Import(&error));
                self.metrics.block("gossip", verdict.label(), crate::metrics::reason(&error));
                self.blame(source, verdict, format!("invalid block: {error}")).await;
                acceptance(verdict)
            }
        };
        (acceptance, None)
    }

    /// The number that stands for `peer` in the chain's orphan pool.
    fn orphan_source(&mut self, peer: PeerId) -> crate::chain::orphans::Source {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let source = hasher.hash_one(peer).max(1); // 0 is no one (LOCAL)
        self.orphan_sources.insert(source, peer);
        source
    }

    /// Orphans dropped without ever connecting cost their senders a little each: a peer
    /// that floods cheap orphans is banned before long.
    async fn blame_orphans(&mut self) {
        for source in self.chain.take_evicted_orphans() {
            if let Some(peer) = self.orphan_sources.get(&source) {
                self.client
                    .penalize(*peer, Penalty::HighTolerance, "an orphan block that never connected")
                    .await;
            }
        }
    }

    /// Counts a verdict's penalty, if any, against the sender.
    async fn blame(&self, peer: PeerId, verdict: Verdict, reason: String) {
        if let Some(penalty) = verdict.penalty {
            self.client.penalize(peer, penalty, reason).await;
        }
    }

    /// Follows a move of the best chain: mempool, inbox notices, the miner, the user.
    async fn on_tip_change(&mut self, change: TipChange) {
        {
            let reader = match self.chain.store().reader() {
                Ok(reader) => reader,
                Err(error) => self.fatal(error),
            };
            if let Err(error) = self.mempool.apply_tip_change(&change, &reader, now_ms()) {
                self.fatal(error);
            }
        }
        if change.is_reorg() {
            info!(
                disconnected = change.disconnected.len(),
                connected = change.connected.len(),
                "chain reorganised"
            );
            self.notify(Notice::Reorganized {
                disconnected: change.disconnected.len(),
                connected: change.connected.len(),
            });
        }
        let own = self.keypair.public();
        for block in &change.connected {
            let miner = block.coinbase().map(|c| c.to);
            if miner != Some(own) && !self.sync.is_downloading() {
                let name = miner.map_or_else(|| "someone".into(), |key| self.name_of(&key));
                self.notify(Notice::BlockFromPeer { miner: name, height: block.header.height });
            }
            for tx in &block.transactions {
                if let Transaction::Transfer(transfer) = tx
                    && transfer.to == own
                {
                    self.announce_received(transfer, Some(block.header.height));
                }
            }
        }
        if let Some(tip) = change.connected.last() {
            self.notify(Notice::Tip { height: tip.header.height, hash: tip.hash() });
            Box::pin(self.drive_sync(crate::sync::Input::TipChanged)).await;
        }
        self.mining_on_tip_change();
    }

    /// Tells the user about a transfer to them, once: pending (no `height`) or mined.
    fn announce_received(&mut self, transfer: &raclette_protocol::Transfer, height: Option<u64>) {
        if !self.notified.insert(transfer.txid()) {
            return;
        }
        let text = self.read_message(transfer);
        self.notify(Notice::Received {
            from: self.name_of(&transfer.from),
            amount: transfer.amount,
            text,
            height,
        });
    }

    /// The decrypted text of a transfer this node is party to.
    fn read_message(&self, transfer: &raclette_protocol::Transfer) -> String {
        match raclette_protocol::encryption::decrypt(
            &self.keypair,
            &transfer.from,
            &transfer.to,
            &transfer.message,
        ) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => "(unreadable)".into(),
        }
    }

    async fn handle_request(&mut self, request: Request) {
        match request {
            // What only the network loop knows is fetched by a spawned task (see `publish`).
            Request::Status(reply) => {
                let (mut view, client) = (self.status_view(), self.client.clone());
                tokio::spawn(async move {
                    view.reachability = client.reachability().await;
                    let _ = reply.send(view);
                });
            }
            Request::WhoAmI(reply) => {
                let (confirmed, pending) = self.balances(&self.keypair.public());
                let mut view = WhoAmIView {
                    name: self.config.name.to_string(),
                    peer_id: self.peer_id.to_string(),
                    key: self.keypair.public().to_string(),
                    addresses: Vec::new(),
                    confirmed: confirmed.to_string(),
                    pending: pending.to_string(),
                };
                let client = self.client.clone();
                tokio::spawn(async move {
                    view.addresses =
                        client.addresses().await.iter().map(ToString::to_string).collect();
                    let _ = reply.send(view);
                });
            }
            Request::Peers(reply) => {
                let _ = reply.send(self.directory.views(&self.connected, now_ms()));
            }
            Request::Send { to, amount, message, fee, reply } => {
                self.send_transfer(to, amount, message, fee.unwrap_or(DEFAULT_FEE), reply).await;
            }
            Request::Mine { blocks, reply } => self.start_mining(blocks, reply),
            Request::Balance { name, reply } => {
                let _ = reply.send(self.balance_view(name));
            }
            Request::Inbox(reply) => {
                let _ = reply.send(self.inbox_view());
            }
            Request::Mempool(reply) => {
                let _ = reply.send(self.mempool_view());
            }
            Request::Blocks { from, limit, reply } => {
                let _ = reply.send(self.blocks_view(from, limit));
            }
            Request::Block { id, reply } => {
                let _ = reply.send(self.block_view(id));
            }
            Request::StopMining(reply) => {
                let _ = reply.send(self.stop_mining());
            }
            Request::Transaction { txid, reply } => {
                let _ = reply.send(self.transaction_view(&txid));
            }
            Request::Ban { name, blocked, reply } => {
                let result = match self.directory.resolve(&name) {
                    Ok(card) => {
                        let peer = crate::network::identity::peer_id_of(&card.key);
                        self.client.block(peer, blocked).await;
                        if !blocked {
                            let addresses =
                                card.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                            self.client.dial(Some(peer), addresses).await;
                        }
                        Ok(())
                    }
                    Err(message) => Err(UserError::NotFound(message)),
                };
                let _ = reply.send(result);
            }
            Request::Shutdown(_) => unreachable!("handled by the loop"),
            Request::RefreshMetrics(reply) => {
                self.refresh_metrics();
                let _ = reply.send(());
            }
        }
    }

    /// Sets the gauges from the node's state, as a scrape reads them.
    fn refresh_metrics(&self) {
        let metrics = &self.metrics;
        let tip = self.chain.tip();
        metrics.height.set(i64::try_from(tip.height()).unwrap_or(i64::MAX));
        metrics.work.set(tip.work.to_string().parse().unwrap_or(f64::MAX));
        for link in [Link::Direct, Link::Relayed] {
            let count = self.connected.values().filter(|l| **l == link).count();
            metrics.peers.get_or_create(&LinkLabel { link: link.as_str() }).set(count as i64);
        }
        metrics.mempool_transactions.set(self.mempool.len() as i64);
        let bytes: usize = self.mempool.iter().map(|(_, r)| r.transfer.encode().len()).sum();
        metrics.mempool_bytes.set(bytes as i64);
        metrics.hash_rate.set(self.mining.as_ref().map_or(0.0, |session| session.rate));
        let store = self.config.data_dir.join("store").join("data.mdb");
        let size = std::fs::metadata(store).map_or(0, |m| m.len());
        metrics.store_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    fn status_view(&self) -> StatusView {
        let tip = self.chain.tip();
        let target = tip.header.bits.to_target().unwrap_or(raclette_protocol::Target::MAX);
        StatusView {
            name: self.config.name.to_string(),
            network: self.chain.network().to_string(),
            network_name: self.chain.params().name.clone(),
            height: tip.height(),
            tip: tip.hash().to_string(),
            work: tip.work.to_string(),
            difficulty: target.difficulty(self.chain.params().pow_limit()),
            peers: self.connected.len(),
            known_peers: self.directory.len(),
            syncing: self.sync.is_active(),
            best_known_height: self.sync.best_known_height().max(tip.height()),
            trackers: self
                .trackers
                .iter()
                .map(|(peer, connected)| TrackerView {
                    peer_id: peer.to_string(),
                    connected: *connected,
                })
                .collect(),
            mempool: self.mempool.len(),
            mining: self.mining.is_some(),
            hash_rate: self.mining.as_ref().map_or(0.0, |session| session.rate),
            outbox: self
                .chain
                .store()
                .reader()
                .and_then(|reader| reader.values::<transfers::OutboxRecord>(Table::Outbox))
                .map_or(0, |records| records.len()),
            reachability: "unknown",
        }
    }

    /// Confirmed balance, and the balance once pending transfers are mined.
    fn balances(&self, key: &PublicKey) -> (Amount, Amount) {
        let confirmed = match self.chain.account(key) {
            Ok(account) => account.balance,
            Err(error) => self.fatal(error),
        };
        let (incoming, outgoing) = self.mempool.pending_for(key);
        let pending = confirmed
            .checked_add(incoming)
            .unwrap_or(Amount::MAX)
            .checked_sub(outgoing)
            .unwrap_or(Amount::ZERO);
        (confirmed, pending)
    }

    fn balance_view(&self, name: Option<String>) -> Result<BalanceView, UserError> {
        let (name, key) = match name {
            None => (self.config.name.to_string(), self.keypair.public()),
            Some(name) if name.eq_ignore_ascii_case(self.config.name.as_str()) => {
                (name, self.keypair.public())
            }
            Some(name) => {
                let key = self.directory.resolve(&name).map_err(UserError::NotFound)?.key;
                (name, key)
            }
        };
        let (confirmed, pending) = self.balances(&key);
        Ok(BalanceView { name, confirmed: confirmed.to_string(), pending: pending.to_string() })
    }

    fn inbox_view(&self) -> Vec<InboxItem> {
        let records =
            match self.chain.store().reader().and_then(|r| r.values::<InboxRecord>(Table::Inbox)) {
                Ok(records) => records,
                Err(error) => self.fatal(error),
            };
        let mut items: Vec<InboxItem> = records
            .iter()
            .map(|record| {
                let transfer = &record.transfer;
                let txid = transfer.txid();
                InboxItem {
                    txid: txid.to_string(),
                    from: self.name_of(&transfer.from),
                    amount: transfer.amount.to_string(),
                    message: self.read_message(transfer),
                    height: self
                        .chain
                        .confirmation_height(&txid)
                        .unwrap_or_else(|error| self.fatal(error)),
                    received: record.received_ms,
                }
            })
            .collect();
        items.sort_by_key(|item| item.received);
        items
    }

    fn mempool_view(&self) -> Vec<MempoolItem> {
        let mut records: Vec<_> = self.mempool.iter().collect();
        records.sort_by_key(|(_, record)| record.received_ms);
        records
            .into_iter()
            .map(|(txid, record)| MempoolItem {
                txid: txid.to_string(),
                from: self.name_of(&record.transfer.from),
                to: self.name_of(&record.transfer.to),
                amount: record.transfer.amount.to_string(),
                fee: record.transfer.fee.to_string(),
                received: record.received_ms,
            })
            .collect()
    }

    fn miner_of(&self, block: &Block) -> String {
        block.coinbase().map_or_else(|| "?".into(), |coinbase| self.name_of(&coinbase.to))
    }

    fn blocks_view(&self, from: Option<u64>, limit: usize) -> Vec<BlockSummary> {
        let top = from.unwrap_or(self.chain.tip().height()).min(self.chain.tip().height());
        let blocks =
            self.chain.blocks_down_from(top, limit).unwrap_or_else(|error| self.fatal(error));
        blocks
            .iter()
            .map(|(entry, block)| BlockSummary {
                height: entry.height(),
                hash: entry.hash().to_string(),
                miner: self.miner_of(block),
                txs: block.transactions.len(),
                time: entry.header.time_ms,
            })
            .collect()
    }

    fn block_view(&self, id: BlockId) -> Result<BlockView, UserError> {
        let found = match id {
            BlockId::Height(height) => self.chain.block_at(height),
            BlockId::Hash(hash) => self.chain.block(&hash),
        }
        .unwrap_or_else(|error| self.fatal(error));
        let (entry, block) =
            found.ok_or_else(|| UserError::NotFound(format!("no block {}", describe(&id))))?;
        let best_chain = self
            .chain
            .block_at(entry.height())
            .ok()
            .flatten()
            .is_some_and(|(e, _)| e.hash() == entry.hash());
        let transactions = block.transactions.iter().map(|tx| self.tx_view(tx)).collect();
        Ok(BlockView {
            height: entry.height(),
            hash: entry.hash().to_string(),
            prev: entry.header.prev.to_string(),
            miner: self.miner_of(&block),
            time: entry.header.time_ms,
            bits: entry.header.bits.to_string(),
            nonce: entry.header.nonce,
            best_chain,
            received: entry.received_ms,
            transactions,
        })
    }
}

impl<S: Store> Node<S> {
    /// A transaction as the API shows it; the text only for its sender and receiver.
    fn tx_view(&self, tx: &Transaction) -> TxView {
        let own = self.keypair.public();
        match tx {
            Transaction::Coinbase(coinbase) => TxView {
                txid: tx.txid().to_string(),
                kind: "coinbase",
                from: None,
                to: self.name_of(&coinbase.to),
                amount: coinbase.amount.to_string(),
                fee: None,
                message: Some(String::from_utf8_lossy(&coinbase.memo).into_owned()),
            },
            Transaction::Transfer(transfer) => TxView {
                txid: tx.txid().to_string(),
                kind: "transfer",
                from: Some(self.name_of(&transfer.from)),
                to: self.name_of(&transfer.to),
                amount: transfer.amount.to_string(),
                fee: Some(transfer.fee.to_string()),
                message: (transfer.from == own || transfer.to == own)
                    .then(|| self.read_message(transfer)),
            },
        }
    }

    fn transaction_view(&self, txid: &TxId) -> Result<TransactionView, UserError> {
        if let Some(record) = self.mempool.get(txid) {
            let transaction = self.tx_view(&Transaction::Transfer(record.transfer.clone()));
            return Ok(TransactionView {
                txid: txid.to_string(),
                status: "pending",
                height: None,
                transaction,
            });
        }
        match self.chain.transaction(txid).unwrap_or_else(|error| self.fatal(error)) {
            Some((tx, entry)) => Ok(TransactionView {
                txid: txid.to_string(),
                status: "confirmed",
                height: Some(entry.height()),
                transaction: self.tx_view(&tx),
            }),
            None => Err(UserError::NotFound(format!(
                "no transaction {txid} pending or in the best chain"
            ))),
        }
    }
}

fn describe(id: &BlockId) -> String {
    match id {
        BlockId::Height(height) => format!("at height {height}"),
        BlockId::Hash(hash) => hash.to_string(),
    }
}
