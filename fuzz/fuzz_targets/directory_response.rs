//! Fuzz target: a tracker's answer to a directory request, and every card in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_card, check_shown_text, decode_wire};
use raclette_protocol::wire::DirectoryResponse;

fuzz_target!(|data: &[u8]| {
    match decode_wire::<DirectoryResponse>(data) {
        Some(DirectoryResponse::Cards { cards, .. }) => cards.iter().for_each(check_card),
        Some(DirectoryResponse::Refused { reason }) => check_shown_text(&reason),
        Some(DirectoryResponse::NameTaken { name }) => check_shown_text(name.as_str()),
        Some(DirectoryResponse::Registered) | None => {}
    }
});
