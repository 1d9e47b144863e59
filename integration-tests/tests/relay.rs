//! The tracker's circuit relay against a few identities that try to hold every circuit:
//! each gets at most its share, and honest nodes behind NAT still get through.

use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, noise, relay, tcp, yamux};
use raclette_integration_tests::harness::TrackerProcess;
use raclette_tracker::relay::MAX_CIRCUITS_PER_PEER;

/// Guards against a hang: the whole exchange takes a few seconds.
const PATIENCE: Duration = Duration::from_secs(90);

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
}

/// A bare libp2p peer that speaks the relay client protocol and keeps idle links open.
fn client() -> Swarm<Client> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|_, relay| Client { relay })
        .expect("behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

/// A peer that holds a reservation at the relay, then accepts every circuit, in the
/// background for the rest of the test. Returns its PeerId once the reservation holds.
async fn reserved_target(relay_address: &Multiaddr) -> PeerId {
    let mut swarm = client();
    let peer = *swarm.local_peer_id();
    swarm.listen_on(relay_address.clone().with(Protocol::P2pCircuit)).expect("listen via relay");
    loop {
        if let SwarmEvent::Behaviour(ClientEvent::Relay(
            relay::client::Event::ReservationReqAccepted { .. },
        )) = swarm.select_next_some().await
        {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    peer
}

/// Opens circuits from `dialer` to `target` one at a time, until the relay refuses one
/// or `attempts` are made; returns how many were opened (they stay open).
async fn open_circuits(
    dialer: &mut Swarm<Client>,
    relay_address: &Multiaddr,
    target: PeerId,
    attempts: usize,
) -> usize {
    let address = relay_address.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(target));
    for opened in 0..attempts {
        let dial = DialOpts::peer_id(target)
            .addresses(vec![address.clone()])
            .condition(PeerCondition::Always)
            .build();
        let id = dial.connection_id();
        dialer.dial(dial).expect("dial starts");
        loop {
            match dialer.select_next_some().await {
                SwarmEvent::ConnectionEstablished { connection_id, .. } if connection_id == id => {
                    break;
                }
                SwarmEvent::OutgoingConnectionError { connection_id, .. }
                    if connection_id == id =>
                {
                    return opened;
                }
                _ => {}
            }
        }
    }
    attempts
}

#[test]
fn given_identities_that_open_circuits_until_refused_then_each_gets_its_share_and_honest_peers_still_connect()
 {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let relay_address: Multiaddr = tracker.address.parse().expect("tracker address");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            // Four attackers, each with an accomplice behind the relay, open all the
            // circuits they can. The default libp2p relay has 16 in all: they would hold
            // every one.
            let mut held = Vec::new();
            let mut dialers = Vec::new();
            for _ in 0..4 {
                let accomplice = reserved_target(&relay_address).await;
                let mut attacker = client();
                let attempts = 3 * MAX_CIRCUITS_PER_PEER;
                held.push(open_circuits(&mut attacker, &relay_address, accomplice, attempts).await);
                dialers.push(attacker); // their circuits stay open
            }
            eprintln!("circuits held per attacker: {held:?}");
            for count in &held {
                assert!(
                    (1..=MAX_CIRCUITS_PER_PEER + 1).contains(count),
                    "an identity held {count} circuits: {held:?}"
                );
            }
            // An honest node behind NAT is still reached through the relay.
            let alice = reserved_target(&relay_address).await;
            let mut bob = client();
            assert_eq!(
                open_circuits(&mut bob, &relay_address, alice, 1).await,
                1,
                "bob reaches alice while the attackers hold {held:?} circuits"
            );
        })
        .await
        .expect("the relay answers in time");
    });
    drop(tracker);
}
