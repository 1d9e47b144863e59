//! The validation ladder target: a block from the fuzzer's bytes, put through the header
//! and block checks on their own and through an import into the fixture's chain, and the
//! two must agree.
//!
//! Random bytes almost never make a block whose hash meets its target, or whose merkle
//! root matches, so the deeper rules would never be reached. The input therefore starts
//! with four bytes that say which fields to repair before the checks:
//!
//! | byte | meaning |
//! |-----:|---------|
//! |    0 | fix-up flags, below |
//! |    1 | the parent, when [`Fixups::PARENT`] is set: an index into [`Fixture::parents`] |
//! | 2, 3 | seconds after the earliest allowed time, u16 LE, when [`Fixups::TIME`] is set |
//! |  4.. | the block, canonical CBOR (as gossip and sync carry it) |
//!
//! With every flag set, any block that decodes becomes one whose header is valid on the
//! chosen parent, so the fuzzer spends its time on the body and on the state rules.

use raclette_node::chain::validate::{
    BlockError, HeaderError, check_block, check_commitment, check_proof_of_work,
};
use raclette_node::chain::{Chain, HeaderChainError, ImportError, Imported, Placement};
use raclette_node::store::MemoryStore;
use raclette_protocol::{Block, Transaction, Transfer, WireMessage};

use crate::fixture::{Fixture, NOW_MS, fixture};
use crate::properties::decode_wire;

/// Bytes before the block.
pub const PREFIX_BYTES: usize = 4;

/// Most nonces tried when re-mining: the fixture's targets are met once in 16 to 256
/// tries on average, and a target the fuzzer made hard is left unmet.
const MAX_NONCES: u64 = 1 << 12;

/// Which fields of the decoded block are repaired, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixups(pub u8);

impl Fixups {
    /// Build on the fixture block that byte 1 picks.
    pub const PARENT: u8 = 1;
    /// The height that follows the parent's.
    pub const HEIGHT: u8 = 1 << 1;
    /// The target the chain requires there.
    pub const BITS: u8 = 1 << 2;
    /// Just after the median time of the parent's branch, plus bytes 2 and 3 in seconds.
    pub const TIME: u8 = 1 << 3;
    /// The coinbase names the header's height.
    pub const COINBASE_HEIGHT: u8 = 1 << 4;
    /// Transfers from a fixture key are signed again (after the fuzzer changed them).
    pub const RESIGN: u8 = 1 << 5;
    /// The merkle root of the transactions as they are.
    pub const MERKLE_ROOT: u8 = 1 << 6;
    /// A nonce that meets the header's target, if one is found quickly.
    pub const MINE: u8 = 1 << 7;
    /// Every repair: a valid header, whatever the body.
    pub const ALL: Fixups = Fixups(0xff);

    fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// A ladder input: the prefix, then the block's canonical encoding.
pub fn input(fixups: Fixups, parent: u8, seconds: u16, block: &Block) -> Vec<u8> {
    let mut bytes = vec![fixups.0, parent];
    bytes.extend_from_slice(&seconds.to_le_bytes());
    bytes.extend_from_slice(&block.encode());
    bytes
}

/// Runs one input: decode, repair, check, import, and compare. Returns what the import
/// said, if the block decoded.
pub fn run(data: &[u8]) -> Option<Result<Imported, ImportError>> {
    let (prefix, encoded) = data.split_first_chunk::<PREFIX_BYTES>()?;
    let block = decode_wire::<Block>(encoded)?;
    let fixture = fixture();
    let mut chain = fixture.chain();
    let fixups = Fixups(prefix[0]);
    let seconds = u16::from_le_bytes([prefix[2], prefix[3]]);
    let block = repair(fixture, &chain, block, fixups, prefix[1], seconds);
    Some(import_and_compare(&mut chain, block))
}

fn repair(
    fixture: &Fixture,
    chain: &Chain<MemoryStore>,
    mut block: Block,
    fixups: Fixups,
    parent: u8,
    seconds: u16,
) -> Block {
    if fixups.has(Fixups::PARENT) {
        let parents = fixture.parents();
        block.header.prev = parents[parent as usize % parents.len()];
    }
    if let Some(next) = chain.next_block_on(&block.header.prev).expect("memory store") {
        if fixups.has(Fixups::HEIGHT) {
            block.header.height = next.height;
        }
        if fixups.has(Fixups::BITS) {
            block.header.bits = next.bits;
        }
        if fixups.has(Fixups::TIME) {
            block.header.time_ms = next.median_time_ms + 1 + u64::from(seconds) * 1000;
        }
    }
    if fixups.has(Fixups::COINBASE_HEIGHT)
        && let Some(Transaction::Coinbase(coinbase)) = block.transactions.first_mut()
    {
        coinbase.height = block.header.height;
    }
    if fixups.has(Fixups::RESIGN) {
        for tx in &mut block.transactions {
            if let Transaction::Transfer(transfer) = tx
                && let Some(key) = fixture.keys.iter().find(|key| key.public() == transfer.from)
            {
                *transfer = Transfer::sign(
                    key,
                    transfer.network,
                    transfer.to,
                    transfer.amount,
                    transfer.fee,
                    transfer.nonce,
                    transfer.message.clone(),
                );
            }
        }
    }
    if fixups.has(Fixups::MERKLE_ROOT) {
        block.header.merkle_root = block.compute_merkle_root();
    }
    if fixups.has(Fixups::MINE)
        && let Ok(target) = block.header.bits.to_target()
    {
        let start = block.header.nonce;
        for nonce in (0..MAX_NONCES).map(|tries| start.wrapping_add(tries)) {
            block.header.nonce = nonce;
            if target.is_met_by(&block.hash()) {
                break;
            }
        }
    }
    block
}

/// What the ladder on its own says the import must do.
#[derive(Debug)]
enum Expected {
    /// The block is stored already.
    AlreadyKnown,
    /// The parent is unknown and the header and body hold up: held as an orphan.
    Orphan,
    /// Every stateless rule holds: stored, unless the state rules refuse it.
    Stored,
    /// A header rule is broken.
    Header(HeaderError),
    /// A block rule is broken.
    Block(BlockError),
}

fn expected(chain: &Chain<MemoryStore>, block: &Block) -> Expected {
    let params = chain.params();
    if chain.knows(&block.hash()).expect("memory store") {
        return Expected::AlreadyKnown;
    }
    if chain.next_block_on(&block.header.prev).expect("memory store").is_none() {
        if let Err(error) = check_proof_of_work(params, &block.header) {
            return Expected::Header(error);
        }
        if let Err(error) = check_commitment(block) {
            return Expected::Block(error);
        }
        return Expected::Orphan;
    }
    // The header verdict as sync reaches it, walking the branch on its own; a block
    // import must reach the same.
    match chain.check_header_chain(&[block.header], 0, NOW_MS).expect("memory store") {
        Ok(()) => {}
        Err((_, HeaderChainError::Header(error))) => return Expected::Header(error),
        Err((_, error)) => panic!("the parent of {} is stored: {error}", block.hash()),
    }
    match check_block(&chain.network(), block, &|_| false) {
        Ok(checked) => {
            assert_eq!(checked.encoded, block.encode(), "the encoding assembled from parts");
            let ids: Vec<_> = block.transactions.iter().map(Transaction::txid).collect();
            assert_eq!(checked.txids, ids);
            Expected::Stored
        }
        Err(error) => Expected::Block(error),
    }
}

fn import_and_compare(
    chain: &mut Chain<MemoryStore>,
    block: Block,
) -> Result<Imported, ImportError> {
    let hash = block.hash();
    let tip = chain.tip().hash();
    let orphans = chain.orphan_count();
    let parent_known = chain.next_block_on(&block.header.prev).expect("memory store").is_some();
    let expected = expected(chain, &block);
    let imported = chain.import_block(block.clone(), NOW_MS);
    let agrees = match (&expected, &imported) {
        (Expected::AlreadyKnown, Ok(result)) => result.placement == Placement::AlreadyKnown,
        (Expected::Orphan, Ok(Imported { placement: Placement::Orphan { missing }, .. })) => {
            *missing == block.header.prev && chain.orphan_count() == orphans + 1
        }
        (Expected::Stored, Ok(Imported { placement: Placement::BestChain, .. })) => {
            chain.tip().hash() == hash
        }
        (Expected::Stored, Ok(Imported { placement: Placement::SideChain, .. })) => {
            chain.tip().hash() == tip
        }
        (Expected::Stored, Err(ImportError::State(_))) => chain.tip().hash() == tip,
        (Expected::Header(error), Err(ImportError::Header(found))) => error == found,
        (Expected::Block(error), Err(ImportError::Block(found))) => error == found,
        _ => false,
    };
    assert!(agrees, "the ladder says {expected:?}, the import {imported:?}");
    if imported.is_err() {
        assert_eq!(chain.tip().hash(), tip, "a refused block moved the tip");
    }
    if let Ok(Imported { placement: Placement::BestChain | Placement::SideChain, .. }) = &imported {
        let (_, stored) = chain.block(&hash).expect("memory store").expect("the block is stored");
        assert_eq!(stored, block, "the stored block differs from the imported one");
    }
    // The same block again: known, or refused again; from memory where the block
    // itself is at fault, not where only its body failed to match its header (the real
    // body may still come) nor where it may become valid later.
    let again = chain.import_block(block, NOW_MS);
    let consistent = match (&imported, &again) {
        (Ok(Imported { placement: Placement::Orphan { .. }, .. }), Ok(second)) => {
            matches!(second.placement, Placement::Orphan { .. })
        }
        (Ok(_), Ok(second)) => second.placement == Placement::AlreadyKnown,
        (Err(ImportError::Header(first)), Err(ImportError::KnownInvalid(_))) => {
            first.is_peer_fault()
        }
        (Err(ImportError::Header(first)), Err(ImportError::Header(second))) => {
            !first.is_peer_fault() && first == second
        }
        (Err(ImportError::Block(first)), Err(ImportError::Block(second))) => {
            first == second && (*first == BlockError::BadMerkleRoot || !parent_known)
        }
        (Err(ImportError::Block(first)), Err(ImportError::KnownInvalid(_))) => {
            *first != BlockError::BadMerkleRoot && parent_known
        }
        (Err(ImportError::State(_)), Err(ImportError::KnownInvalid(_))) => true,
        _ => false,
    };
    assert!(consistent, "imported {imported:?}, then again {again:?}");
    imported
}
