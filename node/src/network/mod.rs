//! The node on the libp2p network.
//!
//! [`new`] hands back three parts, as in rust-libp2p's file-sharing example: a cloneable
//! [`Client`] (a bounded command sender), a receiver of [`NetworkEvent`]s, and the
//! [`EventLoop`], which alone owns the swarm. The rest of the node never touches libp2p
//! types beyond `PeerId`, `Multiaddr` and gossip message ids; what the bytes mean is
//! decided outside, so this module knows nothing of blocks or accounts.

mod behaviour;
pub mod codec;
pub mod identity;
pub mod limits;
pub mod peers;
mod serving;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, ping, rendezvous};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raclette_protocol::{Keypair, NetworkId, wire};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::metrics::Kind;
pub use behaviour::memory_transport;
use behaviour::{Behaviour, BehaviourEvent};
use codec::Frame;
pub use limits::{MAX_CONNECTIONS, OUTBOUND_TARGET};
use peers::PeerScores;
pub use peers::Penalty;
use serving::Serving;

/// Capacity of the command and event channels.
const CHANNEL_CAPACITY: usize = 4096;
/// Rendezvous registration lifetime asked of trackers: a departed node disappears
/// from rendezvous within this.
pub const RENDEZVOUS_TTL_SECS: u64 = 300;
/// How often to ask trackers' rendezvous servers for peers.
const DISCOVER_EVERY: Duration = Duration::from_secs(30);
/// The most registrations one discovery returns (each one's signature is checked): the
/// directory is where a node learns of its peers; rendezvous only adds addresses.
const DISCOVER_LIMIT: u64 = 64;
/// How long a banned peer's connections stay open for its last answers.
const DISCONNECT_GRACE: Duration = Duration::from_millis(300);
/// How often to try reaching a tracker we are not connected to.
const TRACKER_REDIAL_EVERY: Duration = Duration::from_secs(2);

/// Where a node is and how it reaches the world.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The node's key (its PeerId and wallet).
    pub keypair: Keypair,
    /// The network it belongs to.
    pub network: NetworkId,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Trackers, each with `/p2p/<PeerId>`.
    pub trackers: Vec<Multiaddr>,
    /// Addresses others can reach this node at that it cannot discover itself (a
    /// forwarded port).
    pub external: Vec<Multiaddr>,
    /// How it reaches others.
    pub transport: Transport,
}

/// How a node's swarm reaches others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// TCP and QUIC, with DNS: the real thing.
    #[default]
    Os,
    /// libp2p's in-process memory transport (`/memory/N` addresses): many nodes in one
    /// process, for simulations.
    Memory,
}

/// The request-response protocols a node starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A transfer sent to its receiver.
    Direct,
    /// Chain sync.
    Sync,
    /// The tracker's directory.
    Directory,
}

impl Protocol {
    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Direct => "direct",
            Protocol::Sync => "sync",
            Protocol::Directory => "directory",
        }
    }
}

/// The request-response protocols a node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboundProtocol {
    /// A transfer for this node.
    Direct,
    /// Chain sync.
    Sync,
    /// A tracker pushing directory cards.
    DirectoryPush,
}

/// The gossip topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Transfers.
    Transactions,
    /// Blocks.
    Blocks,
}

/// How a peer is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A direct connection (possibly after hole punching).
    Direct,
    /// Only through a relay.
    Relayed,
}

impl Link {
    /// `direct` or `relayed`, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Direct => "direct",
            Link::Relayed => "relayed",
        }
    }
}

/// An inbound request waiting for the node's answer.
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked.
    pub peer: PeerId,
    /// On which protocol.
    pub protocol: InboundProtocol,
    /// The request bytes (at most the protocol's limit; not yet decoded). Empty when
    /// `oversized` is set.
    pub bytes: Vec<u8>,
    /// The request was over the protocol's limit and was not read: refuse it and count
    /// it against the peer.
    pub oversized: Option<usize>,
    /// How many of this peer's requests on this protocol are being answered now, this
    /// one included (counted until each answer has gone out): the node refuses a peer
    /// that asks for more at once than its protocol allows.
    pub in_flight: usize,
    /// Pass to [`Client::respond`].
    pub token: ResponseToken,
}

/// Identifies an inbound request to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseToken(u64);

