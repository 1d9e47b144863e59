//! Every message nodes and trackers exchange, with its protocol id and size limit.
//!
//! Each message type implements [`WireMessage`], which fixes its largest encoding; the
//! network layer decodes through [`WireMessage::decode`] so that nothing larger is
//! parsed and nothing non-canonical is accepted.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::block::{Block, MAX_BLOCK_BYTES};
use crate::directory::{MAX_CARD_BYTES, PeerCard, PeerName};
use crate::encoding::{DecodeError, decode_canonical, to_canonical_cbor};
use crate::hash::{BlockHash, NetworkId};
use crate::header::BlockHeader;
use crate::pow::Work;
use crate::transaction::Transfer;

/// Request-response protocol for a transaction sent straight to its receiver.
pub const DIRECT_PROTOCOL: &str = "/raclette/direct/1";
/// Request-response protocol for chain sync (status, headers, blocks).
pub const SYNC_PROTOCOL: &str = "/raclette/sync/1";
/// Request-response protocol from a node to a tracker's directory.
pub const DIRECTORY_PROTOCOL: &str = "/raclette/directory/1";
/// Request-response protocol a tracker uses to push new cards to nodes.
pub const DIRECTORY_PUSH_PROTOCOL: &str = "/raclette/directory-push/1";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/raclette/1";

/// Gossipsub topic carrying [`Transfer`]s of a network.
pub fn transactions_topic(network: &NetworkId) -> String {
    format!("/raclette/{network}/transactions")
}

/// Gossipsub topic carrying [`Block`]s of a network.
pub fn blocks_topic(network: &NetworkId) -> String {
    format!("/raclette/{network}/blocks")
}

/// Rendezvous namespace nodes of a network register under.
pub fn rendezvous_namespace(network: &NetworkId) -> String {
    format!("raclette-{}", &network.to_string()[..16])
}

/// Most headers in one [`SyncResponse::Headers`].
pub const MAX_HEADERS_PER_RESPONSE: usize = 2000;
/// Most blocks in one [`SyncRequest::Blocks`].
pub const MAX_BLOCKS_PER_REQUEST: usize = 16;
/// Most sync requests one peer may have waiting for answers at once; more are refused.
/// Honest nodes keep at most two block pages, one headers request and one status in
/// flight per peer.
pub const MAX_SYNC_REQUESTS_IN_FLIGHT: usize = 8;
/// Most hashes in a locator.
pub const MAX_LOCATOR_HASHES: usize = 64;
/// Most cards in one directory page.
pub const MAX_CARDS_PER_PAGE: usize = 256;
/// Longest reason string in a refusal.
pub const MAX_REASON_BYTES: usize = 256;

/// A message with a canonical CBOR encoding and a size limit.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The largest valid encoding.
    const MAX_BYTES: usize;

    /// Canonical CBOR.
    fn encode(&self) -> Vec<u8> {
        to_canonical_cbor(self)
    }

    /// Decodes, refusing anything over [`Self::MAX_BYTES`] or non-canonical.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_canonical(bytes, Self::MAX_BYTES)
    }
}

/// A transfer (gossip, or inside a direct request) fits comfortably in 2 KiB: the
/// ciphertext is at most 1040 bytes and the other fields under 300.
impl WireMessage for Transfer {
    const MAX_BYTES: usize = 2048;
}

impl WireMessage for Block {
    const MAX_BYTES: usize = MAX_BLOCK_BYTES;
}

/// The direct protocol's request: a transaction for its receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectRequest {
    /// The signed transaction, message encrypted for the receiver.
    pub transfer: Transfer,
}

impl WireMessage for DirectRequest {
    const MAX_BYTES: usize = Transfer::MAX_BYTES + 64;
}

/// The receiver's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectResponse {
    /// Valid, stored, and broadcast by the receiver.
    Accepted,
    /// Refused, with the reason.
    Rejected {
        /// One sentence.
        reason: String,
    },
}

impl WireMessage for DirectResponse {
    const MAX_BYTES: usize = MAX_REASON_BYTES + 64;
}

/// What a node tells a peer about its chain when they connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// The network id; a mismatch ends the connection.
    pub network: NetworkId,
    /// Height of the best tip.
    pub height: u64,
    /// Hash of the best tip.
    pub tip: BlockHash,
    /// Cumulative work of the best chain.
    pub work: Work,
}

/// Sync requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncRequest {
    /// "Here is my chain; what is yours?"
    Status(ChainStatus),
    /// Headers following the first locator hash the peer knows on its best chain.
    Headers {
        /// Hashes from the requester's tip back to genesis, densest near the tip.
        locator: Vec<BlockHash>,
        /// How many headers at most (capped at [`MAX_HEADERS_PER_RESPONSE`]).
        limit: u32,
    },
    /// Full blocks by hash.
    Blocks {
        /// At most [`MAX_BLOCKS_PER_REQUEST`] hashes.
        hashes: Vec<BlockHash>,
    },
}

impl WireMessage for SyncRequest {
    const MAX_BYTES: usize = 64 + MAX_LOCATOR_HASHES * 36;
}

/// Sync responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResponse {
    /// The responder's chain.
    Status(ChainStatus),
    /// Consecutive headers, parent first.
    Headers(Vec<BlockHeader>),
    /// The requested blocks the responder has, in request order.
    Blocks(Vec<Block>),
    /// The request was not served.
    Refused {
        /// One sentence.
        reason: String,
    },
}

impl WireMessage for SyncResponse {
    const MAX_BYTES: usize = MAX_BLOCKS_PER_REQUEST * MAX_BLOCK_BYTES + 4096;
}

/// Requests from a node to a tracker's directory.
// Decoded once per request and dropped: boxing the card would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryRequest {
    /// Claim a name or update one's own card.
    Register(PeerCard),
    /// A page of the directory of a network, in name order, after `after` (exclusive).
    List {
        /// The network whose cards to list.
        network: NetworkId,
        /// Lowercase name to continue after; `None` starts at the beginning.
        after: Option<String>,
        /// At most [`MAX_CARDS_PER_PAGE`].
        limit: u32,
    },
    /// One card by name.
    Lookup {
        /// The network.
        network: NetworkId,
        /// The name.
        name: PeerName,
    },
}

impl WireMessage for DirectoryRequest {
    const MAX_BYTES: usize = 8192;
}

/// A tracker's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryResponse {
    /// The card is stored and being pushed to the other peers.
    Registered,
    /// Another key holds the name: the node must choose another.
    NameTaken {
        /// The name asked for.
        name: PeerName,
    },
    /// The request was refused (malformed, bad signature, older than the stored card...).
    Refused {
        /// One sentence, e.g. that the name is taken.
        reason: String,
    },
    /// A page of cards; `more` says whether another page follows.
    Cards {
        /// The cards.
        cards: Vec<PeerCard>,
        /// Whether a further `List` would return more.
        more: bool,
    },
}

impl WireMessage for DirectoryResponse {
    const MAX_BYTES: usize = MAX_CARDS_PER_PAGE * MAX_CARD_BYTES + 64;
}

/// A tracker telling a node about cards it just accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryPush {
    /// The new or updated cards.
    pub cards: Vec<PeerCard>,
}

impl WireMessage for DirectoryPush {
    const MAX_BYTES: usize = MAX_CARDS_PER_PAGE * MAX_CARD_BYTES + 64;
}

/// A node's acknowledgement of a push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryPushAck {
    /// How many of the pushed cards were new to the node.
    pub accepted: u32,
}

impl WireMessage for DirectoryPushAck {
    const MAX_BYTES: usize = 32;
}
