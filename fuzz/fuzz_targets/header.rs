//! Fuzz target: a block header in its fixed 96-byte layout (as proof of work hashes it,
//! followed by up to 8 bytes taken as the start of a retarget window), or as the CBOR
//! byte string a headers answer carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raclette_fuzz::properties::{check_header, decode_part};
use raclette_protocol::BlockHeader;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = decode_part::<BlockHeader>(data, BlockHeader::SIZE + 2) {
        check_header(&header, header.time_ms);
    }
    let Some((bytes, rest)) = data.split_first_chunk::<{ BlockHeader::SIZE }>() else { return };
    let header = BlockHeader::from_bytes(bytes);
    assert_eq!(&header.to_bytes(), bytes);
    let mut window_start = [0u8; 8];
    let taken = rest.len().min(8);
    window_start[..taken].copy_from_slice(&rest[..taken]);
    check_header(&header, u64::from_le_bytes(window_start));
});
