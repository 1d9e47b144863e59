//! What the REPL and the API ask the node, and what it answers: plain data, serialised
//! as the JSON API's documented shapes (amounts as decimal strings, hashes and keys as
//! lowercase hex).

use raclette_protocol::{Amount, BlockHash};
use serde::Serialize;
use tokio::sync::oneshot;

/// A mistake by the user or a refusal, in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Bad input: a 400.
    #[error("{0}")]
    Invalid(String),
    /// Nothing by that name or id: a 404.
    #[error("{0}")]
    NotFound(String),
    /// The node is shutting down or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// Which block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockId {
    /// By height on the best chain.
    Height(u64),
    /// By hash.
    Hash(BlockHash),
}

/// A question or order for the node, with its reply channel.
#[derive(Debug)]
pub enum Request {
    /// `status`.
    Status(oneshot::Sender<StatusView>),
    /// `whoami`.
    WhoAmI(oneshot::Sender<WhoAmIView>),
    /// `peers`.
    Peers(oneshot::Sender<Vec<PeerView>>),
    /// `send`.
    Send {
        /// Receiver's name.
        to: String,
        /// Amount.
        amount: Amount,
        /// Text.
        message: String,
        /// Fee, or the default.
        fee: Option<Amount>,
        /// The answer.
        reply: oneshot::Sender<Result<SendView, UserError>>,
    },
    /// `mine`.
    Mine {
        /// Heights to try.
        blocks: u32,
        /// The answer, when done.
        reply: oneshot::Sender<Result<MineView, UserError>>,
    },
    /// `balance`.
    Balance {
        /// A peer's name, or `None` for this node.
        name: Option<String>,
        /// The answer.
        reply: oneshot::Sender<Result<BalanceView, UserError>>,
    },
    /// `inbox`.
    Inbox(oneshot::Sender<Vec<InboxItem>>),
    /// `mempool`.
    Mempool(oneshot::Sender<Vec<MempoolItem>>),
    /// `chain`.
    Blocks {
        /// Highest height to list (default: the tip).
        from: Option<u64>,
        /// How many.
        limit: usize,
        /// The answer.
        reply: oneshot::Sender<Vec<BlockSummary>>,
    },
    /// `block`.
    Block {
        /// Which.
        id: BlockId,
        /// The answer.
        reply: oneshot::Sender<Result<BlockView, UserError>>,
    },
    /// Stop mining; answers whether a session was running.
    StopMining(oneshot::Sender<bool>),
    /// One transaction by id, pending or confirmed.
    Transaction {
        /// Its id.
        txid: raclette_protocol::TxId,
        /// The answer.
        reply: oneshot::Sender<Result<TransactionView, UserError>>,
    },
    /// Refuse (or accept again) every connection with a peer.
    Ban {
        /// The peer's name.
        name: String,
        /// Block or unblock.
        blocked: bool,
        /// The answer.
        reply: oneshot::Sender<Result<(), UserError>>,
    },
    /// `quit`: stop cleanly.
    Shutdown(oneshot::Sender<()>),
    /// Bring the gauges of `GET /metrics` up to date.
    RefreshMetrics(oneshot::Sender<()>),
}

/// `GET /api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// This node's name.
    pub name: String,
    /// Network id.
    pub network: String,
    /// Network name (`dev`, `main`, ...).
    pub network_name: String,
    /// Best height.
    pub height: u64,
    /// Best tip hash.
    pub tip: String,
    /// Cumulative work (decimal).
    pub work: String,
    /// Difficulty relative to the network minimum.
    pub difficulty: f64,
    /// Connected peers.
    pub peers: usize,
    /// Peers in this node's copy of the directory, connected or not.
    pub known_peers: usize,
    /// Whether the node is catching up.
    pub syncing: bool,
    /// The best height a peer announced.
    pub best_known_height: u64,
    /// Trackers and whether they are connected.
    pub trackers: Vec<TrackerView>,
    /// Pending transactions.
    pub mempool: usize,
    /// Whether the miner is running.
    pub mining: bool,
    /// The miner's hash rate, hashes per second (0 when not mining).
    pub hash_rate: f64,
    /// Transfers waiting for their receiver to come online.
    pub outbox: usize,
    /// What AutoNAT found: `public`, `private` (behind a NAT) or `unknown`.
    pub reachability: &'static str,
}

