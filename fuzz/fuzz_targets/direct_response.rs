//! Fuzz target: the receiver's answer to a direct transfer, and its reason as a terminal
//! would show it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_shown_text, decode_wire};
use raclette_protocol::wire::DirectResponse;

fuzz_target!(|data: &[u8]| {
    if let Some(DirectResponse::Rejected { reason }) = decode_wire::<DirectResponse>(data) {
        check_shown_text(&reason);
    }
});
