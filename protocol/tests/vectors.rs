//! The test vectors of PROTOCOL.md, computed here and compared with the document.
//!
//! PROTOCOL.md holds each vector in a fenced block whose info string is `hex NAME` (bytes)
//! or `text NAME` (lines of values: a rule's inputs and what the code computes from them).
//! This test recomputes every vector and checks the document holds exactly these, so the
//! document and the code cannot drift apart. `RACLETTE_PRINT_VECTORS=1 cargo test -p
//! raclette-protocol --test vectors -- --nocapture` prints them for pasting.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::fmt::Write as _;

use raclette_protocol::amount::ParseAmountError;
use raclette_protocol::block::merkle_root;
use raclette_protocol::directory::{MAX_CARD_BYTES, PEER_CARD_SIGHASH_TAG};
use raclette_protocol::encoding::{decode_canonical, to_canonical_cbor};
use raclette_protocol::encryption::{EncryptedMessage, encrypt};
use raclette_protocol::hash::{sha256, tagged_hash};
use raclette_protocol::params::MEDIAN_TIME_BLOCKS;
use raclette_protocol::pow::CompactTargetError;
use raclette_protocol::transaction::TRANSFER_SIGHASH_TAG;
use raclette_protocol::wire::{
    ChainStatus, DirectRequest, DirectResponse, DirectoryPush, DirectoryPushAck, DirectoryRequest,
    DirectoryResponse, SyncRequest, SyncResponse,
};
use raclette_protocol::{
    Amount, CompactTarget, Keypair, NetworkId, NetworkParams, PeerCard, PeerName, PublicKey,
    Target, Transaction, Transfer, TxId, WireMessage,
};
use serde::Serialize;

/// A vector as PROTOCOL.md shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Vector {
    /// Bytes, as lowercase hex without whitespace.
    Hex(String),
    /// Lines of text, each without trailing whitespace, joined by `\n`.
    Text(String),
}

fn hex(bytes: impl AsRef<[u8]>) -> Vector {
    Vector::Hex(hex::encode(bytes))
}

fn text(lines: impl IntoIterator<Item = String>) -> Vector {
    Vector::Text(lines.into_iter().map(|l| l.trim_end().to_owned()).collect::<Vec<_>>().join("\n"))
}

fn test_key(name: &str) -> Keypair {
    Keypair::from_secret_bytes(sha256(name.as_bytes()))
        .expect("a SHA-256 output is a valid scalar here")
}

/// The PeerId of an account key as PROTOCOL.md §2 states libp2p builds it: the identity
/// multihash (code 0x00, length 0x25) of the protobuf `PublicKey { Type: Secp256k1 (2),
/// Data: the 33-byte compressed key }`. The node gets it from libp2p
/// (`network::identity::peer_id_of`); the §2 vector pins the bytes both must produce.
fn peer_id_bytes(key: &PublicKey) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x25, 0x08, 0x02, 0x12, 0x21];
    bytes.extend_from_slice(&key.to_bytes());
    bytes
}