/// What the network tells the node.
#[derive(Debug)]
pub enum NetworkEvent {
    /// Listening on a new address (with `/p2p/<PeerId>`).
    Listening(Multiaddr),
    /// A peer (not a tracker) connected.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Direct or relayed.
        link: Link,
        /// Whether this node dialled the link it keeps (an outbound peer).
        outbound: bool,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Connected to a tracker.
    TrackerConnected(PeerId),
    /// Lost the last connection to a tracker.
    TrackerDisconnected(PeerId),
    /// A gossip message waiting for validation ([`Client::validate`]).
    Gossip {
        /// The peer that forwarded it (the one to penalise).
        source: PeerId,
        /// Its id.
        message_id: MessageId,
        /// Its topic.
        topic: Topic,
        /// The payload.
        data: Vec<u8>,
    },
    /// A request to answer.
    Request(InboundRequest),
    /// The answer to a request sent with [`Client::send_request`] (or why none came).
    Answer {
        /// The id it was sent with.
        id: u64,
        /// The peer asked.
        peer: PeerId,
        /// Its protocol.
        protocol: Protocol,
        /// The answer's bytes.
        result: Result<Vec<u8>, RequestError>,
    },
}

/// Why an outbound request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The peer could not be reached.
    #[error("could not reach the peer: {0}")]
    Unreachable(String),
    /// The peer did not answer in time.
    #[error("the peer did not answer in time")]
    Timeout,
    /// The connection or stream failed.
    #[error("the request failed: {0}")]
    Failed(String),
    /// The network task has stopped.
    #[error("the network is shut down")]
    Shutdown,
}

enum Command {
    Dial { peer: Option<PeerId>, addresses: Vec<Multiaddr> },
    Request { peer: PeerId, protocol: Protocol, bytes: Vec<u8>, reply: Reply },
    Respond { token: ResponseToken, bytes: Vec<u8> },
    Publish { topic: Topic, data: Vec<u8>, reply: oneshot::Sender<Result<(), String>> },
    Validate { message_id: MessageId, source: PeerId, acceptance: MessageAcceptance },
    Penalize { peer: PeerId, penalty: Penalty, reason: String },
    Connections { reply: oneshot::Sender<Vec<(PeerId, Link)>> },
    Addresses { reply: oneshot::Sender<Vec<Multiaddr>> },
    Reachability { reply: oneshot::Sender<&'static str> },
    Disconnect { peer: PeerId },
    SetBlocked { peer: PeerId, blocked: bool },
}

/// The handle the rest of the node uses to act on the network.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    answer_bytes: serving::AnswerBytes,
}

impl Client {
    /// Queues a command without waiting: the node task must never block on the network
    /// loop, which may itself be waiting for the node task to take its events. When the
    /// queue is full, a task delivers the command as soon as there is room.
    async fn send(&self, command: Command) {
        match self.commands.try_send(command) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let commands = self.commands.clone();
                tokio::spawn(async move {
                    let _ = commands.send(command).await;
                });
            }
        }
    }

    /// Dials addresses (of `peer`, if known).
    pub async fn dial(&self, peer: Option<PeerId>, addresses: Vec<Multiaddr>) {
        self.send(Command::Dial { peer, addresses }).await;
    }

    /// Sends a request and waits for the answer.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Request { peer, protocol, bytes, reply: Reply::Wait(reply) }).await;
        answer.await.unwrap_or(Err(RequestError::Shutdown))
    }

    /// The bytes of answers to peers' requests handed over and not yet sent.
    pub fn answer_bytes(&self) -> usize {
        self.answer_bytes.get()
    }

    /// Sends a request without waiting: its answer comes back as
    /// [`NetworkEvent::Answer`] with `id`.
    pub async fn send_request(&self, peer: PeerId, protocol: Protocol, bytes: Vec<u8>, id: u64) {
        self.send(Command::Request { peer, protocol, bytes, reply: Reply::Event(id) }).await;
    }

    /// Answers an inbound request.
    pub async fn respond(&self, token: ResponseToken, bytes: Vec<u8>) {
        self.send(Command::Respond { token, bytes }).await;
    }

    /// Publishes on a gossip topic.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish { topic, data, reply }).await;
        answer.await.unwrap_or_else(|_| Err("the network is shut down".into()))
    }

    /// Reports the validation result of a gossip message: accepted messages are relayed,
    /// rejected ones count against the sender's gossip score.
    pub async fn validate(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.send(Command::Validate { message_id, source, acceptance }).await;
    }

    /// Counts a fault against a peer; enough of them get it banned.
    pub async fn penalize(&self, peer: PeerId, penalty: Penalty, reason: impl Into<String>) {
        self.send(Command::Penalize { peer, penalty, reason: reason.into() }).await;
    }

    /// Refuses (or again accepts) every connection with a peer, closing current ones.
    pub async fn block(&self, peer: PeerId, blocked: bool) {
        self.send(Command::SetBlocked { peer, blocked }).await;
    }

    /// Closes every connection to a peer.
    pub async fn disconnect(&self, peer: PeerId) {
        self.send(Command::Disconnect { peer }).await;
    }

    /// The peers connected now, with how.
    pub async fn connections(&self) -> Vec<(PeerId, Link)> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Connections { reply }).await;
        answer.await.unwrap_or_default()
    }

    /// What AutoNAT found: `public`, `private` (behind a NAT: reachable through relays)
    /// or `unknown`.
    pub async fn reachability(&self) -> &'static str {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Reachability { reply }).await;
        answer.await.unwrap_or("unknown")
    }

    /// The addresses this node can be reached at (listen and external), with
    /// `/p2p/<PeerId>`.
    pub async fn addresses(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Addresses { reply }).await;
        answer.await.unwrap_or_default()
    }
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Building the swarm failed.
    #[error("cannot build the network stack: {0}")]
    Build(String),
    /// An address could not be listened on.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A tracker address lacks `/p2p/<PeerId>`.
    #[error("tracker address {0} must end in /p2p/<PeerId>")]
    TrackerWithoutPeerId(Multiaddr),
}

