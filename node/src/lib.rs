//! The Raclette node: chain state, storage, mempool, miner, network, REPL, API and CLI.
