//! Every wire message round-trips through canonical CBOR; tampering, truncation,
//! garbage and oversized input give typed errors and never panic.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use proptest::prelude::*;
use raclette_protocol::directory::PeerCard;
use raclette_protocol::encryption::{EncryptedMessage, encrypt};
use raclette_protocol::wire::{
    ChainStatus, DirectRequest, DirectResponse, DirectoryPush, DirectoryPushAck, DirectoryRequest,
    DirectoryResponse, SyncRequest, SyncResponse,
};
use raclette_protocol::{
    Amount, Block, BlockHash, BlockHeader, Coinbase, CompactTarget, DecodeError, Keypair,
    NetworkId, PeerName, Transaction, Transfer, WireMessage, Work,
};

fn keypair() -> impl Strategy<Value = Keypair> {
    any::<[u8; 32]>()
        .prop_filter_map("valid scalar", |bytes| Keypair::from_secret_bytes(bytes).ok())
}

fn hash() -> impl Strategy<Value = BlockHash> {
    any::<[u8; 32]>().prop_map(BlockHash::from_bytes)
}

fn network() -> impl Strategy<Value = NetworkId> {
    any::<[u8; 32]>().prop_map(NetworkId::from_bytes)
}

fn message() -> impl Strategy<Value = EncryptedMessage> {
    (any::<[u8; 16]>(), proptest::collection::vec(any::<u8>(), 16..80))
        .prop_map(|(salt, ciphertext)| EncryptedMessage { salt, ciphertext })
}

fn transfer() -> impl Strategy<Value = Transfer> {
    (keypair(), keypair(), network(), any::<u64>(), any::<u64>(), any::<u64>(), message()).prop_map(
        |(from, to, network, amount, fee, nonce, message)| {
            Transfer::sign(
                &from,
                network,
                to.public(),
                Amount::from_units(amount),
                Amount::from_units(fee),
                nonce,
                message,
            )
        },
    )
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        hash(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(version, bits, height, prev, merkle_root, time_ms, nonce)| BlockHeader {
            version,
            bits: CompactTarget(bits),
            height,
            prev,
            merkle_root,
            time_ms,
            nonce,
        })
}

