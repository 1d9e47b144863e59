//! Fuzz target: a peer's sync request, answered from the fixture's chain as the node
//! answers it; the answer must fit its limit, decode, and (for headers) pass the header
//! chain check.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::fixture::{NOW_MS, shared_chain};
use raclette_fuzz::properties::decode_wire;
use raclette_protocol::WireMessage;
use raclette_protocol::wire::{
    MAX_BLOCKS_PER_REQUEST, MAX_HEADERS_PER_RESPONSE, SyncRequest, SyncResponse,
};

fuzz_target!(|data: &[u8]| {
    let Some(request) = decode_wire::<SyncRequest>(data) else { return };
    let chain = shared_chain();
    // What node/src/node/sync.rs (`on_sync_request`) answers.
    let answer = match request {
        SyncRequest::Status(status) => {
            let _ = status.work.as_f64();
            SyncResponse::Status(chain.status())
        }
        SyncRequest::Headers { locator, limit } => {
            let limit = (limit as usize).min(MAX_HEADERS_PER_RESPONSE);
            let headers = chain.headers_after(&locator, limit).expect("memory store");
            assert!(headers.len() <= limit);
            let verdict = chain.check_header_chain(&headers, 0, NOW_MS).expect("memory store");
            assert_eq!(verdict, Ok(()), "our own headers answer fails the header checks");
            SyncResponse::Headers(headers)
        }
        SyncRequest::Blocks { hashes }
            if hashes.len() > MAX_BLOCKS_PER_REQUEST
                || hashes.iter().collect::<HashSet<_>>().len() < hashes.len() =>
        {
            SyncResponse::Refused { reason: "refused".into() }
        }
        SyncRequest::Blocks { hashes } => {
            let blocks = chain.blocks_by_hash(&hashes).expect("memory store");
            assert!(blocks.len() <= hashes.len());
            SyncResponse::Blocks(blocks)
        }
    };
    let encoded = answer.encode();
    assert!(encoded.len() <= SyncResponse::MAX_BYTES, "an answer of {} bytes", encoded.len());
    assert_eq!(SyncResponse::decode(&encoded), Ok(answer));
});