/// The peer id at the end of a multiaddr.
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|p| match p {
        AddrProtocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// `address` ending in `/p2p/<local>`, as others dial it (a relayed listen address may
/// already end so; one through a relay names the relay's id before `/p2p-circuit`).
fn dialable(address: Multiaddr, local: PeerId) -> Multiaddr {
    match address.iter().last() {
        Some(AddrProtocol::P2p(peer)) if peer == local => address,
        _ => address.with(AddrProtocol::P2p(local)),
    }
}

/// Loopback, private (RFC 1918, IPv6 unique local) and link-local addresses: those many
/// honest nodes share in tests and on a LAN.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (ip.segments()[0] & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Whether an address goes through a relay.
pub fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|p| matches!(p, AddrProtocol::P2pCircuit))
}

/// Builds the swarm and starts listening.
pub fn new(
    config: NetworkConfig,
    registry: &mut Registry,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop), StartError> {
    let mut swarm = behaviour::build_swarm(&config, registry).map_err(StartError::Build)?;
    let open_connections = Gauge::default();
    registry.register(
        "connections",
        "Connections open now, to peers and trackers",
        open_connections.clone(),
    );
    let request_seconds = Family::<Kind, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.001, 2.0, 16)) // 1 ms to about 33 s
    });
    registry.register(
        "request_seconds",
        "Time from an outbound request to its answer, by protocol",
        request_seconds.clone(),
    );
    for address in &config.listen {
        swarm.listen_on(address.clone()).map_err(|error| StartError::Listen {
            address: address.clone(),
            reason: error.to_string(),
        })?;
    }
    for address in &config.external {
        swarm.add_external_address(address.clone());
    }
    let mut trackers = HashMap::new();
    for address in &config.trackers {
        let peer =
            peer_of(address).ok_or_else(|| StartError::TrackerWithoutPeerId(address.clone()))?;
        // Trackers answer AutoNAT probes: they see us from outside our NAT.
        swarm.behaviour_mut().autonat.add_server(peer, Some(address.clone()));
        trackers.insert(peer, address.clone());
    }
    for topic in [Topic::Transactions, Topic::Blocks] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossip_topic(&config.network, topic))
            .map_err(|error| StartError::Build(error.to_string()))?;
    }
    let (commands, command_receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let (event_sender, events) = mpsc::channel(CHANNEL_CAPACITY);
    let namespace = rendezvous::Namespace::new(wire::rendezvous_namespace(&config.network))
        .map_err(|error| StartError::Build(error.to_string()))?;
    let serving = Serving::default();
    let answer_bytes = serving.answer_bytes();
    let scores = PeerScores::protecting(trackers.keys().copied());
    let event_loop = EventLoop {
        swarm,
        network: config.network,
        commands: command_receiver,
        events: event_sender,
        trackers,
        tracker_last_dial: HashMap::new(),
        registered_at: HashMap::new(),
        namespace,
        pending_requests: HashMap::new(),
        pending_responses: HashMap::new(),
        serving,
        next_token: 0,
        connections: HashMap::new(),
        open_connections,
        scores,
        last_discover: None,
        discover_cookies: HashMap::new(),
        pending_disconnects: Vec::new(),
        listening: false,
        reservations: HashMap::new(),
        nat_status: autonat::NatStatus::Unknown,
        libp2p_metrics: libp2p::metrics::Metrics::new(registry),
        request_seconds,
    };
    Ok((Client { commands, answer_bytes }, events, event_loop))
}

