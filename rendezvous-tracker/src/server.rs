//! The tracker's swarm: rendezvous server, directory, pushes to connected nodes, and a
//! circuit relay for nodes behind NAT.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, identify, noise, ping, relay, rendezvous,
    tcp, yamux,
};
use raclette_node::network::Transport;
use raclette_node::network::codec::{Frame, LimitedBytes};
use raclette_node::network::identity::{key_of, libp2p_keypair, peer_id_of};
use raclette_node::node::now_ms;
use raclette_node::store::LmdbStore;
use raclette_protocol::wire::{
    self, DirectoryPush, DirectoryRequest, DirectoryResponse, MAX_CARDS_PER_PAGE, WireMessage,
};
use raclette_protocol::{Keypair, NetworkId, PeerCard, PublicKey};
use tracing::{debug, info, warn};

use libp2p::metrics::Recorder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use raclette_node::metrics::Kind;

use crate::addresses::AddressFile;
use crate::directory::{CARD_EXPIRY, Directory, Registered};
use crate::limits::{MAX_CARDS_PER_SOURCE, SourceLimits};
use crate::networks::Networks;
use crate::pushes::{Pushes, RETRY_AFTER};

/// The shortest rendezvous registration the tracker accepts, so that a departed node
/// disappears within minutes.
pub const MIN_RENDEZVOUS_TTL_SECS: u64 = 60;

/// How often cards are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(3600);

/// What the tracker speaks.
#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    rendezvous: rendezvous::server::Behaviour,
    directory: request_response::Behaviour<LimitedBytes>,
    directory_push: request_response::Behaviour<LimitedBytes>,
    relay: relay::Behaviour,
    autonat: autonat::Behaviour,
}

/// Peers connected now, shared with the API.
pub type Connected = Arc<Mutex<HashSet<PeerId>>>;

/// The tracker's own series (the API adds the directory's size when scraped).
#[derive(Clone, Debug, Default)]
struct TrackerMetrics {
    /// Cards pushed to connected nodes.
    pushes: Counter,
    /// Card registrations, by outcome.
    registrations: Family<Kind, Counter>,
}

impl TrackerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("pushes", "Cards pushed to connected nodes", metrics.pushes.clone());
        registry.register(
            "registrations",
            "Card registrations, by outcome",
            metrics.registrations.clone(),
        );
        metrics
    }

    fn registration(&self, kind: &'static str) {
        self.registrations.get_or_create(&Kind { kind }).inc();
    }
}

/// The running tracker.
pub struct Tracker {
    swarm: Swarm<Behaviour>,
    directory: Arc<Directory<LmdbStore>>,
    connected: Connected,
    /// The network each node registered a card for.
    networks: HashMap<PeerId, NetworkId>,
    /// The cards each connected node is still owed.
    pushes: Pushes<request_response::OutboundRequestId>,
    /// Addresses given with `--external-address`: dialable, but never a listen event.
    external: Vec<Multiaddr>,
    /// Where the current addresses are written, one per line, for scripts.
    address_file: Option<AddressFile>,
    metrics: TrackerMetrics,
    /// What one source address may register.
    limits: SourceLimits,
    /// The IP address each connected peer came from.
    sources: HashMap<PeerId, std::net::IpAddr>,
    /// The networks whose cards this tracker keeps.
    served: Networks,
    /// How long a card lasts after its key was last seen.
    card_expiry: Duration,
    /// libp2p's figures: connections, relay reservations and circuits, identify, ping.
    libp2p_metrics: libp2p::metrics::Metrics,
}