/// A tracker in the status.
#[derive(Debug, Clone, Serialize)]
pub struct TrackerView {
    /// Its PeerId.
    pub peer_id: String,
    /// Whether connected now.
    pub connected: bool,
}

/// `whoami`.
#[derive(Debug, Clone, Serialize)]
pub struct WhoAmIView {
    /// Name.
    pub name: String,
    /// PeerId.
    pub peer_id: String,
    /// Public key (hex).
    pub key: String,
    /// Dialable addresses.
    pub addresses: Vec<String>,
    /// Confirmed balance.
    pub confirmed: String,
    /// Balance once pending transactions are mined.
    pub pending: String,
}

/// `GET /api/peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// Name.
    pub name: String,
    /// Public key (hex).
    pub key: String,
    /// PeerId.
    pub peer_id: String,
    /// Whether connected now.
    pub connected: bool,
    /// `direct`, `relayed`, or null.
    pub link: Option<&'static str>,
    /// Addresses from its card.
    pub addresses: Vec<String>,
    /// Last time it was connected or announced, Unix ms: now while it is connected.
    pub last_seen: u64,
    /// Other keys (short) that claim the same name at some tracker; the name stays with
    /// the key this node saw first.
    pub also_claimed_by: Vec<String>,
}

/// `POST /api/send`.
#[derive(Debug, Clone, Serialize)]
pub struct SendView {
    /// The transaction id.
    pub txid: String,
    /// `accepted` (by the receiver) or `broadcast` (receiver unreachable).
    pub status: &'static str,
    /// Other keys (short) that claim the receiver's name too; it went to the key first
    /// seen with the name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_claimed_by: Vec<String>,
}

/// `POST /api/mine`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MineView {
    /// Blocks this node mined.
    pub mined: Vec<MinedBlock>,
    /// Heights another peer won.
    pub lost: Vec<LostBlock>,
}

/// A block this node mined.
#[derive(Debug, Clone, Serialize)]
pub struct MinedBlock {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: String,
}

/// A height another peer won.
#[derive(Debug, Clone, Serialize)]
pub struct LostBlock {
    /// The height.
    pub height: u64,
    /// Who mined the block that won (name, or short key if unknown).
    pub winner: String,
}

/// `GET /api/balance/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceView {
    /// Whose.
    pub name: String,
    /// Confirmed balance.
    pub confirmed: String,
    /// Balance once pending transactions are mined.
    pub pending: String,
}

/// `GET /api/inbox`.
#[derive(Debug, Clone, Serialize)]
pub struct InboxItem {
    /// Transaction id.
    pub txid: String,
    /// Sender (name, or short key if unknown).
    pub from: String,
    /// Amount.
    pub amount: String,
    /// Decrypted text.
    pub message: String,
    /// Height of the block holding it; null while pending.
    pub height: Option<u64>,
    /// When it arrived, Unix ms.
    pub received: u64,
}

/// `GET /api/mempool`.
#[derive(Debug, Clone, Serialize)]
pub struct MempoolItem {
    /// Transaction id.
    pub txid: String,
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Amount.
    pub amount: String,
    /// Fee.
    pub fee: String,
    /// When this node first accepted it, Unix ms.
    pub received: u64,
}

/// `GET /api/blocks`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockSummary {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: String,
    /// Miner (name, or short key if unknown).
    pub miner: String,
    /// Number of transactions, coinbase included.
    pub txs: usize,
    /// Timestamp, Unix ms.
    pub time: u64,
}

/// `GET /api/block/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockView {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: String,
    /// Parent hash.
    pub prev: String,
    /// Miner.
    pub miner: String,
    /// Timestamp, Unix ms.
    pub time: u64,
    /// Compact target.
    pub bits: String,
    /// Nonce.
    pub nonce: u64,
    /// Whether on the best chain.
    pub best_chain: bool,
    /// When this node first had it, Unix ms.
    pub received: u64,
    /// Transactions.
    pub transactions: Vec<TxView>,
}

