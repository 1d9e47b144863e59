//! Fuzz target: a transfer sent straight to its receiver, and the answer the receiver
//! sends back, which must fit the answer's size limit whatever the request was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_transfer, decode_wire};
use raclette_protocol::WireMessage;
use raclette_protocol::wire::{DirectRequest, DirectResponse};

fuzz_target!(|data: &[u8]| {
    // The reasons the receiver gives (node/src/node/transfers.rs, `receive_direct`).
    let reason = match DirectRequest::decode(data) {
        Err(error) => format!("malformed request: {error}"),
        Ok(_) => {
            let request = decode_wire::<DirectRequest>(data).expect("it decoded once");
            match check_transfer(&request.transfer) {
                Ok(_) => return,
                Err(error) => error.to_string(),
            }
        }
    };
    let answer = DirectResponse::Rejected { reason }.encode();
    assert!(
        answer.len() <= DirectResponse::MAX_BYTES,
        "a refusal of {} bytes breaks the answer's limit of {}: {}",
        answer.len(),
        DirectResponse::MAX_BYTES,
        String::from_utf8_lossy(&answer)
    );
});
