//! The Raclette tracker: where nodes of a network meet.
//!
//! It runs the libp2p rendezvous server (nodes register and discover each other), the
//! directory of signed name cards (kept in LMDB and pushed to every connected node soon
//! after one is accepted), and a circuit relay for nodes behind NAT.

pub mod addresses;
pub mod api;
pub mod directory;
pub mod limits;
pub mod networks;
pub mod pushes;
pub mod relay;
pub mod server;