/// Base58 with Bitcoin's alphabet, no checksum: the text form of a PeerId.
fn base58btc(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u8> = Vec::new(); // base 58, least significant first
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in &mut digits {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let mut out = "1".repeat(zeros);
    out.extend(digits.iter().rev().map(|&d| char::from(ALPHABET[usize::from(d)])));
    out
}

/// The median time past of §5.4 over the times of the previous blocks (oldest first):
/// the upper middle of the sorted list. The node's `chain::validate::median_time` is the
/// code this mirrors; the §17 vector pins what both must give.
fn median_time_past(times: &[u64]) -> u64 {
    assert!(!times.is_empty() && times.len() <= MEDIAN_TIME_BLOCKS);
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// The byte and message vectors of §17.
fn encoding_vectors() -> Vec<(&'static str, Vector)> {
    let dev = NetworkParams::dev();
    let main = NetworkParams::main();
    let genesis = dev.genesis();
    let network = dev.network_id();
    let (alice, bob) = (test_key("alice"), test_key("bob"));
    let salt: [u8; 16] = core::array::from_fn(|i| i as u8);
    let message = encrypt(&alice, &bob.public(), salt, b"hello bob").expect("short text");
    let transfer = Transfer::sign(
        &alice,
        network,
        bob.public(),
        "10".parse::<Amount>().expect("amount"),
        "0.001".parse::<Amount>().expect("amount"),
        0,
        message.clone(),
    );
    let alice_peer_id = base58btc(&peer_id_bytes(&alice.public()));
    let alice_name = PeerName::new("alice").expect("valid");
    let card = PeerCard::sign(
        &alice,
        network,
        alice_name.clone(),
        vec![format!("/ip4/192.0.2.7/tcp/4001/p2p/{alice_peer_id}")],
        1,
    );
    let status = ChainStatus {
        network,
        height: 0,
        tip: genesis.hash(),
        work: genesis.header.bits.to_target().expect("valid").work(),
    };
    let ids: Vec<TxId> = (0u8..3).map(|i| TxId::from_bytes([i; 32])).collect();
    vec![
        ("dev-params", hex(to_canonical_cbor(&dev))),
        ("dev-params-hash", hex(dev.params_hash().to_bytes())),
        ("dev-genesis-header", hex(genesis.header.to_bytes())),
        ("dev-genesis-hash", hex(genesis.hash().to_bytes())),
        ("dev-genesis-block", hex(genesis.encode())),
        ("main-genesis-hash", hex(main.genesis().hash().to_bytes())),
        ("alice-secret", hex(alice.secret_bytes())),
        ("alice-public", hex(alice.public().to_bytes())),
        ("alice-peer-id", hex(peer_id_bytes(&alice.public()))),
        ("alice-peer-id-text", text([alice_peer_id])),
        ("bob-public", hex(bob.public().to_bytes())),
        ("message-ciphertext", hex(&message.ciphertext)),
        ("transfer-sighash", hex(transfer.sighash())),
        ("transfer-signature", hex(transfer.signature.to_bytes())),
        ("transfer", hex(transfer.encode())),
        (
            "transfer-as-transaction",
            hex(to_canonical_cbor(&Transaction::Transfer(transfer.clone()))),
        ),
        ("transfer-txid", hex(transfer.txid().to_bytes())),
        ("merkle-root-3", hex(merkle_root(&ids))),
        ("peer-card-sighash", hex(card.sighash())),
        ("peer-card", hex(to_canonical_cbor(&card))),
        ("direct-request", hex(DirectRequest { transfer: transfer.clone() }.encode())),
        ("direct-accepted", hex(DirectResponse::Accepted.encode())),
        (
            "direct-rejected",
            hex(DirectResponse::Rejected { reason: "fee below the minimum relay fee".into() }
                .encode()),
        ),
        ("sync-status", hex(SyncRequest::Status(status).encode())),
        (
            "sync-headers-request",
            hex(SyncRequest::Headers { locator: vec![genesis.hash()], limit: 2000 }.encode()),
        ),
        ("sync-headers-response", hex(SyncResponse::Headers(vec![genesis.header]).encode())),
        ("sync-blocks-request", hex(SyncRequest::Blocks { hashes: vec![genesis.hash()] }.encode())),
        ("sync-blocks-response", hex(SyncResponse::Blocks(vec![genesis.clone()]).encode())),
        (
            "sync-refused",
            hex(SyncResponse::Refused { reason: "too many sync requests at once".into() }.encode()),
        ),
        ("directory-register", hex(DirectoryRequest::Register(card.clone()).encode())),
        (
            "directory-list-first",
            hex(DirectoryRequest::List { network, after: None, limit: 256 }.encode()),
        ),
        (
            "directory-list-next",
            hex(DirectoryRequest::List { network, after: Some("alice".into()), limit: 256 }
                .encode()),
        ),
        (
            "directory-lookup",
            hex(DirectoryRequest::Lookup { network, name: alice_name.clone() }.encode()),
        ),
        ("directory-registered", hex(DirectoryResponse::Registered.encode())),
        ("directory-name-taken", hex(DirectoryResponse::NameTaken { name: alice_name }.encode())),
        (
            "directory-refused",
            hex(DirectoryResponse::Refused { reason: "card signature does not verify".into() }
                .encode()),
        ),
        (
            "directory-cards",
            hex(DirectoryResponse::Cards { cards: vec![card.clone()], more: false }.encode()),
        ),
        ("directory-push", hex(DirectoryPush { cards: vec![card] }.encode())),
        ("directory-push-ack", hex(DirectoryPushAck { accepted: 1 }.encode())),
    ]
}

/// The rule vectors of §17: inputs and what the code computes from them, one per line.
fn rule_vectors() -> Vec<(&'static str, Vector)> {
    let dev = NetworkParams::dev();
    let main = NetworkParams::main();

    let target = |hex_be: &str| {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(format!("{hex_be:0>64}"), &mut bytes).expect("test hex");
        Target::from_be_bytes(bytes)
    };
    let compact_from_target = [
        "1ffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // dev initial (2^233 - 1)
        "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // main pow limit
        "ffff0000000000000000000000000000000000000000000000000000",    // Bitcoin's genesis
        "123456789abcdef0123456789abcdef0123456789abcdef",             // rounds down
        "80ff0000000000000000000000000000000000000000000000",          // top bit: shifted
        &"f".repeat(64),                                               // the largest
        "800000",
        "1234",
        "12",
    ]
    .map(|t| {
        let t = target(t);
        format!("{}  {:08x}", hex::encode(t.to_be_bytes()), t.to_compact().0)
    });

    let decoded = |bits: u32| match CompactTarget(bits).to_target() {
        Ok(t) => hex::encode(t.to_be_bytes()),
        Err(CompactTargetError::Negative(_)) => "invalid: negative".into(),
        Err(CompactTargetError::Overflow(_)) => "invalid: overflows 256 bits".into(),
        Err(CompactTargetError::Zero(_)) => "invalid: zero".into(),
    };
    let compact_to_target = [
        0x1e01ffff, 0x1d00ffff, 0x1e00ff00, 0x1f0000ff, 0x2100ffff, 0x22000001, 0x01123456,
        0x02008000, 0x04800001, 0x00800000, 0x22010000, 0x23000001, 0x03000000, 0x010000ff,
    ]
    .map(|bits: u32| format!("{bits:08x}  {}", decoded(bits)));

    let work = [0x1e01ffff_u32, 0x1e0fffff, 0x1f0fffff, 0x1d00ffff, 0x22000001, 0x2100ffff]
        .map(|bits| format!("{bits:08x}  {}", CompactTarget(bits).to_target().unwrap().work()));

    // Windows ending at dev's height 9, checked at height 10: first and last block times.
    let start = dev.genesis_time_ms;
    let retarget = [
        (dev.initial_bits.0, start, start + 9_000), // on time: 9 intervals of 1 s
        (dev.initial_bits.0, start, start + 18_000), // twice as slow
        (dev.initial_bits.0, start, start + 4_500), // twice as fast
        (dev.initial_bits.0, start, start + 12_345), // rounding down to compact form
        (dev.initial_bits.0, start, start + 1_000), // faster than 4x: clamped to 2250
        (dev.initial_bits.0, start, start + 100_000), // slower than 4x: clamped to 36000
        (dev.initial_bits.0, start + 5_000, start), // last before first: 0, clamped
        (dev.pow_limit_bits.0, start, start + 18_000), // capped at pow_limit
        (0x1d7fffff, start, start + 9_001),         // a mantissa that overflows into E+1
    ]
    .map(|(bits, first, last)| {
        let required = dev.retarget_bits(CompactTarget(bits), first, last);
        format!("{bits:08x}  {first}  {last}  {:08x}", required.0)
    });

    let median = [
        vec![1_000],
        vec![1_000, 2_000],
        vec![1_000, 3_000, 2_000, 4_000],
        vec![1_000, 1_000, 1_000, 2_000],
        vec![1_000, 3_000, 2_000, 5_000, 4_000, 11_000, 6_000, 8_000, 7_000, 10_000, 9_000],
        vec![9_000, 9_000, 1_000, 1_000, 1_000, 1_000, 9_000, 9_000, 9_000, 9_000, 1_000],
    ]
    .map(|times| {
        let list: Vec<String> = times.iter().map(u64::to_string).collect();
        format!("{}  ->  {}", list.join(" "), median_time_past(&times))
    });

    let halving = main.halving_interval;
    let reward = [
        (&main, 0),
        (&main, halving - 1),
        (&main, halving),
        (&main, 2 * halving),
        (&main, 3 * halving),
        (&main, 32 * halving),
        (&main, 33 * halving),
        (&main, 64 * halving),
        (&dev, 1),
        (&dev, 1_000_000_000),
    ]
    .map(|(params, height)| {
        let reward = params.reward_at(height);
        format!("{:<4}  {height:>10}  {:>10}  {reward}", params.name, reward.units())
    });

    let amount_display = [0, 1, 10, 50_000_000, 100_000_000, 525_000_000, 100_001, u64::MAX]
        .map(|units| format!("{units:>20}  {}", Amount::from_units(units)));
    let amount_parse = [
        "5",
        "5.25",
        "5.250",
        "0.00000001",
        "0.001",
        ".5",
        "7.",
        "007.10",
        "184467440737.09551615",
        "184467440737.09551616",
        "184467440738",
        "0.000000001",
        "1.000000000",
        "",
        ".",
        "-1",
        "+1",
        " 1",
        "1e5",
        "1,5",
        "1.2.3",
    ]
    .map(|input| {
        let parsed = match input.parse::<Amount>() {
            Ok(amount) => amount.units().to_string(),
            Err(ParseAmountError::Empty) => "invalid: empty".into(),
            Err(ParseAmountError::NotANumber(_)) => "invalid: not a number".into(),
            Err(ParseAmountError::TooPrecise(_)) => "invalid: more than 8 decimals".into(),
            Err(ParseAmountError::TooLarge(_)) => "invalid: too large".into(),
        };
        let quoted = format!("\"{input}\"");
        format!("{quoted:<24}  {parsed}")
    });

    vec![
        ("compact-from-target", text(compact_from_target)),
        ("compact-to-target", text(compact_to_target)),
        ("work", text(work)),
        ("retarget-dev", text(retarget)),
        ("median-time-past", text(median)),
        ("reward", text(reward)),
        ("amount-display", text(amount_display)),
        ("amount-parse", text(amount_parse)),
    ]
}

fn vectors() -> Vec<(&'static str, Vector)> {
    let mut all = encoding_vectors();
    all.extend(rule_vectors());
    all
}

/// Every ```` ```hex NAME ```` and ```` ```text NAME ```` block of PROTOCOL.md.
fn document_vectors() -> BTreeMap<String, Vector> {
    let document = include_str!("../../PROTOCOL.md");
    let mut found = BTreeMap::new();
    let mut lines = document.lines();
    while let Some(line) = lines.next() {
        let Some((kind, name)) = line.strip_prefix("```").and_then(|info| info.split_once(' '))
        else {
            continue;
        };
        let body = lines.by_ref().take_while(|l| !l.starts_with("```"));
        let vector = match kind {
            "hex" => {
                Vector::Hex(body.flat_map(|l| l.chars().filter(|c| !c.is_whitespace())).collect())
            }
            "text" => text(body.map(str::to_owned)),
            _ => continue,
        };
        let previous = found.insert(name.trim().to_owned(), vector);
        assert!(previous.is_none(), "vector {name} appears twice in PROTOCOL.md");
    }
    found
}

fn print_for_pasting(vectors: &[(&str, Vector)]) {
    let mut out = String::new();
    for (name, vector) in vectors {
        match vector {
            Vector::Hex(value) => {
                writeln!(out, "```hex {name}").unwrap();
                for chunk in value.as_bytes().chunks(64) {
                    writeln!(out, "{}", std::str::from_utf8(chunk).expect("hex is ascii")).unwrap();
                }
            }
            Vector::Text(value) => writeln!(out, "```text {name}\n{value}").unwrap(),
        }
        writeln!(out, "```\n").unwrap();
    }
    print!("{out}");
}

#[test]
fn given_protocol_document_then_every_vector_matches_the_code() {
    let computed = vectors();
    if std::env::var_os("RACLETTE_PRINT_VECTORS").is_some() {
        print_for_pasting(&computed);
    }
    let documented = document_vectors();
    for (name, value) in &computed {
        assert_eq!(documented.get(*name), Some(value), "vector {name} in PROTOCOL.md");
    }
    assert_eq!(documented.len(), computed.len(), "PROTOCOL.md has vectors the test does not check");
}

fn documented_bytes(name: &str) -> Vec<u8> {
    match &document_vectors()[name] {
        Vector::Hex(value) => hex::decode(value).expect("hex"),
        Vector::Text(_) => panic!("vector {name} is not bytes"),
    }
}

#[test]
fn given_vector_transfer_then_bob_reads_it_and_signature_verifies() {
    let (alice, bob) = (test_key("alice"), test_key("bob"));
    let transfer = Transfer::decode(&documented_bytes("transfer")).expect("canonical transfer");
    assert_eq!(transfer.from, alice.public());
    assert_eq!(transfer.verify_signature(), Ok(()));
    let text = raclette_protocol::encryption::decrypt(
        &bob,
        &transfer.from,
        &transfer.to,
        &transfer.message,
    )
    .expect("bob can read it");
    assert_eq!(text, b"hello bob");
}

/// The fields a transfer signature covers, as §6.1 lists them.
#[derive(Serialize)]
struct UnsignedTransfer<'a> {
    network: &'a NetworkId,
    from: &'a PublicKey,
    to: &'a PublicKey,
    amount: Amount,
    fee: Amount,
    nonce: u64,
    message: &'a EncryptedMessage,
}

/// The fields a card signature covers, as §14.2 lists them.
#[derive(Serialize)]
struct UnsignedCard<'a> {
    network: &'a NetworkId,
    name: &'a PeerName,
    key: &'a PublicKey,
    addresses: &'a [String],
    seq: u64,
}

