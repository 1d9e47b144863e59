//! Raclette's protocol: the types, encodings and rules every node must agree on.
//!
//! This crate is pure: no async runtime, no networking, no clock, no file access, no
//! randomness of its own. Anything that needs time or random bytes takes them as
//! arguments, so every function here is deterministic and testable. `PROTOCOL.md` at
//! the repository root documents the same things for other implementations, with the
//! test vectors that `tests/vectors.rs` checks.

pub mod amount;
pub mod block;
pub mod directory;
pub mod encoding;
pub mod encryption;
pub mod hash;
pub mod header;
pub mod keys;
pub mod mining;
pub mod params;
pub mod pow;
pub mod transaction;
pub mod wire;

pub use amount::Amount;
pub use block::{Block, MAX_BLOCK_BYTES};
pub use directory::{PeerCard, PeerName};
pub use encoding::DecodeError;
pub use encryption::EncryptedMessage;
pub use hash::{BlockHash, NetworkId, TxId};
pub use header::BlockHeader;
pub use keys::{Keypair, PublicKey, Signature};
pub use params::NetworkParams;
pub use pow::{CompactTarget, Target, Work};
pub use transaction::{Coinbase, Transaction, Transfer};
pub use wire::WireMessage;
