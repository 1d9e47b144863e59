//! The properties that must hold for any bytes: decoding never panics, a value that
//! decodes is the canonical encoding of itself (PROTOCOL.md: one encoding per value),
//! and what the node does next with a decoded value keeps its own rules.

use std::fmt::Debug;

use libp2p::Multiaddr;
use raclette_node::chain::validate::check_proof_of_work;
use raclette_node::chain::{Imported, Placement};
use raclette_node::mempool::{Mempool, MempoolError};
use raclette_node::network::identity::{foreign_address, key_of, peer_id_of};
use raclette_node::network::is_relayed;
use raclette_node::repl::printable;
use raclette_node::store::Store;
use raclette_node::testkit::mine_on;
use raclette_protocol::encoding::{decode_canonical, to_canonical_cbor};
use raclette_protocol::{
    BlockHeader, DecodeError, NetworkParams, PeerCard, PeerName, Transaction, Transfer, TxId,
    WireMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fixture::{NOW_MS, fixture, shared_chain};

/// Decodes a wire message the way the node and the tracker do; when it decodes, checks
/// that it is canonical: it encodes back to exactly `bytes`, within its size limit, and
/// those bytes decode to the same value again.
pub fn decode_wire<T: WireMessage + PartialEq + Debug + Clone>(bytes: &[u8]) -> Option<T> {
    let decoded = T::decode(bytes);
    check_decoded(bytes, T::MAX_BYTES, decoded)
}

/// The same as [`decode_wire`] for the values that travel inside messages (a card, a
/// header), with the limit of the message that carries them.
pub fn decode_part<T>(bytes: &[u8], max: usize) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let decoded = decode_canonical::<T>(bytes, max);
    check_decoded(bytes, max, decoded)
}

fn check_decoded<T>(bytes: &[u8], max: usize, decoded: Result<T, DecodeError>) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    match decoded {
        Ok(value) => {
            let encoded = to_canonical_cbor(&value);
            assert_eq!(encoded, bytes, "a decoded value encodes to other bytes: {value:?}");
            assert!(bytes.len() <= max, "{} bytes decoded past the limit {max}", bytes.len());
            assert_eq!(decode_canonical::<T>(&encoded, max), Ok(value.clone()));
            Some(value)
        }
        Err(DecodeError::Oversized { len, max: limit }) => {
            assert!(len == bytes.len() && limit == max && len > max, "{len} > {limit}?");
            None
        }
        Err(_) => {
            assert!(bytes.len() <= max, "{} bytes were parsed past the limit {max}", bytes.len());
            None
        }
    }
}

/// Text from a peer, as the REPL and the web page show it, carries no control or
/// bidirectional character that could fake a line or recolour a terminal.
pub fn check_shown_text(text: &str) {
    // The characters that reorder text on terminals that show bidirectional text.
    let bidi = |c: char| {
        matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}')
            || matches!(c, '\u{2066}'..='\u{2069}')
    };
    let shown = printable(text);
    assert!(
        !shown.chars().any(|c| c.is_control() || bidi(c)),
        "printable({text:?}) still holds a control character: {shown:?}"
    );
}

/// What a node does with a transfer off the network: the stateless rules (for the
/// fixture's network and for the transfer's own, so the signature is reached), then
/// admission to a mempool over the fixture's chain, whose verdict is returned. What the
/// mempool takes must make a valid block.
pub fn check_transfer(transfer: &Transfer) -> Result<TxId, MempoolError> {
    let network = fixture().network();
    let _ = transfer.check_stateless(&network);
    let own = transfer.check_stateless(&transfer.network);
    let _ = transfer.total_cost();
    assert_eq!(transfer.txid(), Transaction::Transfer(transfer.clone()).txid());
    let chain = shared_chain();
    let reader = chain.store().reader().expect("a memory store does not fail");
    let mut mempool = Mempool::new(network);
    let admitted = mempool.add(&reader, transfer.clone(), NOW_MS);
    drop(reader);
    if let Ok(txid) = &admitted {
        assert_eq!(*txid, transfer.txid());
        assert!(own.is_ok() && transfer.network == network, "the mempool took a bad transfer");
        let selected = mempool.select();
        assert_eq!(selected, vec![transfer.clone()], "an admitted transfer is left out");
        let mut chain = fixture().chain();
        let block = mine_on(&chain, &chain.tip().hash(), &fixture().keys[0], selected, 0);
        let imported = chain.import_block(block, NOW_MS);
        assert!(
            matches!(imported, Ok(Imported { placement: Placement::BestChain, .. })),
            "a block with an admitted transfer is refused: {imported:?}"
        );
    }
    admitted
}

/// What a node does with a card from a tracker: its rules (for the fixture's network
/// and for the card's own, so the signature is reached), the name's own rules, the
/// PeerId the key stands for, and the addresses it would dial.
pub fn check_card(card: &PeerCard) {
    let _ = card.check(&fixture().network());
    let _ = card.check(&card.network);
    assert_eq!(PeerName::new(card.name.as_str()).as_ref(), Ok(&card.name));
    assert_eq!(card.name.key(), card.name.as_str().to_ascii_lowercase());
    // Every key that decodes is one libp2p takes: the node turns it into a PeerId with
    // an `expect`, and back.
    let peer = peer_id_of(&card.key);
    assert_eq!(key_of(&peer), Some(card.key), "the PeerId of {} is {peer}", card.key);
    let _ = foreign_address(card);
    for text in &card.addresses {
        if let Ok(address) = text.parse::<Multiaddr>() {
            let _ = is_relayed(&address);
            let _ = address.iter().next().map(|first| first.to_string());
        }
    }
}

/// The arithmetic a header's fields go through anywhere: its hash, its compact target
/// and the work it stands for, the proof-of-work check of each built-in network, and a
/// retarget window ending at this header that started at `first_time_ms`.
pub fn check_header(header: &BlockHeader, first_time_ms: u64) {
    assert_eq!(BlockHeader::from_bytes(&header.to_bytes()), *header);
    let hash = header.hash();
    let networks = [NetworkParams::dev(), NetworkParams::main(), fixture().params.clone()];
    for params in &networks {
        let _ = check_proof_of_work(params, header);
        let required = params.retarget_bits(header.bits, first_time_ms, header.time_ms);
        let target = required.to_target().expect("a retarget gives a valid compact target");
        assert!(target <= params.pow_limit(), "retarget went past the limit: {required}");
        let _ = target.difficulty(params.pow_limit());
    }
    if let Ok(target) = header.bits.to_target() {
        // A target that came from a compact value has a compact form of its own.
        assert_eq!(target.to_compact().to_target(), Ok(target), "bits {}", header.bits);
        let _ = target.is_met_by(&hash);
        assert!(target.work() > raclette_protocol::Work::ZERO);
    }
}
