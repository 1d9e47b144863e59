//! Seed inputs: real encodings of every message, built from the fixture, so the fuzzer
//! starts from valid messages (signed transfers and cards, mined blocks) and mutates
//! from there. `examples/seeds.rs` writes them under `corpus/<target>/`.

use raclette_node::network::identity::peer_id_of;
use raclette_node::testkit::{keypair, mine_on, transfer};
use raclette_protocol::encoding::to_canonical_cbor;
use raclette_protocol::encryption::{MAX_MESSAGE_BYTES, encrypt};
use raclette_protocol::wire::{
    DirectRequest, DirectResponse, DirectoryPush, DirectoryPushAck, DirectoryRequest,
    DirectoryResponse, MAX_CARDS_PER_PAGE, MAX_HEADERS_PER_RESPONSE, SyncRequest, SyncResponse,
};
use raclette_protocol::{
    Amount, Block, BlockHash, Keypair, NetworkParams, PeerCard, PeerName, Transaction, Transfer,
    WireMessage,
};

use crate::fixture::fixture;
use crate::ladder::{self, Fixups};

/// One seed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The fuzz target it is for.
    pub target: &'static str,
    /// Its file name under `corpus/<target>/`.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed { target, name: name.to_string(), bytes });
    };
    let fixture = fixture();
    let params = &fixture.params;
    let chain = fixture.chain();
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(keypair);
    let coin = 100_000_000;

    // Transfers: one the mempool takes (alice's next nonce on the main branch), the
    // longest message, a message without money, one for another network, and one whose
    // amount was changed after signing.
    let next = transfer(params, &alice, &bob, coin, 1_000, 2);
    let text = vec![b'm'; MAX_MESSAGE_BYTES];
    let longest = Transfer::sign(
        &alice,
        fixture.network(),
        carol.public(),
        Amount::from_units(coin),
        Amount::from_units(5_000),
        2,
        encrypt(&alice, &carol.public(), [3; 16], &text).expect("the longest allowed text"),
    );
    let message_only = transfer(params, &dave, &bob, 0, 0, 0);
    let other_network = transfer(&NetworkParams::dev(), &bob, &alice, coin, 1_000, 1);
    let mut tampered = next.clone();
    tampered.amount = Amount::from_units(coin + 1);
    let transfers = [
        ("next-nonce", &next),
        ("longest-message", &longest),
        ("message-only", &message_only),
        ("other-network", &other_network),
        ("tampered", &tampered),
    ];
    for (name, transfer) in transfers {
        add("transfer", name, transfer.encode());
        add("direct_request", name, DirectRequest { transfer: transfer.clone() }.encode());
    }

    // Blocks: the fixture's, both built-in genesis blocks, and a block of twenty
    // messages from twenty senders.
    let receiver = keypair("receiver");
    let notes = (0..20)
        .map(|sender| transfer(params, &keypair(&format!("sender-{sender}")), &receiver, 0, 0, 0))
        .collect();
    let messages = mine_on(&chain, &params.genesis().hash(), &receiver, notes, 0);
    let names = ["main-1", "main-2", "main-3", "side-2", "side-3"];
    for (name, block) in names.iter().zip(&fixture.blocks) {
        add("block", name, block.encode());
        add("header", name, block.header.to_bytes().to_vec());
    }
    let networks = [("genesis-dev", NetworkParams::dev()), ("genesis-main", NetworkParams::main())];
    for (name, params) in networks.into_iter().chain([("genesis-test", params.clone())]) {
        add("block", name, params.genesis().encode());
        add("header", name, params.genesis().header.to_bytes().to_vec());
    }
    add("block", "twenty-messages", messages.encode());
    let mut window = fixture.blocks[2].header.to_bytes().to_vec();
    window.extend_from_slice(&params.genesis_time_ms.to_le_bytes());
    add("header", "with-window-start", window);
    add("header", "cbor", to_canonical_cbor(&fixture.blocks[0].header));

    // Cards: direct and relayed addresses, the most addresses, none at all.
    let cards = cards(fixture.network(), [&alice, &bob, &carol, &dave]);
    for card in &cards {
        add("peer_card", card.name.as_str(), to_canonical_cbor(card));
    }

    // Answers to a direct transfer, one with text that must not reach a terminal as is.
    add("direct_response", "accepted", DirectResponse::Accepted.encode());
    let reasons = [
        ("rejected", "insufficient balance: you have 1 available and this needs 2"),
        ("rejected-escapes", "bad\x1b[31m red\r\nfake line \u{202e}txet"),
    ];
    for (name, reason) in reasons {
        add("direct_response", name, DirectResponse::Rejected { reason: reason.into() }.encode());
    }

    // Sync: the fixture chain's own requests and answers.
    let genesis = params.genesis().hash();
    let locator = chain.locator().expect("memory store");
    let hashes: Vec<BlockHash> = fixture.blocks.iter().map(Block::hash).collect();
    let requests = [
        ("status", SyncRequest::Status(chain.status())),
        ("headers", SyncRequest::Headers { locator, limit: MAX_HEADERS_PER_RESPONSE as u32 }),
        ("headers-from-side", SyncRequest::Headers { locator: vec![hashes[4], genesis], limit: 2 }),
        ("blocks", SyncRequest::Blocks { hashes: hashes.clone() }),
        ("blocks-twice", SyncRequest::Blocks { hashes: vec![hashes[0], hashes[0]] }),
    ];
    for (name, request) in requests {
        add("sync_request", name, request.encode());
    }
    let main_headers = chain.headers_after(&[genesis], 16).expect("memory store");
    let side_headers = vec![fixture.blocks[3].header, fixture.blocks[4].header];
    let responses = [
        ("status", SyncResponse::Status(chain.status())),
        ("headers", SyncResponse::Headers(main_headers)),
        ("headers-side", SyncResponse::Headers(side_headers)),
        ("blocks", SyncResponse::Blocks(fixture.blocks[..2].to_vec())),
        ("refused", SyncResponse::Refused { reason: "too many sync requests at once".into() }),
    ];
    for (name, response) in responses {
        add("sync_response", name, response.encode());
    }

    // The directory, both ways.
    let network = fixture.network();
    let name = |text: &str| PeerName::new(text).expect("a valid name");
    let requests = [
        ("register", DirectoryRequest::Register(cards[0].clone())),
        ("register-relayed", DirectoryRequest::Register(cards[1].clone())),
        ("list", DirectoryRequest::List { network, after: None, limit: MAX_CARDS_PER_PAGE as u32 }),
        ("list-after", DirectoryRequest::List { network, after: Some("alice".into()), limit: 2 }),
        ("lookup", DirectoryRequest::Lookup { network, name: name("Bob") }),
    ];
    for (name, request) in requests {
        add("directory_request", name, request.encode());
    }
    let responses = [
        ("registered", DirectoryResponse::Registered),
        ("name-taken", DirectoryResponse::NameTaken { name: name("alice") }),
        ("refused", DirectoryResponse::Refused { reason: "the card is older".into() }),
        ("cards", DirectoryResponse::Cards { cards: cards.clone(), more: true }),
        ("no-cards", DirectoryResponse::Cards { cards: vec![], more: false }),
    ];
    for (name, response) in responses {
        add("directory_response", name, response.encode());
    }
    add("directory_push", "two", DirectoryPush { cards: cards[..2].to_vec() }.encode());
    add("directory_push", "all", DirectoryPush { cards: cards.clone() }.encode());
    for accepted in [0, 2, u32::MAX] {
        add("directory_push_ack", &accepted.to_string(), DirectoryPushAck { accepted }.encode());
    }

    // The ladder: blocks already known, valid new blocks on each branch, blocks that
    // break a header, block or state rule, and an orphan.
    let tip = chain.tip().hash();
    let on_tip = mine_on(&chain, &tip, &carol, vec![next.clone()], 0);
    let reorg = mine_on(&chain, &hashes[4], &dave, vec![message_only.clone()], 0);
    let overspend =
        mine_on(&chain, &tip, &bob, vec![transfer(params, &alice, &bob, 90 * coin, 0, 2)], 0);
    let mut bad_root = reorg.clone();
    bad_root.transactions.push(Transaction::Transfer(message_only.clone()));
    let mut orphan = on_tip.clone();
    orphan.header.prev = BlockHash::from_bytes([7; 32]);
    let orphan = raclette_node::testkit::remine(orphan);
    let mut no_coinbase = on_tip.clone();
    no_coinbase.transactions.remove(0);
    let mut two_coinbases = on_tip.clone();
    two_coinbases.transactions.push(on_tip.transactions[0].clone());
    let mut long_memo = on_tip.clone();
    let mut coinbase_height = on_tip.clone();
    for (block, memo, height) in [(&mut long_memo, 101, 4), (&mut coinbase_height, 0, 9)] {
        if let Transaction::Coinbase(coinbase) = &mut block.transactions[0] {
            coinbase.memo = vec![b'm'; memo];
            coinbase.height = height;
        }
    }
    let overflow = transfer(params, &alice, &bob, u64::MAX, 1, 2);
    let amount_overflow = mine_on(&chain, &tip, &bob, vec![overflow], 0);
    let keep_coinbase = Fixups(Fixups::ALL.0 & !Fixups::COINBASE_HEIGHT);
    let inputs = [
        ("known", ladder::input(Fixups(0), 0, 0, &fixture.blocks[1])),
        ("on-tip", ladder::input(Fixups(0), 0, 0, &on_tip)),
        ("on-tip-repaired", ladder::input(Fixups::ALL, 3, 0, &on_tip)),
        ("reorg", ladder::input(Fixups::ALL, 5, 1, &reorg)),
        ("side-on-genesis", ladder::input(Fixups::ALL, 0, 2, &messages)),
        ("overspend", ladder::input(Fixups::ALL, 3, 0, &overspend)),
        ("too-new", ladder::input(Fixups::ALL, 3, 12_000, &on_tip)),
        ("bad-root", ladder::input(Fixups(Fixups::ALL.0 & !Fixups::MERKLE_ROOT), 5, 0, &bad_root)),
        ("orphan", ladder::input(Fixups(0), 0, 0, &orphan)),
        ("no-coinbase", ladder::input(Fixups::ALL, 3, 0, &no_coinbase)),
        ("two-coinbases", ladder::input(Fixups::ALL, 3, 0, &two_coinbases)),
        ("coinbase-height", ladder::input(keep_coinbase, 3, 0, &coinbase_height)),
        ("long-memo", ladder::input(Fixups::ALL, 3, 0, &long_memo)),
        ("amount-overflow", ladder::input(Fixups::ALL, 3, 0, &amount_overflow)),
    ];
    for (name, input) in inputs {
        add("block_ladder", name, input);
    }
    seeds
}

