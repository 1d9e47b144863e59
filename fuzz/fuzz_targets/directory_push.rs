//! Fuzz target: cards a tracker pushes to a node, each checked as the node checks it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_card, decode_wire};
use raclette_protocol::wire::DirectoryPush;

fuzz_target!(|data: &[u8]| {
    if let Some(push) = decode_wire::<DirectoryPush>(data) {
        push.cards.iter().for_each(check_card);
    }
});
