//! Fuzz target: a block as gossip and sync carry it: its sizes and hand-assembled
//! encoding against the canonical one, its commitment, and the block rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::fixture::fixture;
use raclette_fuzz::properties::{check_header, decode_wire};
use raclette_node::chain::validate::{check_block, check_commitment, check_proof_of_work};
use raclette_protocol::encoding::to_canonical_cbor;
use raclette_protocol::{Block, NetworkParams};

fuzz_target!(|data: &[u8]| {
    let Some(block) = decode_wire::<Block>(data) else { return };
    let encoded: Vec<Vec<u8>> = block.transactions.iter().map(to_canonical_cbor).collect();
    assert_eq!(block.encoded_size(), data.len());
    assert_eq!(Block::encoded_size_from(encoded.iter().map(Vec::len)), data.len());
    assert_eq!(Block::encode_from_parts(&block.header, &encoded), data);
    check_header(&block.header, block.header.time_ms);
    let _ = block.coinbase();
    let commitment = check_commitment(&block);
    let _ = check_proof_of_work(&NetworkParams::dev(), &block.header);
    if let Ok(checked) = check_block(&fixture().network(), &block, &|_| false) {
        assert_eq!(commitment, Ok(()), "check_block passed a body its header does not commit to");
        assert_eq!(checked.encoded, data);
    }
});
