//! The node's libp2p behaviours and transports.

use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, autonat, dcutr, identify, noise, ping, relay,
    rendezvous, tcp, yamux,
};
use raclette_protocol::block::MAX_BLOCK_BYTES;
use raclette_protocol::hash::sha256;
use raclette_protocol::wire::{self, WireMessage};

use super::NetworkConfig;
use super::codec::LimitedBytes;
use super::identity::libp2p_keypair;

/// Idle connections stay open this long; peers ping each other meanwhile.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Direct and directory requests give up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sync requests (up to 16 MB of blocks) give up after this.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: libp2p::connection_limits::Behaviour,
    pub inbound_per_ip: super::limits::InboundPerIp,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub direct: request_response::Behaviour<LimitedBytes>,
    pub sync: request_response::Behaviour<LimitedBytes>,
    pub directory: request_response::Behaviour<LimitedBytes>,
    pub directory_push: request_response::Behaviour<LimitedBytes>,
    pub rendezvous: rendezvous::client::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
}

/// AutoNAT probing tuned for small networks: start soon, use the trackers and any
/// connected peer as servers, and accept private addresses (homes and test networks use
/// them; the observed address decides, not the range).
pub fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(20),
        refresh_interval: Duration::from_secs(300),
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

fn request_response(
    protocol: &'static str,
    support: ProtocolSupport,
    limits: LimitedBytes,
    timeout: Duration,
) -> request_response::Behaviour<LimitedBytes> {
    request_response::Behaviour::with_codec(
        limits,
        [(StreamProtocol::new(protocol), support)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

/// Peer scoring for our two topics: only invalid messages (ones the node rejected) count,
/// squared, against the peer that forwarded them. One costs -20 (below the gossip
/// threshold: no more IHAVE gossip to it), two -80 (below the publish threshold; the
/// node's own peer manager bans at two faults), a third -180 graylists it.
///
/// Everything else is off, so that arithmetic holds:
/// - time in mesh and first deliveries would add up to thousands of points within
///   seconds (libp2p's default quantum is 1 ms) and hide any number of invalid messages;
/// - delivery rates: in a network of a few friends quiet peers are normal;
/// - IP colocation: many honest nodes share an address (one machine, one home behind a
///   NAT, every peer reached through a tracker's relay appears at the relay's address).
///   Past ten per address libp2p's default pushed them below the publish threshold and
///   the network split. The sybil defence is at the connection level instead (outbound
///   peers chosen across address groups, inbound connections capped per public
///   address); PROTOCOL.md §11.3.
fn score_params(network: &raclette_protocol::NetworkId) -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.5,
        ..gossipsub::TopicScoreParams::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    };
    for name in [wire::transactions_topic(network), wire::blocks_topic(network)] {
        params.topics.insert(gossipsub::IdentTopic::new(name).hash(), topic.clone());
    }
    params
}

/// Heartbeats a message stays in the cache: awaiting validation, it is relayed only if
/// the node's verdict comes within this many heartbeats (8.4 s; a full block is checked
/// in well under a second).
const GOSSIP_HISTORY_HEARTBEATS: usize = 12;

/// Gossipsub with application validation, content-addressed ids and a transmit size that
/// fits the largest block.
fn gossipsub(
    key: &libp2p::identity::Keypair,
    network: &raclette_protocol::NetworkId,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<gossipsub::Behaviour, String> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|message: &gossipsub::Message| {
            MessageId::from(sha256(&message.data).to_vec())
        })
        .max_transmit_size(MAX_BLOCK_BYTES + 100_000)
        .heartbeat_interval(Duration::from_millis(700))
        .history_length(GOSSIP_HISTORY_HEARTBEATS)
        .build()
        .map_err(|error| error.to_string())?;
    let mut behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)?.with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
    behaviour.with_peer_score(score_params(network), gossipsub::PeerScoreThresholds::default())?;
    Ok(behaviour)
}

/// The swarm: TCP (Noise, Yamux), QUIC, DNS, circuit relay client, and the behaviours;
/// or, for simulations, libp2p's in-process memory transport in place of TCP, QUIC and
/// DNS.
pub fn build_swarm(
    config: &NetworkConfig,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, String> {
    let key = libp2p_keypair(&config.keypair);
    let network = config.network;
    let behaviour = |key: &libp2p::identity::Keypair, relay_client| {
        node_behaviour(key, relay_client, &network, registry)
    };
    let swarm = match config.transport {
        super::Transport::Os => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|error| error.to_string())?
            .with_quic()
            .with_dns()
            .map_err(|error| error.to_string())?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|error| error.to_string())?
            .with_behaviour(behaviour)
            .map_err(|error| error.to_string())?
            .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
        super::Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(memory_transport)
            .map_err(|error| error.to_string())?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|error| error.to_string())?
            .with_behaviour(behaviour)
            .map_err(|error| error.to_string())?
            .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
    };
    Ok(swarm)
}

/// libp2p's in-process memory transport with Noise and Yamux, as TCP has them: many
/// nodes (and a tracker) in one process.
pub fn memory_transport(
    key: &libp2p::identity::Keypair,
) -> Result<
    libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use libp2p::Transport as _;
    Ok(libp2p::core::transport::MemoryTransport::default()
        .upgrade(libp2p::core::upgrade::Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, libp2p::core::muxing::StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Everything a node speaks, over whichever transport.
fn node_behaviour(
    key: &libp2p::identity::Keypair,
    relay_client: relay::client::Behaviour,
    network: &raclette_protocol::NetworkId,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer = key.public().to_peer_id();
    Ok(Behaviour {
        limits: super::limits::connection_limits(),
        inbound_per_ip: super::limits::InboundPerIp::default(),
        blocked: allow_block_list::Behaviour::default(),
        identify: identify::Behaviour::new(
            identify::Config::new(wire::IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                .with_agent_version(format!("raclette-node/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
        gossipsub: gossipsub(key, network, registry)?,
        direct: request_response(
            wire::DIRECT_PROTOCOL,
            ProtocolSupport::Full,
            LimitedBytes {
                max_request: wire::DirectRequest::MAX_BYTES,
                max_response: wire::DirectResponse::MAX_BYTES,
            },
            REQUEST_TIMEOUT,
        ),
        sync: request_response(
            wire::SYNC_PROTOCOL,
            ProtocolSupport::Full,
            LimitedBytes {
                max_request: wire::SyncRequest::MAX_BYTES,
                max_response: wire::SyncResponse::MAX_BYTES,
            },
            SYNC_TIMEOUT,
        ),
        directory: request_response(
            wire::DIRECTORY_PROTOCOL,
            ProtocolSupport::Outbound,
            LimitedBytes {
                max_request: wire::DirectoryRequest::MAX_BYTES,
                max_response: wire::DirectoryResponse::MAX_BYTES,
            },
            REQUEST_TIMEOUT,
        ),
        directory_push: request_response(
            wire::DIRECTORY_PUSH_PROTOCOL,
            ProtocolSupport::Inbound,
            LimitedBytes {
                max_request: wire::DirectoryPush::MAX_BYTES,
                max_response: wire::DirectoryPushAck::MAX_BYTES,
            },
            REQUEST_TIMEOUT,
        ),
        rendezvous: rendezvous::client::Behaviour::new(key.clone()),
        relay_client,
        dcutr: dcutr::Behaviour::new(peer),
        autonat: autonat::Behaviour::new(peer, autonat_config()),
    })
}
