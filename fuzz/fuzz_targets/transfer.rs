//! Fuzz target: a transfer as gossip carries it, through the stateless rules and into a
//! mempool over the fixture's chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_transfer, decode_wire};
use raclette_protocol::Transfer;

fuzz_target!(|data: &[u8]| {
    if let Some(transfer) = decode_wire::<Transfer>(data) {
        let _ = check_transfer(&transfer);
    }
});
