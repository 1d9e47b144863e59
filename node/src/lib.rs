//! The Raclette node: chain state, storage, mempool, miner, network, REPL, API and CLI.

pub mod api;
pub mod backoff;
pub mod chain;
pub mod cli;
pub mod demo;
pub mod mempool;
pub mod metrics;
pub mod miner;
pub mod network;
pub mod node;
pub mod rate;
pub mod repl;
pub mod run;
pub mod store;
pub mod sync;
pub mod testkit;
pub mod verdict;
