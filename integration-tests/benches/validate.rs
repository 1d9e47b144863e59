//! `just bench validate`: full validation (header, block, state) of blocks holding 1,000
//! signed transfers, against the bare libsecp256k1 verify rate of the same signatures
//! times the cores, both measured in this run.

use std::time::{Duration, Instant};

use raclette_integration_tests::bench::{Report, bare_verify_rate, bare_verify_rate_of, cores};
use raclette_node::chain::{Chain, Placement};
use raclette_node::store::MemoryStore;
use raclette_node::testkit::{easy_params, message_blocks};
use rayon::prelude::*;

const TRANSFERS_PER_BLOCK: u64 = 1_000;
const BLOCKS: u64 = 6;
const NOW: u64 = u64::MAX / 4;

fn main() {
    let params = easy_params();
    // Amount-0 messages need no balance, so a thousand fresh senders can each send one
    // per block; every one still has its signature, nonce and state checked.
    let blocks = message_blocks(&params, BLOCKS, TRANSFERS_PER_BLOCK);

    let mut best_rate = 0.0f64;
    let mut best_bound = 0.0f64;
    for _ in 0..3 {
        best_bound = best_bound
            .max(bare_verify_rate_of(&blocks, Duration::from_millis(1000)) * cores() as f64);
        let mut chain =
            Chain::open(MemoryStore::new(), params.clone(), None).expect("memory store");
        let start = Instant::now();
        for block in blocks.clone() {
            let imported = chain.import_block(block, NOW).expect("valid block");
            assert_eq!(imported.placement, Placement::BestChain);
        }
        best_rate =
            best_rate.max((BLOCKS * TRANSFERS_PER_BLOCK) as f64 / start.elapsed().as_secs_f64());
    }
    let parallel_bare = {
        let secret = secp256k1::SecretKey::from_secret_bytes([0x5a; 32]).expect("valid scalar");
        let key = secp256k1::PublicKey::from_secret_key(&secret);
        let digest = secp256k1::Message::from_digest([7; 32]);
        let signature = secp256k1::ecdsa::sign(digest, &secret);
        let start = Instant::now();
        (0..60_000)
            .into_par_iter()
            .for_each(|_| secp256k1::ecdsa::verify(&signature, digest, &key).expect("valid"));
        60_000.0 / start.elapsed().as_secs_f64()
    };
    let repeated = bare_verify_rate(Duration::from_millis(1000));
    println!("bare verify on all cores at once (rayon): {:.2} k/s", parallel_bare / 1e3);
    println!("bare verify of one signature over and over: {:.2} k/s", repeated / 1e3);
    println!(
        "{} cores; bound = bare libsecp256k1 verifications/s of these blocks' signatures on \
         one core × cores",
        cores()
    );
    Report {
        name: "validate".into(),
        value: best_rate / 1e3,
        unit: "k tx/s".into(),
        bound: best_bound / 1e3,
        target: Some(0.8),
    }
    .publish();
}