fn gossip_topic(network: &NetworkId, topic: Topic) -> IdentTopic {
    match topic {
        Topic::Transactions => IdentTopic::new(wire::transactions_topic(network)),
        Topic::Blocks => IdentTopic::new(wire::blocks_topic(network)),
    }
}

/// One open connection.
#[derive(Debug, Clone, Copy)]
struct Connection {
    link: Link,
    /// Whether this node dialled it.
    dialer: bool,
}

/// Where the answer to an outbound request goes.
enum Reply {
    /// To a caller waiting on it.
    Wait(oneshot::Sender<Result<Vec<u8>, RequestError>>),
    /// To the node, as an event with this id.
    Event(u64),
}

/// Owns the swarm; runs until every [`Client`] is dropped.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    network: NetworkId,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    trackers: HashMap<PeerId, Multiaddr>,
    tracker_last_dial: HashMap<PeerId, Instant>,
    registered_at: HashMap<PeerId, Instant>,
    namespace: rendezvous::Namespace,
    /// Requests waiting for their answers, with when each was sent.
    pending_requests: HashMap<(Protocol, OutboundRequestId), (PeerId, Reply, Instant)>,
    pending_responses:
        HashMap<ResponseToken, (InboundProtocol, ResponseChannel<Vec<u8>>, InboundRequestId)>,
    /// Inbound requests whose answers have not gone out yet, per peer.
    serving: Serving<InboundRequestId>,
    next_token: u64,
    connections: HashMap<PeerId, HashMap<ConnectionId, Connection>>,
    /// Connections open now (peers and trackers).
    open_connections: Gauge,
    scores: PeerScores,
    last_discover: Option<Instant>,
    /// Each tracker's rendezvous cookie: a discovery returns only the registrations
    /// since the last, at most [`DISCOVER_LIMIT`]. Without it every node would fetch (and
    /// check the signature of) every registration every [`DISCOVER_EVERY`]: at a
    /// thousand nodes, that alone kept two cores busy.
    discover_cookies: HashMap<PeerId, rendezvous::Cookie>,
    /// Banned peers to block (which closes their connections) once their last answers
    /// have gone out.
    pending_disconnects: Vec<(PeerId, Instant)>,
    /// Whether the swarm reported a listen address yet: trackers are dialled only then,
    /// so that TCP connections to them reuse the listen port (which hole punching needs).
    listening: bool,
    /// The relay reservation (circuit listener) held at each tracker.
    reservations: HashMap<PeerId, ListenerId>,
    /// What AutoNAT concluded about our reachability.
    nat_status: autonat::NatStatus,
    /// libp2p's own figures: connections, gossip, identify, ping, relay, hole punching.
    libp2p_metrics: libp2p::metrics::Metrics,
    /// Outbound request latencies, by protocol.
    request_seconds: Family<Kind, Histogram>,
}