/// Signed cards for alice (direct addresses), bob (relayed through a tracker), carol
/// (the most addresses a card may list) and dave (none).
fn cards(network: raclette_protocol::NetworkId, keys: [&Keypair; 4]) -> Vec<PeerCard> {
    let [alice, bob, carol, dave] = keys;
    let relay = peer_id_of(&keypair("tracker").public());
    let peer = |key: &Keypair| peer_id_of(&key.public());
    let name = |text: &str| PeerName::new(text).expect("a valid name");
    let alice_addresses = vec![
        format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer(alice)),
        format!("/ip4/203.0.113.7/udp/4001/quic-v1/p2p/{}", peer(alice)),
    ];
    let bob_addresses = vec![
        format!("/ip4/198.51.100.2/tcp/7000/p2p/{relay}/p2p-circuit/p2p/{}", peer(bob)),
        format!("/dns4/tracker.example.org/tcp/7000/p2p/{relay}/p2p-circuit/p2p/{}", peer(bob)),
    ];
    let carol_addresses = (0..16)
        .map(|port| format!("/ip6/2001:db8::{port:x}/tcp/{}/p2p/{}", 4000 + port, peer(carol)))
        .collect();
    vec![
        PeerCard::sign(alice, network, name("alice"), alice_addresses, 1),
        PeerCard::sign(bob, network, name("Bob"), bob_addresses, 1_767_225_600_000),
        PeerCard::sign(carol, network, name("carol"), carol_addresses, 2),
        PeerCard::sign(dave, network, name("dave_2-x"), vec![], u64::MAX),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use raclette_node::chain::validate::{BlockError, HeaderError};
    use raclette_node::chain::{ImportError, Placement};
    use raclette_protocol::transaction::TransferError;

    use super::*;

    #[test]
    fn given_the_committed_corpus_then_it_holds_every_seed_as_generated() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for seed in all() {
            let path = corpus.join(seed.target).join(&seed.name);
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == seed.bytes,
                "{} is not what the generator makes: cargo run --example seeds",
                path.display()
            );
        }
    }

    #[test]
    fn given_each_ladder_seed_when_run_then_it_reaches_the_rule_it_is_named_for() {
        for seed in all().into_iter().filter(|seed| seed.target == "block_ladder") {
            let outcome = ladder::run(&seed.bytes).expect("every ladder seed decodes");
            let placement = outcome.as_ref().ok().map(|imported| imported.placement.clone());
            let reached = match (seed.name.as_str(), &outcome) {
                ("known", _) => placement == Some(Placement::AlreadyKnown),
                ("on-tip" | "on-tip-repaired", _) => placement == Some(Placement::BestChain),
                ("reorg", Ok(imported)) => {
                    imported.tip_change.as_ref().is_some_and(|change| change.is_reorg())
                }
                ("side-on-genesis", _) => placement == Some(Placement::SideChain),
                ("overspend", Err(ImportError::State(_))) => true,
                ("too-new", Err(ImportError::Header(HeaderError::TimeTooNew { .. }))) => true,
                ("bad-root", Err(ImportError::Block(BlockError::BadMerkleRoot))) => true,
                ("orphan", Ok(imported)) => matches!(imported.placement, Placement::Orphan { .. }),
                ("no-coinbase", Err(ImportError::Block(BlockError::MissingCoinbase))) => true,
                ("two-coinbases", Err(ImportError::Block(BlockError::ExtraCoinbase { .. }))) => {
                    true
                }
                ("coinbase-height", Err(ImportError::Block(BlockError::CoinbaseHeight { .. }))) => {
                    true
                }
                ("long-memo", Err(ImportError::Block(BlockError::CoinbaseMemoTooLong { .. }))) => {
                    true
                }
                (
                    "amount-overflow",
                    Err(ImportError::Block(BlockError::Transfer {
                        error: TransferError::AmountOverflow { .. },
                        ..
                    })),
                ) => true,
                _ => false,
            };
            assert!(reached, "seed {}: {outcome:?}", seed.name);
        }
    }
}
