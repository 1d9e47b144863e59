//! Connection limits: how many links a node holds, and how many one public address may
//! open to it. Together with outbound peers chosen across address groups (the node's
//! directory), this is the sybil defence that gossipsub's per-IP scoring was meant to be,
//! without punishing the many honest nodes that share an address (PROTOCOL.md §11.3).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use super::{is_private, is_relayed};

/// The most connections a node holds at once, whatever the size of the network: its
/// outbound peers, inbound ones, trackers and on-demand links together.
pub const MAX_CONNECTIONS: usize = 50;
/// Peers a node keeps connections to that it chose itself (Bitcoin keeps 8): inbound
/// peers cannot crowd them out.
pub const OUTBOUND_TARGET: usize = 8;
/// Inbound connections at once: what is left after the outbound peers and a few
/// trackers and on-demand links.
pub const MAX_INBOUND: usize = MAX_CONNECTIONS - OUTBOUND_TARGET - 4;
/// Connections to one peer: one, plus a relayed one while DCUtR upgrades it (then
/// closed) and one from two dials that cross.
pub const MAX_PER_PEER: u32 = 3;
/// Connections being set up at once, each way.
pub const MAX_PENDING: u32 = 16;
/// Inbound connections from one public address. Loopback, private and relayed addresses
/// are not counted: many honest nodes share them.
pub const MAX_INBOUND_PER_PUBLIC_IP: usize = 4;

/// libp2p's limits, set to the constants above.
pub fn connection_limits() -> connection_limits::Behaviour {
    let count = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
    connection_limits::Behaviour::new(
        ConnectionLimits::default()
            .with_max_established(count(MAX_CONNECTIONS))
            .with_max_established_incoming(count(MAX_INBOUND))
            .with_max_established_per_peer(Some(MAX_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING))
            .with_max_pending_outgoing(Some(MAX_PENDING)),
    )
}

/// Refuses an inbound connection from a public address that already holds
/// [`MAX_INBOUND_PER_PUBLIC_IP`] of them.
#[derive(Default)]
pub struct InboundPerIp {
    open: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

/// An inbound connection refused by [`InboundPerIp`].
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {MAX_INBOUND_PER_PUBLIC_IP} inbound connections")]
pub struct TooManyFromAddress {
    ip: IpAddr,
}

/// The public IP address a connection comes from, if it counts.
fn counted_ip(remote: &Multiaddr) -> Option<IpAddr> {
    if is_relayed(remote) {
        return None;
    }
    let ip = remote.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::from(ip)),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })?;
    (!is_private(ip)).then_some(ip)
}

impl InboundPerIp {
    fn admit(&self, remote: &Multiaddr) -> Result<Option<IpAddr>, ConnectionDenied> {
        let Some(ip) = counted_ip(remote) else { return Ok(None) };
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_INBOUND_PER_PUBLIC_IP {
            return Err(ConnectionDenied::new(TooManyFromAddress { ip }));
        }
        Ok(Some(ip))
    }
}

impl NetworkBehaviour for InboundPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(remote).map(drop)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = self.admit(remote)? {
            self.open.insert(connection, ip);
            *self.per_ip.entry(ip).or_default() += 1;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) = event
            && let Some(ip) = self.open.remove(&connection_id)
            && let Some(count) = self.per_ip.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Multiaddr {
        text.parse().expect("a multiaddr")
    }

    #[test]
    fn given_one_public_address_then_its_fifth_inbound_connection_is_refused_and_others_pass() {
        let mut limits = InboundPerIp::default();
        let public = address("/ip4/203.0.113.7/tcp/4001");
        for _ in 0..MAX_INBOUND_PER_PUBLIC_IP {
            let id = ConnectionId::new_unchecked(limits.open.len());
            limits.handle_pending_inbound_connection(id, &public, &public).expect("admitted");
            limits
                .handle_established_inbound_connection(id, PeerId::random(), &public, &public)
                .expect("admitted");
        }
        let next = ConnectionId::new_unchecked(99);
        assert!(limits.handle_pending_inbound_connection(next, &public, &public).is_err());
        // Loopback, private and relayed sources are many honest nodes: never counted.
        for shared in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/192.168.1.4/tcp/1",
            "/ip4/203.0.113.7/tcp/7000/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        ] {
            for n in 0..10 {
                let id = ConnectionId::new_unchecked(100 + n);
                limits
                    .handle_established_inbound_connection(
                        id,
                        PeerId::random(),
                        &public,
                        &address(shared),
                    )
                    .expect("not counted");
            }
        }
        // One of the five closes: another may come.
        let first = ConnectionId::new_unchecked(0);
        limits.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: first,
            endpoint: &libp2p::core::ConnectedPoint::Listener {
                local_addr: public.clone(),
                send_back_addr: public.clone(),
            },
            cause: None,
            remaining_established: 0,
        }));
        assert!(limits.handle_pending_inbound_connection(next, &public, &public).is_ok());
    }
}
