//! Fuzz target: a peer card on its own (as it travels inside directory messages): its
//! rules, its name, its key as a PeerId, and its addresses as a node would dial them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_card, decode_part};
use raclette_protocol::PeerCard;
use raclette_protocol::WireMessage;
use raclette_protocol::wire::DirectoryRequest;

fuzz_target!(|data: &[u8]| {
    if let Some(card) = decode_part::<PeerCard>(data, DirectoryRequest::MAX_BYTES) {
        check_card(&card);
    }
});
