//! The Raclette node: chain state, storage, mempool, miner, network, REPL, API and CLI.

pub mod chain;
pub mod mempool;
pub mod miner;
pub mod network;
pub mod store;
pub mod testkit;
