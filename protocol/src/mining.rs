//! The nonce search: the inner loop of mining.
//!
//! The first 64 header bytes do not change while the nonce does, so their SHA-256 state
//! (the midstate) is computed once; each nonce costs one compression for the header's
//! second 64-byte block and one for the outer SHA-256 of the 32-byte inner hash. With
//! SHA-NI the search runs two nonces side by side, so that while one lane waits for its
//! `sha256rnds2` result the other's is in flight.
//!
//! The search is cancellable: the stop flag is checked every [`CHECK_INTERVAL`] nonces,
//! and the hash counter is advanced by the same amount, so a caller can show a rate.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::hash::BlockHash;
use crate::header::BlockHeader;
use crate::pow::{CompactTargetError, Target};

/// Nonces tried between two looks at the stop flag.
pub const CHECK_INTERVAL: u64 = 4096;

/// SHA-256 initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Offset of the nonce inside the header's second 64-byte block.
const NONCE_IN_TAIL: usize = BlockHeader::NONCE_OFFSET - 64;

/// The precomputed state for searching one header template.
#[derive(Clone, Debug)]
pub struct NonceSearch {
    midstate: [u32; 8],
    /// The header's second block: bytes 64..96, SHA-256 padding, length 768 bits.
    tail: [u8; 64],
    /// The target as eight big-endian words, most significant first.
    target_words: [u32; 8],
}

/// The outer hash's block: 32 bytes of inner hash, then fixed padding for 256 bits.
fn outer_block(inner: &[u32; 8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    for (chunk, word) in block.chunks_exact_mut(4).zip(inner) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    block[32] = 0x80;
    block[62] = 0x01; // 256 bits, big-endian in the last 8 bytes
    block
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(block.into()));
}

/// Whether a final SHA-256 state, read as the big-endian hash, is at most the target.
fn meets(hash: &[u32; 8], target: &[u32; 8]) -> bool {
    hash <= target // arrays compare lexicographically: most significant word first
}

impl NonceSearch {
    /// Prepares a search over `header`'s nonces against the target in its `bits`.
    pub fn new(header: &BlockHeader) -> Result<Self, CompactTargetError> {
        let target = header.bits.to_target()?;
        Ok(Self::with_target(header, target))
    }

    /// Prepares a search against an explicit target.
    pub fn with_target(header: &BlockHeader, target: Target) -> Self {
        let bytes = header.to_bytes();
        let mut midstate = IV;
        compress(&mut midstate, bytes[..64].try_into().expect("64 bytes"));
        let mut tail = [0u8; 64];
        tail[..32].copy_from_slice(&bytes[64..]);
        tail[32] = 0x80;
        tail[62..].copy_from_slice(&768u16.to_be_bytes()); // 96 bytes = 768 bits
        let target_bytes = target.to_be_bytes();
        let mut target_words = [0u32; 8];
        for (word, chunk) in target_words.iter_mut().zip(target_bytes.chunks_exact(4)) {
            *word = u32::from_be_bytes(chunk.try_into().expect("4 bytes"));
        }
        Self { midstate, tail, target_words }
    }

    /// The header hash for `nonce`, computed from the midstate (the slow path the
    /// search is tested against).
    pub fn hash_with_nonce(&self, nonce: u64) -> BlockHash {
        let words = self.hash_words(nonce);
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        BlockHash::from_bytes(bytes)
    }

    fn hash_words(&self, nonce: u64) -> [u32; 8] {
        let mut tail = self.tail;
        tail[NONCE_IN_TAIL..NONCE_IN_TAIL + 8].copy_from_slice(&nonce.to_le_bytes());
        let mut inner = self.midstate;
        compress(&mut inner, &tail);
        let mut outer = IV;
        compress(&mut outer, &outer_block(&inner));
        outer
    }

    /// Searches `nonces` for one whose header hash meets the target. Returns it, or
    /// `None` when the range is exhausted or `stop` was set. Adds the nonces tried to
    /// `hashes_done` every [`CHECK_INTERVAL`].
    pub fn search(
        &self,
        nonces: Range<u64>,
        stop: &AtomicBool,
        hashes_done: &AtomicU64,
    ) -> Option<u64> {
        let mut start = nonces.start;
        while start < nonces.end {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let end = start.saturating_add(CHECK_INTERVAL).min(nonces.end);
            let found = self.search_chunk(start..end);
            hashes_done.fetch_add(end - start, Ordering::Relaxed);
            if found.is_some() {
                return found;
            }
            start = end;
        }
        None
    }

    /// Searches one chunk with the fastest implementation this CPU has.
    pub fn search_chunk(&self, nonces: Range<u64>) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            // SAFETY: the CPU supports every feature `search_x2` is compiled for.
            return unsafe { shani::search_x2(self, nonces) };
        }
        self.search_scalar(nonces)
    }

    /// The portable path: one nonce at a time through `sha2`'s compression function.
    pub fn search_scalar(&self, nonces: Range<u64>) -> Option<u64> {
        nonces.into_iter().find(|&nonce| meets(&self.hash_words(nonce), &self.target_words))
    }
}

