//! `just bench verify`: transaction signature checks through our API against bare
//! libsecp256k1 verification of the same kind of signature, in the same run.

use std::time::Duration;

use raclette_integration_tests::bench::{Report, best_of_alternating, rate};
use raclette_protocol::encryption::encrypt;
use raclette_protocol::{Amount, Keypair, NetworkId, Transfer};

const ROUND: Duration = Duration::from_millis(1500);
const BATCH: u64 = 256;

fn main() {
    let alice = Keypair::from_secret_bytes([0x11; 32]).expect("valid scalar");
    let bob = Keypair::from_secret_bytes([0x22; 32]).expect("valid scalar");
    let message = encrypt(&alice, &bob.public(), [3; 16], b"thirty-two bytes of message text")
        .expect("short");
    let transfer = Transfer::sign(
        &alice,
        NetworkId::ZERO,
        bob.public(),
        Amount::from_units(10),
        Amount::from_units(1),
        7,
        message,
    );

    // The bare library: a fixed digest, signature and parsed key.
    let digest = secp256k1::Message::from_digest(transfer.sighash());
    let signature =
        secp256k1::ecdsa::Signature::from_compact(&transfer.signature.to_bytes()).expect("valid");
    let key = secp256k1::PublicKey::from_slice(&alice.public().to_bytes()).expect("valid");

    let (bare, ours) = best_of_alternating(
        3,
        || {
            rate(ROUND, BATCH, || {
                for _ in 0..BATCH {
                    secp256k1::ecdsa::verify(&signature, digest, &key).expect("valid signature");
                }
            })
        },
        || {
            rate(ROUND, BATCH, || {
                for _ in 0..BATCH {
                    transfer.verify_signature().expect("valid signature");
                }
            })
        },
    );
    Report {
        name: "verify".into(),
        value: ours / 1e3,
        unit: "k verifies/s".into(),
        bound: bare / 1e3,
        target: Some(0.9),
    }
    .publish();
}
