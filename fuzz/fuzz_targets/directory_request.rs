//! Fuzz target: a node's request to a tracker's directory, and the card or name in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_card, decode_wire};
use raclette_protocol::PeerName;
use raclette_protocol::wire::DirectoryRequest;

fuzz_target!(|data: &[u8]| {
    match decode_wire::<DirectoryRequest>(data) {
        Some(DirectoryRequest::Register(card)) => check_card(&card),
        Some(DirectoryRequest::List { after: Some(after), .. }) => {
            let _ = PeerName::new(&after);
        }
        Some(DirectoryRequest::Lookup { name, .. }) => {
            assert_eq!(PeerName::new(&name.key()).map(|lower| lower.key()), Ok(name.key()));
        }
        Some(DirectoryRequest::List { after: None, .. }) | None => {}
    }
});