/// §4, §6.1 and §14.2: each sighash is the tagged hash of the map of the signed fields,
/// and that 32-byte hash is what ECDSA signs, as is (RFC 6979 nonce, then low-S), giving
/// the documented signatures.
#[test]
fn given_vector_sighashes_then_they_are_the_tagged_hashes_alice_signs_as_is() {
    let alice = test_key("alice");
    let transfer = Transfer::decode(&documented_bytes("transfer")).expect("canonical transfer");
    let unsigned = UnsignedTransfer {
        network: &transfer.network,
        from: &transfer.from,
        to: &transfer.to,
        amount: transfer.amount,
        fee: transfer.fee,
        nonce: transfer.nonce,
        message: &transfer.message,
    };
    let sighash = tagged_hash(TRANSFER_SIGHASH_TAG, &to_canonical_cbor(&unsigned));
    assert_eq!(sighash.to_vec(), documented_bytes("transfer-sighash"));
    assert_eq!(alice.sign(&sighash).to_bytes().to_vec(), documented_bytes("transfer-signature"));
    assert_eq!(transfer.signature, alice.sign(&sighash));

    let card = decode_card(&documented_bytes("peer-card"));
    let unsigned = UnsignedCard {
        network: &card.network,
        name: &card.name,
        key: &card.key,
        addresses: &card.addresses,
        seq: card.seq,
    };
    let sighash = tagged_hash(PEER_CARD_SIGHASH_TAG, &to_canonical_cbor(&unsigned));
    assert_eq!(sighash.to_vec(), documented_bytes("peer-card-sighash"));
    assert_eq!(card.signature, alice.sign(&sighash));
}