fn coinbase() -> impl Strategy<Value = Coinbase> {
    (any::<u64>(), keypair(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
        |(height, to, amount, memo)| Coinbase {
            height,
            to: to.public(),
            amount: Amount::from_units(amount),
            memo,
        },
    )
}

fn block() -> impl Strategy<Value = Block> {
    let transaction = prop_oneof![
        coinbase().prop_map(Transaction::Coinbase),
        transfer().prop_map(Transaction::Transfer),
    ];
    (header(), proptest::collection::vec(transaction, 0..4))
        .prop_map(|(header, transactions)| Block { header, transactions })
}

fn status() -> impl Strategy<Value = ChainStatus> {
    (network(), any::<u64>(), hash(), any::<[u8; 32]>()).prop_map(|(network, height, tip, work)| {
        ChainStatus { network, height, tip, work: Work::from_be_bytes(work) }
    })
}

fn name() -> impl Strategy<Value = PeerName> {
    "[A-Za-z0-9_-]{1,32}".prop_map(|text| PeerName::new(&text).expect("regex matches the rule"))
}

fn card() -> impl Strategy<Value = PeerCard> {
    (
        keypair(),
        network(),
        name(),
        proptest::collection::vec("/ip4/[0-9.]{7,15}/tcp/[0-9]{1,5}", 0..4),
        any::<u64>(),
    )
        .prop_map(|(key, network, name, addresses, seq)| {
            PeerCard::sign(&key, network, name, addresses, seq)
        })
}

fn reason() -> impl Strategy<Value = String> {
    "[ -~]{0,80}"
}

/// Encode, decode, compare; then every strict prefix must fail to decode.
fn round_trip<T: WireMessage + PartialEq + std::fmt::Debug>(
    value: &T,
) -> Result<(), TestCaseError> {
    let bytes = value.encode();
    prop_assert_eq!(&T::decode(&bytes)?, value);
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        prop_assert!(T::decode(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
    }
    let mut extended = bytes.clone();
    extended.push(0);
    prop_assert!(T::decode(&extended).is_err(), "trailing byte accepted");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transfers_round_trip(tx in transfer()) { round_trip(&tx)?; }

    #[test]
    fn blocks_round_trip(block in block()) { round_trip(&block)?; }

    #[test]
    fn direct_messages_round_trip(tx in transfer(), reason in reason()) {
        round_trip(&DirectRequest { transfer: tx })?;
        round_trip(&DirectResponse::Accepted)?;
        round_trip(&DirectResponse::Rejected { reason })?;
    }

    #[test]
    fn sync_messages_round_trip(
        status in status(),
        locator in proptest::collection::vec(hash(), 0..64),
        limit in any::<u32>(),
        headers in proptest::collection::vec(header(), 0..20),
        blocks in proptest::collection::vec(block(), 0..3),
        reason in reason(),
    ) {
        round_trip(&SyncRequest::Status(status.clone()))?;
        round_trip(&SyncRequest::Headers { locator: locator.clone(), limit })?;
        round_trip(&SyncRequest::Blocks { hashes: locator.into_iter().take(16).collect() })?;
        round_trip(&SyncResponse::Status(status))?;
        round_trip(&SyncResponse::Headers(headers))?;
        round_trip(&SyncResponse::Blocks(blocks))?;
        round_trip(&SyncResponse::Refused { reason })?;
    }

    #[test]
    fn directory_messages_round_trip(cards in proptest::collection::vec(card(), 0..4), after in proptest::option::of("[a-z]{1,10}"), limit in any::<u32>(), more in any::<bool>(), reason in reason(), accepted in any::<u32>()) {
        for card in &cards {
            round_trip(&DirectoryRequest::Register(card.clone()))?;
            round_trip(&DirectoryRequest::Lookup { network: card.network, name: card.name.clone() })?;
        }
        round_trip(&DirectoryRequest::List { network: NetworkId::ZERO, after, limit })?;
        round_trip(&DirectoryResponse::Registered)?;
        for card in &cards {
            round_trip(&DirectoryResponse::NameTaken { name: card.name.clone() })?;
        }
        round_trip(&DirectoryResponse::Refused { reason })?;
        round_trip(&DirectoryResponse::Cards { cards: cards.clone(), more })?;
        round_trip(&DirectoryPush { cards })?;
        round_trip(&DirectoryPushAck { accepted })?;
    }

    #[test]
    fn flipping_any_bit_of_a_signed_transfer_breaks_it(tx in transfer(), index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = tx.encode();
        let at = index.index(bytes.len());
        bytes[at] ^= 1 << bit;
        match Transfer::decode(&bytes) {
            Err(_) => {}
            Ok(changed) => prop_assert!(
                changed.verify_signature().is_err(),
                "byte {} flipped and the transfer still verifies", at
            ),
        }
    }

    #[test]
    fn garbage_never_panics_and_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Any result is fine as long as there is one; random bytes are almost never a
        // canonical message, and when they are, re-encoding must give them back.
        if let Ok(block) = Block::decode(&bytes) { prop_assert_eq!(block.encode(), bytes.clone()); }
        if let Ok(tx) = Transfer::decode(&bytes) { prop_assert_eq!(tx.encode(), bytes.clone()); }
        let _ = SyncRequest::decode(&bytes);
        let _ = SyncResponse::decode(&bytes);
        let _ = DirectoryRequest::decode(&bytes);
        let _ = DirectoryResponse::decode(&bytes);
        let _ = DirectRequest::decode(&bytes);
    }
}

#[test]
fn given_message_over_its_limit_when_decoded_then_oversized_without_parsing() {
    let bytes = vec![0u8; Transfer::MAX_BYTES + 1];
    assert_eq!(
        Transfer::decode(&bytes),
        Err(DecodeError::Oversized { len: Transfer::MAX_BYTES + 1, max: Transfer::MAX_BYTES })
    );
    assert!(matches!(
        DirectoryRequest::decode(&vec![0u8; 9000]),
        Err(DecodeError::Oversized { .. })
    ));
}

#[test]
fn given_deeply_nested_cbor_when_decoded_then_error_not_stack_overflow() {
    // 100,000 nested one-element arrays.
    let bytes = vec![0x81u8; 100_000];
    assert!(matches!(SyncResponse::decode(&bytes), Err(DecodeError::Malformed(_))));
    let small = vec![0x81u8; 2000];
    assert!(matches!(SyncRequest::decode(&small), Err(DecodeError::Malformed(_))));
}

#[test]
fn given_length_prefix_claiming_huge_string_when_decoded_then_malformed() {
    // A map with key "transfer" whose value claims 2^63 bytes.
    let mut bytes = vec![0xa1, 0x68];
    bytes.extend_from_slice(b"transfer");
    bytes.extend_from_slice(&[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(DirectRequest::decode(&bytes), Err(DecodeError::Malformed(_))));
    // An array claiming 2^32 cards.
    let mut bytes = vec![0xa1, 0x65];
    bytes.extend_from_slice(b"cards");
    bytes.extend_from_slice(&[0x9a, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(DirectoryPush::decode(&bytes), Err(DecodeError::Malformed(_))));
}

#[test]
fn given_non_canonical_integer_when_decoded_then_refused() {
    // DirectoryPushAck { accepted: 1 } canonically is a1 68 "accepted" 01.
    let canonical = DirectoryPushAck { accepted: 1 }.encode();
    assert_eq!(*canonical.last().unwrap(), 0x01);
    let mut long_form = canonical[..canonical.len() - 1].to_vec();
    long_form.extend_from_slice(&[0x18, 0x01]); // 1 as a one-byte-argument integer
    assert_eq!(DirectoryPushAck::decode(&long_form), Err(DecodeError::NonCanonical));
}

#[test]
fn given_card_with_invalid_name_when_decoded_then_malformed() {
    let key = Keypair::from_secret_bytes([3; 32]).unwrap();
    let card = PeerCard::sign(&key, NetworkId::ZERO, PeerName::new("alice").unwrap(), vec![], 1);
    let bytes = DirectoryRequest::Register(card).encode();
    let text = b"alice";
    let at = bytes.windows(5).position(|w| w == text).unwrap();
    let mut bad = bytes.clone();
    bad[at] = b' ';
    assert!(matches!(DirectoryRequest::decode(&bad), Err(DecodeError::Malformed(_))));
}

#[test]
fn given_real_encrypted_transfer_when_round_tripped_then_still_verifies() {
    let alice = Keypair::from_secret_bytes([1; 32]).unwrap();
    let bob = Keypair::from_secret_bytes([2; 32]).unwrap();
    let message = encrypt(&alice, &bob.public(), [0; 16], b"hello").unwrap();
    let tx = Transfer::sign(
        &alice,
        NetworkId::ZERO,
        bob.public(),
        Amount::from_units(5),
        Amount::ZERO,
        0,
        message,
    );
    let decoded = Transfer::decode(&tx.encode()).unwrap();
    assert_eq!(decoded.verify_signature(), Ok(()));
    assert_eq!(decoded.txid(), tx.txid());
}
