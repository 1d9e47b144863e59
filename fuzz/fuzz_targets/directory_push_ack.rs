//! Fuzz target: a node's acknowledgement of a tracker's push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::decode_wire;
use raclette_protocol::wire::DirectoryPushAck;

fuzz_target!(|data: &[u8]| {
    let _ = decode_wire::<DirectoryPushAck>(data);
});