/// §14.2: the §17 card is valid, and its address ends in alice's own `/p2p/<PeerId>`.
#[test]
fn given_vector_peer_card_then_valid_and_its_address_names_alice() {
    let alice = test_key("alice");
    let network = NetworkParams::dev().network_id();
    let card = decode_card(&documented_bytes("peer-card"));
    assert_eq!(card.key, alice.public());
    assert_eq!(card.check(&network), Ok(()));
    let Vector::Text(peer_id) = &document_vectors()["alice-peer-id-text"] else {
        panic!("the PeerId's text form is text");
    };
    assert_eq!(base58btc(&documented_bytes("alice-peer-id")), *peer_id);
    for address in &card.addresses {
        assert!(address.ends_with(&format!("/p2p/{peer_id}")), "{address}");
    }
}

/// Every message vector decodes as its type within its size limit; a `status` response
/// is the same bytes as the request, and a direct request those of the transaction.
#[test]
fn given_message_vectors_then_each_decodes_as_its_type() {
    DirectRequest::decode(&documented_bytes("direct-request")).expect("direct request");
    for name in ["direct-accepted", "direct-rejected"] {
        DirectResponse::decode(&documented_bytes(name)).expect(name);
    }
    for name in ["sync-status", "sync-headers-request", "sync-blocks-request"] {
        SyncRequest::decode(&documented_bytes(name)).expect(name);
    }
    for name in ["sync-status", "sync-headers-response", "sync-blocks-response", "sync-refused"] {
        SyncResponse::decode(&documented_bytes(name)).expect(name);
    }
    for name in
        ["directory-register", "directory-list-first", "directory-list-next", "directory-lookup"]
    {
        DirectoryRequest::decode(&documented_bytes(name)).expect(name);
    }
    for name in
        ["directory-registered", "directory-name-taken", "directory-refused", "directory-cards"]
    {
        DirectoryResponse::decode(&documented_bytes(name)).expect(name);
    }
    DirectoryPush::decode(&documented_bytes("directory-push")).expect("push");
    DirectoryPushAck::decode(&documented_bytes("directory-push-ack")).expect("push ack");
    let SyncRequest::Status(status) =
        SyncRequest::decode(&documented_bytes("sync-status")).unwrap()
    else {
        panic!("sync-status is a status");
    };
    assert_eq!(SyncResponse::Status(status).encode(), documented_bytes("sync-status"));
    assert_eq!(
        documented_bytes("direct-request"),
        documented_bytes("transfer-as-transaction"),
        "§12: a direct request is byte for byte the transfer's enum form"
    );
}

/// A card outside a message: cards have a size limit of their own.
fn decode_card(bytes: &[u8]) -> PeerCard {
    decode_canonical(bytes, MAX_CARD_BYTES).expect("a canonical card")
}