/// `GET /api/tx/{txid}`.
#[derive(Debug, Clone, Serialize)]
pub struct TransactionView {
    /// Transaction id (written once, by the flattened transaction).
    #[serde(skip_serializing)]
    pub txid: String,
    /// `pending` or `confirmed`.
    pub status: &'static str,
    /// Height of the block holding it, if confirmed.
    pub height: Option<u64>,
    /// The transaction.
    #[serde(flatten)]
    pub transaction: TxView,
}

/// A transaction in a block view.
#[derive(Debug, Clone, Serialize)]
pub struct TxView {
    /// Id.
    pub txid: String,
    /// `coinbase` or `transfer`.
    pub kind: &'static str,
    /// Sender (transfers).
    pub from: Option<String>,
    /// Receiver.
    pub to: String,
    /// Amount.
    pub amount: String,
    /// Fee (transfers).
    pub fee: Option<String>,
    /// Text, if this node can read it.
    pub message: Option<String>,
}

/// Amounts and hashes as the API writes them everywhere: decimal and hex strings.
fn as_text<S: serde::Serializer, T: std::fmt::Display>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Something that happened, for the REPL to print above its prompt and for the web page's
/// event stream (`GET /api/events`: JSON with the variant's name in `kind`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// A transfer to this node arrived.
    Received {
        /// Sender's name.
        from: String,
        /// Amount (a decimal string in JSON, as everywhere in the API).
        #[serde(serialize_with = "as_text")]
        amount: Amount,
        /// Text.
        text: String,
        /// The block that holds it; none while it is pending.
        height: Option<u64>,
    },
    /// The best tip moved, for whatever reason.
    Tip {
        /// Its height.
        height: u64,
        /// Its hash.
        #[serde(serialize_with = "as_text")]
        hash: BlockHash,
    },
    /// Another peer's block joined the best chain.
    BlockFromPeer {
        /// Miner's name.
        miner: String,
        /// Height.
        height: u64,
    },
    /// This node's miner is working.
    Mining {
        /// Height it is mining.
        height: u64,
        /// Hash rate, hashes per second.
        rate: f64,
    },
    /// This node mined a block.
    Mined {
        /// Height.
        height: u64,
        /// Hash.
        #[serde(serialize_with = "as_text")]
        hash: BlockHash,
    },
    /// Another peer won the height this node was mining.
    Lost {
        /// Height.
        height: u64,
        /// Winner.
        winner: String,
    },
    /// The best chain switched branches.
    Reorganized {
        /// Blocks taken off.
        disconnected: usize,
        /// Blocks put on.
        connected: usize,
    },
    /// Catching up with peers.
    Syncing {
        /// Height reached.
        height: u64,
        /// Height to reach.
        target: u64,
    },
    /// Caught up.
    Synced {
        /// Height reached.
        height: u64,
    },
    /// A peer joined or updated its card.
    PeerJoined {
        /// Its name.
        name: String,
    },
    /// A tracker refused this node's name: the node stops.
    NameRefused {
        /// The tracker's reason.
        reason: String,
    },
    /// One tracker gives this node's name to another key; others still hold it for us.
    NameContested {
        /// Which tracker, and what it said.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_notices_then_their_json_names_the_kind_and_writes_amounts_and_hashes_as_text() {
        let hash: BlockHash = format!("{}01", "00".repeat(31)).parse().unwrap();
        let mined = serde_json::to_value(Notice::Mined { height: 4, hash }).unwrap();
        assert_eq!(
            mined,
            serde_json::json!({"kind": "mined", "height": 4, "hash": hash.to_string()})
        );
        let received = Notice::Received {
            from: "bob".into(),
            amount: "2.5".parse().unwrap(),
            text: "hi".into(),
            height: None,
        };
        assert_eq!(
            serde_json::to_value(received).unwrap(),
            serde_json::json!({"kind": "received", "from": "bob", "amount": "2.5", "text": "hi", "height": null})
        );
    }
}