impl EventLoop {
    /// Runs the swarm until the node drops its clients.
    pub async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_event(event).await,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => return,
                },
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
    }

    async fn emit(&mut self, event: NetworkEvent) {
        // The node stops reading only at shutdown.
        let _ = self.events.send(event).await;
    }

    /// Delivers the outcome of an outbound request where it was asked for.
    async fn reply(
        &mut self,
        peer: PeerId,
        protocol: Protocol,
        reply: Reply,
        result: Result<Vec<u8>, RequestError>,
    ) {
        match reply {
            Reply::Wait(sender) => {
                let _ = sender.send(result);
            }
            Reply::Event(id) => {
                self.emit(NetworkEvent::Answer { id, peer, protocol, result }).await
            }
        }
    }

    fn is_tracker(&self, peer: &PeerId) -> bool {
        self.trackers.contains_key(peer)
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .pending_disconnects
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        self.pending_disconnects.retain(|(_, at)| *at > now);
        for peer in due {
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        }
        for peer in self.scores.expire_bans(now) {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        if !self.listening {
            return;
        }
        let trackers: Vec<(PeerId, Multiaddr)> =
            self.trackers.iter().map(|(p, a)| (*p, a.clone())).collect();
        for (peer, address) in trackers {
            if self.swarm.is_connected(&peer) {
                self.reserve_relay(peer);
                let renew_after = Duration::from_secs(RENDEZVOUS_TTL_SECS / 2);
                if self
                    .registered_at
                    .get(&peer)
                    .is_none_or(|at| now.duration_since(*at) >= renew_after)
                {
                    self.register_rendezvous(peer);
                }
                continue;
            }
            if self
                .tracker_last_dial
                .get(&peer)
                .is_none_or(|at| now.duration_since(*at) >= TRACKER_REDIAL_EVERY)
            {
                self.tracker_last_dial.insert(peer, now);
                if let Err(error) = self.swarm.dial(address.clone()) {
                    debug!(%peer, %error, "tracker dial failed");
                }
            }
        }
        if self.last_discover.is_none_or(|at| now.duration_since(at) >= DISCOVER_EVERY) {
            self.last_discover = Some(now);
            let connected: Vec<PeerId> =
                self.trackers.keys().filter(|p| self.swarm.is_connected(p)).copied().collect();
            for tracker in connected {
                self.discover(tracker);
            }
        }
    }

    /// Asks `tracker` for the registrations in our namespace since the last discovery.
    fn discover(&mut self, tracker: PeerId) {
        let cookie = self.discover_cookies.get(&tracker).cloned();
        self.swarm.behaviour_mut().rendezvous.discover(
            Some(self.namespace.clone()),
            cookie,
            Some(DISCOVER_LIMIT),
            tracker,
        );
    }

    /// Keeps a relay reservation at `tracker`, so that peers behind other NATs can reach
    /// us through it (and then try to upgrade to a direct connection by hole punching).
    fn reserve_relay(&mut self, tracker: PeerId) {
        if self.reservations.contains_key(&tracker) {
            return;
        }
        let Some(address) = self.trackers.get(&tracker) else { return };
        let circuit = address.clone().with(AddrProtocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                debug!(%circuit, "asking the tracker for a relay reservation");
                self.reservations.insert(tracker, listener);
            }
            Err(error) => debug!(%circuit, %error, "cannot listen through the tracker's relay"),
        }
    }

    fn register_rendezvous(&mut self, tracker: PeerId) {
        let ttl = Some(RENDEZVOUS_TTL_SECS);
        match self.swarm.behaviour_mut().rendezvous.register(self.namespace.clone(), tracker, ttl) {
            Ok(()) => {
                self.registered_at.insert(tracker, Instant::now());
            }
            Err(error) => debug!(%tracker, %error, "cannot register at rendezvous yet"),
        }
    }

    fn own_addresses(&self) -> Vec<Multiaddr> {
        let local = *self.swarm.local_peer_id();
        let mut addresses: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        for address in self.swarm.listeners() {
            if !addresses.contains(address) && !is_unspecified(address) {
                addresses.push(address.clone());
            }
        }
        // Loopback addresses only help peers on this machine: keep them only when this node
        // has no other direct address (a network on one laptop).
        if addresses.iter().any(|a| !is_loopback(a) && !is_relayed(a)) {
            addresses.retain(|a| !is_loopback(a));
        }
        addresses.sort_by_key(is_relayed); // direct addresses first
        addresses.into_iter().map(|address| dialable(address, local)).collect()
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Dial { peer, addresses } => {
                if let Some(peer) = peer {
                    if self.swarm.is_connected(&peer)
                        || self.scores.is_banned(&peer, Instant::now())
                    {
                        return;
                    }
                    for address in &addresses {
                        self.swarm.add_peer_address(peer, address.clone());
                    }
                    let options = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                        .addresses(addresses)
                        // A dial still trying old addresses must not hold back new ones
                        // (a relayed address learned a moment later, say).
                        .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
                        .build();
                    if let Err(error) = self.swarm.dial(options) {
                        debug!(%peer, %error, "dial failed");
                    }
                } else {
                    for address in addresses {
                        if let Err(error) = self.swarm.dial(address.clone()) {
                            debug!(%address, %error, "dial failed");
                        }
                    }
                }
            }
            Command::Request { peer, protocol, bytes, reply } => {
                let behaviour = self.swarm.behaviour_mut();
                let id = match protocol {
                    Protocol::Direct => behaviour.direct.send_request(&peer, Frame::Bytes(bytes)),
                    Protocol::Sync => behaviour.sync.send_request(&peer, Frame::Bytes(bytes)),
                    Protocol::Directory => {
                        behaviour.directory.send_request(&peer, Frame::Bytes(bytes))
                    }
                };
                self.pending_requests.insert((protocol, id), (peer, reply, Instant::now()));
            }
            Command::Respond { token, bytes } => {
                let Some((protocol, channel, id)) = self.pending_responses.remove(&token) else {
                    return;
                };
                self.serving.answering(protocol, id, bytes.len());
                let behaviour = self.swarm.behaviour_mut();
                let sent = match protocol {
                    InboundProtocol::Direct => behaviour.direct.send_response(channel, bytes),
                    InboundProtocol::Sync => behaviour.sync.send_response(channel, bytes),
                    InboundProtocol::DirectoryPush => {
                        behaviour.directory_push.send_response(channel, bytes)
                    }
                };
                if sent.is_err() {
                    debug!("response not sent: the requester went away");
                }
            }
            Command::Publish { topic, data, reply } => {
                let topic = gossip_topic(&self.network, topic);
                let result = self.swarm.behaviour_mut().gossipsub.publish(topic, data);
                let _ = reply.send(result.map(|_| ()).map_err(|error| error.to_string()));
            }
            Command::Validate { message_id, source, acceptance } => {
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &source,
                    acceptance,
                );
            }
            Command::Penalize { peer, penalty, reason } => {
                if self.scores.is_protected(&peer) {
                    warn!(%peer, ?penalty, %reason, "a tracker was at fault (trackers are never banned)");
                } else {
                    warn!(%peer, ?penalty, %reason, "penalised a peer");
                }
                if self.scores.penalize(peer, penalty, Instant::now()) {
                    warn!(%peer, "banned a peer for {} s", peers::BAN_DURATION.as_secs());
                    // Blocking closes every connection: wait a moment, so the answer
                    // telling the peer what it did wrong still goes out.
                    self.pending_disconnects.push((peer, Instant::now() + DISCONNECT_GRACE));
                }
            }
            Command::Connections { reply } => {
                let links = self
                    .connections
                    .iter()
                    .filter(|(peer, _)| !self.is_tracker(peer))
                    .map(|(peer, links)| {
                        let direct = links.values().any(|c| c.link == Link::Direct);
                        (*peer, if direct { Link::Direct } else { Link::Relayed })
                    })
                    .collect();
                let _ = reply.send(links);
            }
            Command::Addresses { reply } => {
                let _ = reply.send(self.own_addresses());
            }
            Command::Reachability { reply } => {
                let _ = reply.send(match self.nat_status {
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                });
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::SetBlocked { peer, blocked } => {
                if blocked {
                    info!(%peer, "blocked a peer");
                    self.swarm.behaviour_mut().blocked.block_peer(peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                } else {
                    info!(%peer, "unblocked a peer");
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                }
            }
        }
    }

    fn count_connections(&self) {
        let open: usize = self.connections.values().map(HashMap::len).sum();
        self.open_connections.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// A peer's links as the node sees them: direct if any is, outbound if any was
    /// dialled by us.
    fn peer_link(&self, peer: PeerId) -> Option<NetworkEvent> {
        let links = self.connections.get(&peer).filter(|links| !links.is_empty())?;
        let direct = links.values().any(|c| c.link == Link::Direct);
        Some(NetworkEvent::PeerConnected {
            peer,
            link: if direct { Link::Direct } else { Link::Relayed },
            outbound: links.values().any(|c| c.dialer),
        })
    }

    /// One link per peer: once a direct link is up (DCUtR succeeded, or a dial got
    /// through), the relayed ones close. Both ends see which links are relayed, so they
    /// agree; two direct links from crossing dials are left alone (the per-peer cap bounds
    /// them), since the ends cannot tell which the other would keep.
    fn keep_one_link(&mut self, peer: PeerId) {
        let Some(links) = self.connections.get(&peer) else { return };
        if !links.values().any(|c| c.link == Link::Direct) {
            return;
        }
        let relayed: Vec<ConnectionId> =
            links.iter().filter(|(_, c)| c.link == Link::Relayed).map(|(id, _)| *id).collect();
        for id in relayed {
            debug!(%peer, "closing a relayed link: a direct one is up");
            self.swarm.close_connection(id);
        }
    }

    fn next_token(&mut self) -> ResponseToken {
        self.next_token += 1;
        ResponseToken(self.next_token)
    }

    async fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let local = *self.swarm.local_peer_id();
                if !is_unspecified(&address) {
                    self.swarm.add_external_address(address.clone());
                }
                if !self.listening {
                    self.listening = true;
                    self.housekeeping(); // now the trackers can be dialled
                }
                info!(%address, "listening");
                self.emit(NetworkEvent::Listening(dialable(address, local))).await;
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let link = if endpoint.is_relayed() { Link::Relayed } else { Link::Direct };
                let first = !self.connections.contains_key(&peer_id);
                let connection = Connection { link, dialer: endpoint.is_dialer() };
                self.connections.entry(peer_id).or_default().insert(connection_id, connection);
                self.count_connections();
                if self.is_tracker(&peer_id) {
                    if first {
                        info!(tracker = %peer_id, "connected to tracker");
                        self.register_rendezvous(peer_id);
                        self.discover(peer_id);
                        self.emit(NetworkEvent::TrackerConnected(peer_id)).await;
                    }
                } else {
                    debug!(peer = %peer_id, ?link, "connected");
                    self.keep_one_link(peer_id);
                    if let Some(event) = self.peer_link(peer_id) {
                        self.emit(event).await;
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                let tracker = self.is_tracker(&peer_id);
                let Some(links) = self.connections.get_mut(&peer_id) else { return };
                links.remove(&connection_id);
                let remaining = !links.is_empty();
                self.count_connections();
                if remaining {
                    // Still connected another way (e.g. relayed then direct): report the
                    // remaining link as the peer's.
                    if !tracker && let Some(event) = self.peer_link(peer_id) {
                        self.emit(event).await;
                    }
                    return;
                }
                self.connections.remove(&peer_id);
                if self.is_tracker(&peer_id) {
                    info!(tracker = %peer_id, "lost the tracker");
                    self.registered_at.remove(&peer_id);
                    self.emit(NetworkEvent::TrackerDisconnected(peer_id)).await;
                } else {
                    self.emit(NetworkEvent::PeerDisconnected { peer: peer_id }).await;
                }
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                for address in &addresses {
                    self.swarm.remove_external_address(address);
                }
                let before = self.reservations.len();
                self.reservations.retain(|_, listener| *listener != listener_id);
                if self.reservations.len() < before {
                    info!(
                        ?reason,
                        "relay reservation ended; it is renewed once the tracker is back"
                    );
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour_event(event).await,
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            _ => {}
        }
    }

    /// Feeds libp2p's metrics with what they know how to count.
    fn record(&self, event: &SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.libp2p_metrics.record(event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                self.libp2p_metrics.record(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.libp2p_metrics.record(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.libp2p_metrics.record(event),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => {
                self.libp2p_metrics.record(event)
            }
            _ => {}
        }
    }

    async fn handle_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let topic = if message.topic == gossip_topic(&self.network, Topic::Blocks).hash() {
                    Topic::Blocks
                } else if message.topic == gossip_topic(&self.network, Topic::Transactions).hash() {
                    Topic::Transactions
                } else {
                    self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Reject,
                    );
                    return;
                };
                self.emit(NetworkEvent::Gossip {
                    source: propagation_source,
                    message_id,
                    topic,
                    data: message.data,
                })
                .await;
            }
            BehaviourEvent::Direct(event) => {
                self.handle_request_event(event, Protocol::Direct, InboundProtocol::Direct).await
            }
            BehaviourEvent::Sync(event) => {
                self.handle_request_event(event, Protocol::Sync, InboundProtocol::Sync).await
            }
            BehaviourEvent::Directory(event) => {
                self.handle_request_event(
                    event,
                    Protocol::Directory,
                    InboundProtocol::DirectoryPush,
                )
                .await
            }
            BehaviourEvent::DirectoryPush(event) => {
                // Pushes come only from trackers we chose; anyone else gets no answer.
                if let request_response::Event::Message { peer, .. } = &event
                    && !self.is_tracker(peer)
                {
                    warn!(%peer, "a peer that is not our tracker pushed directory cards");
                    return;
                }
                self.handle_request_event(
                    event,
                    Protocol::Directory,
                    InboundProtocol::DirectoryPush,
                )
                .await
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for address in info.listen_addrs {
                    if !is_unspecified(&address) {
                        self.swarm.add_peer_address(peer_id, address);
                    }
                }
            }
            BehaviourEvent::Rendezvous(rendezvous::client::Event::DiscoverFailed {
                rendezvous_node,
                error,
                ..
            }) => {
                // A tracker that restarted no longer knows our cookie: start afresh.
                debug!(tracker = %rendezvous_node, ?error, "rendezvous discovery failed");
                self.discover_cookies.remove(&rendezvous_node);
            }
            BehaviourEvent::Rendezvous(rendezvous::client::Event::Discovered {
                registrations,
                cookie,
                rendezvous_node,
            }) => {
                self.discover_cookies.insert(rendezvous_node, cookie);
                let local = *self.swarm.local_peer_id();
                for registration in registrations {
                    let peer = registration.record.peer_id();
                    if peer == local
                        || self.swarm.is_connected(&peer)
                        || self.scores.is_banned(&peer, Instant::now())
                    {
                        continue;
                    }
                    // Not dialled: the node chooses its outbound peers from the
                    // directory. The addresses serve on-demand links (a transfer).
                    let addresses = registration.record.addresses().to_vec();
                    debug!(%peer, ?addresses, "discovered through rendezvous");
                    for address in addresses {
                        self.swarm.add_peer_address(peer, address);
                    }
                }
            }
            BehaviourEvent::Rendezvous(rendezvous::client::Event::RegisterFailed {
                rendezvous_node,
                error,
                ..
            }) => {
                warn!(tracker = %rendezvous_node, ?error, "rendezvous registration refused");
            }
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => match result {
                Ok(_) => info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(error) => {
                    info!(peer = %remote_peer_id, %error, "hole punching failed; staying relayed")
                }
            },
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                info!(status = ?new, "reachability");
                self.nat_status = new;
            }
            BehaviourEvent::Ping(ping::Event { peer, result: Err(error), .. }) => {
                debug!(%peer, %error, "ping failed");
            }
            _ => {}
        }
    }

    async fn handle_request_event(
        &mut self,
        event: request_response::Event<Frame, Vec<u8>>,
        outbound: Protocol,
        inbound: InboundProtocol,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    let in_flight = self.serving.begin(peer, inbound, request_id);
                    let token = self.next_token();
                    self.pending_responses.insert(token, (inbound, channel, request_id));
                    let (bytes, oversized) = match request {
                        Frame::Bytes(bytes) => (bytes, None),
                        Frame::Oversized { limit } => {
                            warn!(%peer, limit, ?inbound, "request exceeds the size limit");
                            (Vec::new(), Some(limit))
                        }
                    };
                    self.emit(NetworkEvent::Request(InboundRequest {
                        peer,
                        protocol: inbound,
                        bytes,
                        oversized,
                        in_flight,
                        token,
                    }))
                    .await;
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((peer, reply, sent)) =
                        self.pending_requests.remove(&(outbound, request_id))
                    {
                        self.request_seconds
                            .get_or_create(&Kind { kind: outbound.as_str() })
                            .observe(sent.elapsed().as_secs_f64());
                        self.reply(peer, outbound, reply, Ok(response)).await;
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                let error = match error {
                    request_response::OutboundFailure::DialFailure => {
                        RequestError::Unreachable(format!("dial to {peer} failed"))
                    }
                    request_response::OutboundFailure::Timeout => RequestError::Timeout,
                    other => RequestError::Failed(other.to_string()),
                };
                if let Some((peer, reply, _)) =
                    self.pending_requests.remove(&(outbound, request_id))
                {
                    self.reply(peer, outbound, reply, Err(error)).await;
                }
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %error, "inbound request failed");
                self.serving.end(inbound, request_id);
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.serving.end(inbound, request_id);
            }
        }
    }
}