/// The nonce range thread `index` of `threads` searches, so threads never overlap.
pub fn nonce_range(index: usize, threads: usize) -> Range<u64> {
    assert!(threads > 0 && index < threads, "thread index within thread count");
    let share = u64::MAX / threads as u64;
    let start = share * index as u64;
    let end = if index + 1 == threads { u64::MAX } else { start + share };
    start..end
}

/// Raw SHA-256 compressions per call of [`raw_compressions`]: the bound the miner's rate
/// is compared with.
pub const RAW_COMPRESSIONS_PER_CALL: u64 = 4096;

/// Runs [`RAW_COMPRESSIONS_PER_CALL`] dependent compressions of `block` through the same
/// compression function the scalar miner uses, so a benchmark can measure this
/// machine's single-stream SHA-256 rate. Returns the state so the work is not optimised
/// away.
pub fn raw_compressions(state: &mut [u32; 8], block: &[u8; 64]) {
    for _ in 0..RAW_COMPRESSIONS_PER_CALL {
        compress(state, block);
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    //! Two-lane SHA-256 with the x86 SHA extensions.

    use std::arch::x86_64::*;
    use std::ops::Range;
    use std::sync::OnceLock;

    use super::{IV, NONCE_IN_TAIL, NonceSearch, meets, outer_block};

    /// The SHA-256 round constants.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("sse2")
                && is_x86_feature_detected!("ssse3")
                && is_x86_feature_detected!("sse4.1")
        })
    }

    /// A SHA-256 state in the register order `sha256rnds2` wants: (ABEF, CDGH).
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_state(words: &[u32; 8]) -> State {
        // SAFETY: reading 2 × 16 bytes from a 32-byte array; loadu has no alignment need.
        let (dcba, efgh) = unsafe {
            let ptr = words.as_ptr() as *const __m128i;
            (_mm_loadu_si128(ptr), _mm_loadu_si128(ptr.add(1)))
        };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
        State { abef: _mm_alignr_epi8(cdab, hgfe, 8), cdgh: _mm_blend_epi16(hgfe, cdab, 0xF0) }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store_state(state: State) -> [u32; 8] {
        let feba = _mm_shuffle_epi32(state.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(state.cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgef = _mm_alignr_epi8(dchg, feba, 8);
        let mut words = [0u32; 8];
        // SAFETY: writing 2 × 16 bytes into a 32-byte array; storeu has no alignment need.
        unsafe {
            let ptr = words.as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(ptr, dcba);
            _mm_storeu_si128(ptr.add(1), hgef);
        }
        words
    }

    /// The 16 message words of a block as four big-endian vectors.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_message(block: &[u8; 64]) -> [__m128i; 4] {
        let big_endian = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        // SAFETY: four 16-byte unaligned loads from a 64-byte array.
        unsafe {
            let ptr = block.as_ptr() as *const __m128i;
            [
                _mm_shuffle_epi8(_mm_loadu_si128(ptr), big_endian),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(1)), big_endian),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(2)), big_endian),
                _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(3)), big_endian),
            ]
        }
    }

    /// Four rounds with message vector `w` (already four schedule words) and
    /// constants `K[4 * group ..]`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn four_rounds(state: &mut State, w: __m128i, group: usize) {
        // SAFETY: group < 16, so the 16-byte load stays inside K.
        let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * group) as *const __m128i) };
        let wk = _mm_add_epi32(w, k);
        state.cdgh = _mm_sha256rnds2_epu32(state.cdgh, state.abef, wk);
        state.abef = _mm_sha256rnds2_epu32(state.abef, state.cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }

    /// The next four schedule words from the previous sixteen.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn next_words(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let partial = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(partial, w3)
    }

    /// Compresses one block into each of two independent states, the two lanes'
    /// instructions interleaved.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress_x2(states: [State; 2], blocks: [&[u8; 64]; 2]) -> [State; 2] {
        let mut a = states[0];
        let mut b = states[1];
        let mut wa = load_message(blocks[0]);
        let mut wb = load_message(blocks[1]);
        for group in 0..4 {
            four_rounds(&mut a, wa[group], group);
            four_rounds(&mut b, wb[group], group);
        }
        for group in 4..16 {
            let slot = group % 4;
            wa[slot] =
                next_words(wa[slot], wa[(slot + 1) % 4], wa[(slot + 2) % 4], wa[(slot + 3) % 4]);
            wb[slot] =
                next_words(wb[slot], wb[(slot + 1) % 4], wb[(slot + 2) % 4], wb[(slot + 3) % 4]);
            four_rounds(&mut a, wa[slot], group);
            four_rounds(&mut b, wb[slot], group);
        }
        [
            State {
                abef: _mm_add_epi32(a.abef, states[0].abef),
                cdgh: _mm_add_epi32(a.cdgh, states[0].cdgh),
            },
            State {
                abef: _mm_add_epi32(b.abef, states[1].abef),
                cdgh: _mm_add_epi32(b.cdgh, states[1].cdgh),
            },
        ]
    }

    /// The header hashes (as final state words) for two nonces.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn hash_x2(search: &NonceSearch, mid: State, iv: State, nonces: [u64; 2]) -> [[u32; 8]; 2] {
        let mut tail_a = search.tail;
        let mut tail_b = search.tail;
        tail_a[NONCE_IN_TAIL..NONCE_IN_TAIL + 8].copy_from_slice(&nonces[0].to_le_bytes());
        tail_b[NONCE_IN_TAIL..NONCE_IN_TAIL + 8].copy_from_slice(&nonces[1].to_le_bytes());
        let [inner_a, inner_b] = compress_x2([mid, mid], [&tail_a, &tail_b]);
        let outer_a = outer_block(&store_state(inner_a));
        let outer_b = outer_block(&store_state(inner_b));
        let [hash_a, hash_b] = compress_x2([iv, iv], [&outer_a, &outer_b]);
        [store_state(hash_a), store_state(hash_b)]
    }

    /// Searches `nonces` two at a time.
    ///
    /// # Safety
    /// The CPU must support SHA, SSE2, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn search_x2(search: &NonceSearch, nonces: Range<u64>) -> Option<u64> {
        let mid = load_state(&search.midstate);
        let iv = load_state(&IV);
        let mut nonce = nonces.start;
        while nonces.end - nonce >= 2 {
            let [a, b] = hash_x2(search, mid, iv, [nonce, nonce + 1]);
            if meets(&a, &search.target_words) {
                return Some(nonce);
            }
            if meets(&b, &search.target_words) {
                return Some(nonce + 1);
            }
            nonce += 2;
        }
        (nonce..nonces.end).find(|&n| meets(&search.hash_words(n), &search.target_words))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::mining::compress;

        #[test]
        fn given_two_blocks_when_compressed_in_lanes_then_each_matches_sha2() {
            if !available() {
                return; // nothing to compare on a CPU without SHA-NI
            }
            let blocks = [[0x5a_u8; 64], core::array::from_fn(|i| i as u8)];
            let (mut expected_a, mut expected_b) = (IV, [1, 2, 3, 4, 5, 6, 7, 8]);
            compress(&mut expected_a, &blocks[0]);
            compress(&mut expected_b, &blocks[1]);
            // SAFETY: checked `available()` above.
            let [a, b] = unsafe {
                let states = [load_state(&IV), load_state(&[1, 2, 3, 4, 5, 6, 7, 8])];
                let [a, b] = compress_x2(states, [&blocks[0], &blocks[1]]);
                [store_state(a), store_state(b)]
            };
            assert_eq!(a, expected_a);
            assert_eq!(b, expected_b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::BlockHash;
    use crate::pow::CompactTarget;

    fn template(bits: CompactTarget) -> BlockHeader {
        BlockHeader {
            version: 1,
            bits,
            height: 1,
            prev: BlockHash::from_bytes([9; 32]),
            merkle_root: [8; 32],
            time_ms: 1_767_225_600_000,
            nonce: 0,
        }
    }

    #[test]
    fn given_midstate_when_hashing_any_nonce_then_equals_plain_header_hash() {
        let mut header = template(CompactTarget(0x207fffff));
        let search = NonceSearch::new(&header).unwrap();
        for nonce in [0, 1, 255, 1 << 40, u64::MAX] {
            header.nonce = nonce;
            assert_eq!(search.hash_with_nonce(nonce), header.hash());
        }
    }

    #[test]
    fn given_easy_target_when_searching_then_found_nonce_meets_it_and_is_the_first() {
        let target = Target::from_expected_hashes_log2(8);
        let mut header = template(target.to_compact());
        let search = NonceSearch::new(&header).unwrap();
        let found = search.search(0..100_000, &AtomicBool::new(false), &AtomicU64::new(0)).unwrap();
        header.nonce = found;
        assert!(target.is_met_by(&header.hash()));
        assert_eq!(search.search_scalar(0..100_000), Some(found), "fast and portable paths agree");
        for earlier in 0..found {
            header.nonce = earlier;
            assert!(!target.is_met_by(&header.hash()), "nonce {earlier} also met the target");
        }
    }

    #[test]
    fn given_stop_flag_set_when_searching_then_returns_none_without_work() {
        let search = NonceSearch::with_target(
            &template(CompactTarget(0x03000001)),
            Target::from_be_bytes([0; 32]),
        );
        let done = AtomicU64::new(0);
        assert_eq!(search.search(0..u64::MAX, &AtomicBool::new(true), &done), None);
        assert_eq!(done.load(Ordering::Relaxed), 0);
        assert_eq!(search.search(0..10_000, &AtomicBool::new(false), &done), None);
        assert_eq!(done.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn given_thread_ranges_then_they_cover_everything_without_overlap() {
        for threads in 1..6 {
            let ranges: Vec<_> = (0..threads).map(|i| nonce_range(i, threads)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[threads - 1].end, u64::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
        }
    }
}
