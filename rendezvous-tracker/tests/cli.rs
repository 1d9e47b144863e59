//! The tracker's command line: it prints its dialable address and keeps its identity
//! across restarts; bad flags get one clear line.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TRACKER: &str = env!("CARGO_BIN_EXE_raclette-tracker");

/// Starts the tracker in `dir`, returns the first address it prints, and kills it.
fn first_address(dir: &std::path::Path) -> String {
    let mut child = Command::new(TRACKER)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = lines
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("tracker address: ").map(str::to_string))
        .expect("the tracker prints its address");
    child.kill().unwrap();
    child.wait().unwrap();
    address
}

#[test]
fn given_restart_with_same_data_then_same_peer_id_and_key_file_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = first_address(dir.path());
    let second = first_address(dir.path());
    let peer = |address: &str| address.rsplit("/p2p/").next().unwrap().to_string();
    assert!(first.starts_with("/ip4/127.0.0.1/tcp/"), "{first}");
    assert_eq!(peer(&first), peer(&second));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tracker.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn given_unparsable_listen_address_then_refused_with_a_reason() {
    let output = Command::new(TRACKER).args(["--listen", "not-an-address"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}
