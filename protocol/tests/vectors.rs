//! The test vectors of PROTOCOL.md, computed here and compared with the document.
//!
//! PROTOCOL.md holds each vector in a fenced block whose info string is `hex NAME`. This
//! test recomputes every vector and checks the document holds exactly these, so the
//! document and the code cannot drift apart. `RACLETTE_PRINT_VECTORS=1 cargo test -p
//! raclette-protocol --test vectors -- --nocapture` prints them for pasting.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;

use raclette_protocol::block::merkle_root;
use raclette_protocol::encoding::to_canonical_cbor;
use raclette_protocol::encryption::encrypt;
use raclette_protocol::hash::sha256;
use raclette_protocol::wire::{ChainStatus, SyncRequest};
use raclette_protocol::{
    Amount, Keypair, NetworkParams, PeerCard, PeerName, Transfer, TxId, WireMessage,
};

fn test_key(name: &str) -> Keypair {
    Keypair::from_secret_bytes(sha256(name.as_bytes()))
        .expect("a SHA-256 output is a valid scalar here")
}

fn vectors() -> Vec<(&'static str, String)> {
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
    let card = PeerCard::sign(
        &alice,
        network,
        PeerName::new("alice").expect("valid"),
        vec!["/ip4/192.0.2.7/tcp/4001".into()],
        1,
    );
    let status = SyncRequest::Status(ChainStatus {
        network,
        height: 0,
        tip: genesis.hash(),
        work: genesis.header.bits.to_target().expect("valid").work(),
    });
    let ids: Vec<TxId> = (0u8..3).map(|i| TxId::from_bytes([i; 32])).collect();
    vec![
        ("dev-params", hex::encode(to_canonical_cbor(&dev))),
        ("dev-params-hash", dev.params_hash().to_string()),
        ("dev-genesis-header", hex::encode(genesis.header.to_bytes())),
        ("dev-genesis-hash", genesis.hash().to_string()),
        ("dev-genesis-block", hex::encode(genesis.encode())),
        ("main-genesis-hash", main.genesis().hash().to_string()),
        ("alice-secret", hex::encode(alice.secret_bytes())),
        ("alice-public", alice.public().to_string()),
        ("bob-public", bob.public().to_string()),
        ("message-ciphertext", hex::encode(&message.ciphertext)),
        ("transfer-sighash", hex::encode(transfer.sighash())),
        ("transfer-signature", hex::encode(transfer.signature.to_bytes())),
        ("transfer", hex::encode(transfer.encode())),
        ("transfer-txid", transfer.txid().to_string()),
        ("merkle-root-3", hex::encode(merkle_root(&ids))),
        ("peer-card", hex::encode(to_canonical_cbor(&card))),
        ("sync-status", hex::encode(status.encode())),
    ]
}

/// Every ```` ```hex NAME ```` block of PROTOCOL.md, whitespace removed.
fn document_vectors() -> BTreeMap<String, String> {
    let document = include_str!("../../PROTOCOL.md");
    let mut found = BTreeMap::new();
    let mut lines = document.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("```hex ") {
            let body: String = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
                .collect();
            found.insert(name.trim().to_owned(), body);
        }
    }
    found
}

#[test]
fn given_protocol_document_then_every_vector_matches_the_code() {
    let computed = vectors();
    if std::env::var_os("RACLETTE_PRINT_VECTORS").is_some() {
        for (name, value) in &computed {
            println!("```hex {name}");
            for chunk in value.as_bytes().chunks(64) {
                println!("{}", std::str::from_utf8(chunk).expect("hex is ascii"));
            }
            println!("```\n");
        }
    }
    let documented = document_vectors();
    for (name, value) in &computed {
        assert_eq!(documented.get(*name), Some(value), "vector {name} in PROTOCOL.md");
    }
    assert_eq!(documented.len(), computed.len(), "PROTOCOL.md has vectors the test does not check");
}

#[test]
fn given_vector_transfer_then_bob_reads_it_and_signature_verifies() {
    let (alice, bob) = (test_key("alice"), test_key("bob"));
    let documented = document_vectors();
    let bytes = hex::decode(&documented["transfer"]).expect("hex");
    let transfer = Transfer::decode(&bytes).expect("canonical transfer");
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