impl Tracker {
    /// Builds the swarm and listens on `listen`; `external` addresses are announced as
    /// the tracker's own (needed for the relay behind a public address).
    pub fn new(
        keypair: &Keypair,
        listen: &[Multiaddr],
        external: &[Multiaddr],
        directory: Arc<Directory<LmdbStore>>,
        connected: Connected,
        registry: &mut Registry,
        (relay, transport): (relay::Config, Transport),
    ) -> anyhow::Result<Self> {
        let key = libp2p_keypair(keypair);
        let behaviour = |key: &libp2p::identity::Keypair| tracker_behaviour(key, relay);
        let idle = |config: libp2p::swarm::Config| {
            config.with_idle_connection_timeout(Duration::from_secs(3600))
        };
        let mut swarm = match transport {
            Transport::Os => libp2p::SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )?
                .with_quic()
                .with_behaviour(behaviour)?
                .with_swarm_config(idle)
                .build(),
            Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_other_transport(raclette_node::network::memory_transport)?
                .with_behaviour(behaviour)?
                .with_swarm_config(idle)
                .build(),
        };
        for address in listen {
            swarm.listen_on(address.clone())?;
        }
        for address in external {
            swarm.add_external_address(address.clone());
        }
        Ok(Self {
            swarm,
            directory,
            connected,
            networks: HashMap::new(),
            pushes: Pushes::default(),
            external: external.to_vec(),
            address_file: None,
            metrics: TrackerMetrics::register(registry),
            limits: SourceLimits::new(MAX_CARDS_PER_SOURCE, false),
            sources: HashMap::new(),
            served: Networks::Any,
            card_expiry: CARD_EXPIRY,
            libp2p_metrics: libp2p::metrics::Metrics::new(registry),
        })
    }

    /// Registrations limited by `limits` (by default, [`MAX_CARDS_PER_SOURCE`] keys per
    /// address, private ones included).
    pub fn with_limits(mut self, limits: SourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves only `networks` (by default, any).
    pub fn serving(mut self, networks: Networks) -> Self {
        self.served = networks;
        self
    }

    /// Cards expire `expiry` after their key was last seen (by default [`CARD_EXPIRY`]).
    pub fn with_card_expiry(mut self, expiry: Duration) -> Self {
        self.card_expiry = expiry;
        self
    }

    /// Also keeps the tracker's dialable addresses in `file` as they come and go.
    pub fn with_address_file(mut self, file: AddressFile) -> Self {
        self.address_file = Some(file);
        self
    }

    /// The tracker's PeerId.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs forever.
    pub async fn run(mut self) {
        for address in self.external.clone() {
            self.announce(address);
        }
        let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
        let mut retry = tokio::time::interval(RETRY_AFTER);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_event(event),
                _ = sweep.tick() => self.expire_cards(),
                _ = retry.tick() => self.send_pushes(),
            }
        }
    }

    /// Removes the cards unseen for longer than the expiry.
    fn expire_cards(&mut self) {
        let connected = self.connected.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let is_connected = |key: &PublicKey| connected.contains(&peer_id_of(key));
        match self.directory.expire(now_ms(), self.card_expiry, is_connected) {
            Ok(removed) => {
                for card in removed {
                    info!(name = %card.name, key = %card.key, "card expired: its key was not seen for {} days", self.card_expiry.as_secs() / 86_400);
                    self.pushes.removed(&card.key);
                    self.metrics.registration("expired");
                }
            }
            Err(error) => warn!(%error, "cannot expire cards"),
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => {
                self.libp2p_metrics.record(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.libp2p_metrics.record(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.libp2p_metrics.record(event),
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // A tracker is a server: the addresses it listens on are the ones nodes
                // reach it at, and its relay must announce them.
                if !address
                    .iter()
                    .any(|p| matches!(p, AddrProtocol::Ip4(ip) if ip.is_unspecified()))
                {
                    self.swarm.add_external_address(address.clone());
                }
                self.announce(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                let full = address.with_p2p(self.peer_id()).unwrap_or_else(|address| address);
                info!(address = %full, "no longer listening");
                if let Some(file) = &mut self.address_file
                    && let Err(error) = file.remove(&full)
                {
                    warn!(%error, path = %file.path().display(), "cannot write the address file");
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                self.connected.lock().unwrap_or_else(|p| p.into_inner()).insert(peer_id);
                if let Some(ip) = source_ip(endpoint.get_remote_address()) {
                    self.sources.insert(peer_id, ip);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer_id);
                self.sources.remove(&peer_id);
                self.pushes.left(&peer_id);
                // Its card's clock starts now: a node seen until now keeps its name.
                if let (Some(network), Some(key)) =
                    (self.networks.remove(&peer_id), key_of(&peer_id))
                    && let Err(error) = self.directory.touch(&network, &key, now_ms())
                {
                    warn!(%error, "cannot note when a node was last seen");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Directory(
                request_response::Event::Message {
                    peer,
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                },
            )) => {
                let response = match request {
                    Frame::Bytes(bytes) => self.handle_request(peer, &bytes),
                    Frame::Oversized { limit } => {
                        warn!(%peer, limit, "refused a directory request: it exceeds the size limit");
                        DirectoryResponse::Refused {
                            reason: format!("request exceeds {limit} bytes"),
                        }
                    }
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .directory
                    .send_response(channel, response.encode())
                    .is_err()
                {
                    debug!(%peer, "directory answer not delivered: the node went away");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Directory(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                warn!(%peer, %error, "refused a directory request");
            }
            SwarmEvent::Behaviour(BehaviourEvent::DirectoryPush(
                request_response::Event::Message {
                    peer,
                    message: request_response::Message::Response { request_id, .. },
                    ..
                },
            )) => {
                self.pushes.delivered(&peer, &request_id);
                self.send_pushes();
            }
            SwarmEvent::Behaviour(BehaviourEvent::DirectoryPush(
                request_response::Event::OutboundFailure { peer, error, request_id, .. },
            )) => {
                debug!(%peer, %error, "push not delivered: sent again later");
                self.pushes.failed(&peer, &request_id, Instant::now());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rendezvous(
                rendezvous::server::Event::PeerRegistered { peer, registration },
            )) => {
                debug!(%peer, namespace = %registration.namespace, "rendezvous registration");
            }
            _ => {}
        }
    }

    /// Lists a dialable address in the address file, then prints it (the line users copy
    /// into `--tracker`): whoever sees the line finds the file up to date.
    fn announce(&mut self, address: Multiaddr) {
        let full = address.with_p2p(self.peer_id()).unwrap_or_else(|address| address);
        if let Some(file) = &mut self.address_file
            && let Err(error) = file.add(full.clone())
        {
            warn!(%error, path = %file.path().display(), "cannot write the address file");
        }
        println!("tracker address: {full}");
    }

    /// Answers one directory request; accepted cards are pushed to the other nodes of
    /// their network at once.
    fn handle_request(&mut self, peer: PeerId, bytes: &[u8]) -> DirectoryResponse {
        let refuse = |reason: String| DirectoryResponse::Refused { reason };
        let request = match DirectoryRequest::decode(bytes) {
            Ok(request) => request,
            Err(error) => {
                warn!(%peer, %error, "malformed directory request");
                return refuse(format!("malformed request: {error}"));
            }
        };
        let network = match &request {
            DirectoryRequest::Register(card) => card.network,
            DirectoryRequest::List { network, .. } | DirectoryRequest::Lookup { network, .. } => {
                *network
            }
        };
        if let Some(reason) = self.served.refusal(&network) {
            self.metrics.registration("wrong_network");
            warn!(%peer, %reason, "directory request refused");
            return refuse(reason);
        }
        let result = match request {
            DirectoryRequest::Register(card) => self.register(peer, card),
            DirectoryRequest::List { network, after, limit } => {
                let limit = (limit as usize).clamp(1, MAX_CARDS_PER_PAGE);
                self.directory
                    .list(&network, after.as_deref(), limit)
                    .map(|(cards, more)| DirectoryResponse::Cards { cards, more })
            }
            DirectoryRequest::Lookup { network, name } => {
                self.directory.lookup(&network, &name).map(|card| DirectoryResponse::Cards {
                    cards: card.into_iter().collect(),
                    more: false,
                })
            }
        };
        result.unwrap_or_else(|error| {
            warn!(%error, "directory store failed");
            refuse("the tracker could not read its directory".into())
        })
    }

    fn register(
        &mut self,
        peer: PeerId,
        card: PeerCard,
    ) -> Result<DirectoryResponse, raclette_node::store::StoreError> {
        if let Some(address) = raclette_node::network::identity::foreign_address(&card) {
            self.metrics.registration("refused");
            let reason =
                format!("address {address} does not end in the card key's own /p2p/<PeerId>");
            warn!(name = %card.name, %peer, %reason, "card refused");
            return Ok(DirectoryResponse::Refused { reason });
        }
        let Some(sender) = key_of(&peer) else {
            self.metrics.registration("refused");
            return Ok(DirectoryResponse::Refused {
                reason: "only secp256k1 peer ids can hold names".into(),
            });
        };
        if let Some(source) = self.sources.get(&peer).copied()
            && let Err(refusal) = self.limits.admit(source, sender, std::time::Instant::now())
        {
            self.metrics.registration("limited");
            warn!(name = %card.name, %peer, %refusal, "card refused");
            return Ok(DirectoryResponse::Refused { reason: refusal.to_string() });
        }
        match self.directory.register(&sender, &card, now_ms())? {
            Ok(outcome) => {
                self.metrics.registration(if outcome == Registered::Unchanged {
                    "unchanged"
                } else {
                    "accepted"
                });
                self.networks.insert(peer, card.network);
                self.pushes.joined(peer, card.network);
                if outcome != Registered::Unchanged {
                    info!(name = %card.name, %peer, ?outcome, "card accepted");
                    self.pushes.accepted(card);
                    self.send_pushes();
                }
                Ok(DirectoryResponse::Registered)
            }
            Err(refusal) => {
                self.metrics.registration("refused");
                warn!(name = %card.name, %peer, %refusal, "card refused");
                Ok(match refusal {
                    crate::directory::Refusal::NameTaken(_) => {
                        DirectoryResponse::NameTaken { name: card.name }
                    }
                    refusal => DirectoryResponse::Refused { reason: refusal.to_string() },
                })
            }
        }
    }

    /// Pushes the cards accepted since to every connected node of their network that
    /// has no push in flight (see [`Pushes`]).
    fn send_pushes(&mut self) {
        for (peer, cards, last) in self.pushes.due(Instant::now()) {
            self.metrics.pushes.inc_by(cards.len() as u64);
            let bytes = DirectoryPush { cards }.encode();
            let id =
                self.swarm.behaviour_mut().directory_push.send_request(&peer, Frame::Bytes(bytes));
            self.pushes.sent(&peer, id, last);
        }
    }
}

/// What a tracker speaks, over whichever transport.
fn tracker_behaviour(key: &libp2p::identity::Keypair, relay: relay::Config) -> Behaviour {
    Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(wire::IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                .with_agent_version(format!("raclette-tracker/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
        rendezvous: rendezvous::server::Behaviour::new(
            rendezvous::server::Config::default().with_min_ttl(MIN_RENDEZVOUS_TTL_SECS),
        ),
        directory: request_response::Behaviour::with_codec(
            LimitedBytes {
                max_request: DirectoryRequest::MAX_BYTES,
                max_response: DirectoryResponse::MAX_BYTES,
            },
            [(StreamProtocol::new(wire::DIRECTORY_PROTOCOL), ProtocolSupport::Inbound)],
            request_response::Config::default(),
        ),
        directory_push: request_response::Behaviour::with_codec(
            LimitedBytes {
                max_request: DirectoryPush::MAX_BYTES,
                max_response: wire::DirectoryPushAck::MAX_BYTES,
            },
            [(StreamProtocol::new(wire::DIRECTORY_PUSH_PROTOCOL), ProtocolSupport::Outbound)],
            request_response::Config::default(),
        ),
        relay: relay::Behaviour::new(key.public().to_peer_id(), relay),
        autonat: autonat::Behaviour::new(
            key.public().to_peer_id(),
            autonat::Config { only_global_ips: false, ..autonat::Config::default() },
        ),
    }
}

/// The IP address a connection came from, unless it came through a relay (whose address
/// says nothing of the peer).
pub(crate) fn source_ip(address: &Multiaddr) -> Option<std::net::IpAddr> {
    if raclette_node::network::is_relayed(address) {
        return None;
    }
    address.iter().find_map(|protocol| match protocol {
        AddrProtocol::Ip4(ip) => Some(ip.into()),
        AddrProtocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}
