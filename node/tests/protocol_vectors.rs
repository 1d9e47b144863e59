//! The PROTOCOL.md vectors whose rules live in the node rather than the protocol crate
//! (`protocol/tests/vectors.rs` checks the rest): the PeerId of a key, and the median
//! time past. The document is read as it is, so a change to it or to the code that
//! breaks their agreement fails here.

use raclette_node::chain::validate::median_time;
use raclette_node::network::identity::peer_id_of;
use raclette_node::testkit::keypair;

/// The body of the fenced block named `name` in PROTOCOL.md.
fn vector(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let document = std::fs::read_to_string(path).expect("PROTOCOL.md is readable");
    let mut lines = document.lines();
    lines
        .by_ref()
        .find(|line| line.starts_with("```") && line.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no vector {name} in PROTOCOL.md"));
    lines.take_while(|line| !line.starts_with("```")).collect::<Vec<_>>().join("\n")
}

#[test]
fn given_alices_key_then_its_peer_id_is_the_documents_in_bytes_and_text() {
    // The document's alice has the secret SHA-256("alice"), as the test kit does.
    let peer = peer_id_of(&keypair("alice").public());
    let hex: String = vector("alice-peer-id").split_whitespace().collect();
    let bytes: String = peer.to_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(bytes, hex);
    assert_eq!(peer.to_string(), vector("alice-peer-id-text").trim());
}

#[test]
fn given_the_median_time_vectors_then_the_node_computes_each_median() {
    let cases = vector("median-time-past");
    let mut checked = 0;
    for line in cases.lines().filter(|line| !line.trim().is_empty()) {
        let (times, median) = line.split_once("->").expect("TIMES -> MEDIAN");
        let times: Vec<u64> =
            times.split_whitespace().map(|time| time.parse().expect("a time")).collect();
        let median: u64 = median.trim().parse().expect("a median");
        assert_eq!(median_time(times.clone()), median, "{times:?}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} cases");
}