fn is_loopback(address: &Multiaddr) -> bool {
    !is_relayed(address)
        && address.iter().any(|p| match p {
            AddrProtocol::Ip4(ip) => ip.is_loopback(),
            AddrProtocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
}

fn is_unspecified(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        AddrProtocol::Ip4(ip) => ip.is_unspecified(),
        AddrProtocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_then_peer_and_relay_detected() {
        let peer = PeerId::random();
        let direct: Multiaddr = format!("/ip4/1.2.3.4/tcp/5/p2p/{peer}").parse().unwrap();
        let relayed: Multiaddr =
            format!("/ip4/1.2.3.4/tcp/5/p2p/{peer}/p2p-circuit/p2p/{}", PeerId::random())
                .parse()
                .unwrap();
        assert_eq!(peer_of(&direct), Some(peer));
        assert!(!is_relayed(&direct));
        assert!(is_relayed(&relayed));
    }

    #[test]
    fn given_own_addresses_then_each_ends_in_our_peer_id_once() {
        let (me, relay) = (PeerId::random(), PeerId::random());
        let plain: Multiaddr = "/ip4/1.2.3.4/tcp/5".parse().unwrap();
        let circuit: Multiaddr =
            format!("/ip4/1.2.3.4/tcp/5/p2p/{relay}/p2p-circuit").parse().unwrap();
        let circuit_with_me: Multiaddr = format!("{circuit}/p2p/{me}").parse().unwrap();
        assert_eq!(dialable(plain.clone(), me), plain.with(AddrProtocol::P2p(me)));
        assert_eq!(dialable(circuit.clone(), me), circuit_with_me);
        assert_eq!(dialable(circuit_with_me.clone(), me), circuit_with_me);
    }
}
