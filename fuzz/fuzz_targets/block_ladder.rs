//! Fuzz target: a block through the validation ladder and an import into the fixture's
//! chain, which must agree (the input format is in `src/ladder.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = raclette_fuzz::ladder::run(data);
});
