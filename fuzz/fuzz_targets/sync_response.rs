//! Fuzz target: a peer's sync answer: headers linked and checked against the fixture's
//! chain as a syncing node checks them, blocks through the checks an orphan gets, and
//! reasons as a terminal would show them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::fixture::{NOW_MS, shared_chain};
use raclette_fuzz::properties::{check_shown_text, decode_wire};
use raclette_node::chain::validate::{check_commitment, check_proof_of_work};
use raclette_protocol::BlockHeader;
use raclette_protocol::wire::SyncResponse;

fuzz_target!(|data: &[u8]| {
    let Some(answer) = decode_wire::<SyncResponse>(data) else { return };
    let chain = shared_chain();
    match answer {
        SyncResponse::Status(status) => {
            let _ = status.work.as_f64();
        }
        SyncResponse::Headers(headers) => {
            // node/src/node/sync.rs (`on_headers`) drops headers that do not link.
            if !headers.windows(2).all(|pair| pair[1].prev == BlockHeader::hash(&pair[0])) {
                return;
            }
            let verdict = chain.check_header_chain(&headers, 0, NOW_MS).expect("memory store");
            let work = chain.work_of_headers(&headers).expect("memory store");
            if let (Ok(()), Some(first)) = (verdict, headers.first()) {
                // Headers that pass the checks build on a stored block and add work to it.
                let (base, _) = chain.block(&first.prev).expect("memory store").expect("stored");
                let work = work.expect("checked headers have valid targets");
                assert!(work > base.work, "{} headers add no work", headers.len());
            }
        }
        SyncResponse::Blocks(blocks) => {
            for block in &blocks {
                if check_proof_of_work(chain.params(), &block.header).is_ok() {
                    let _ = check_commitment(block);
                }
            }
        }
        SyncResponse::Refused { reason } => check_shown_text(&reason),
    }
});
