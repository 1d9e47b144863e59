//! The API's guard, as a web page or another local user would meet it: nothing without
//! this start's token from `DATA/api.cookie`, nothing through a `Host` that names another
//! machine (DNS rebinding), and no listening beyond loopback unless asked for.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use raclette_integration_tests::harness::{NodeOptions, NodeProcess, binaries};

/// Sends one raw HTTP request to the node's API; returns the status code and the body.
fn request(
    node: &NodeProcess,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, String) {
    let address = node.api.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn given_requests_without_the_token_or_through_a_foreign_host_then_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start("alice", &dir.path().join("alice"), &NodeOptions::default());
    let host = node.api.trim_start_matches("http://").to_string();
    let cookie = dir.path().join("alice/api.cookie");
    assert_eq!(std::fs::metadata(&cookie).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&cookie).unwrap(), format!("{}\n", node.token));

    // A page's no-cors POST carries no token: the wallet and the node stay put.
    let (status, body) = request(&node, "POST", "/api/shutdown", &host, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("api.cookie"), "the error says where the token is: {body}");
    let (status, _) = request(&node, "GET", "/api/inbox", &host, Some("0".repeat(64).as_str()));
    assert_eq!(status, 401, "a wrong token");
    // A rebound DNS name reaches 127.0.0.1 but names another host.
    let (status, body) = request(&node, "GET", "/api/inbox", "evil.example", Some(&node.token));
    assert_eq!(status, 403, "{body}");
    // The owner, by address or by localhost.
    let (status, body) = request(&node, "GET", "/api/status", &host, Some(&node.token));
    assert_eq!(status, 200, "{body}");
    let port = host.rsplit(':').next().unwrap();
    let (status, _) =
        request(&node, "GET", "/api/status", &format!("localhost:{port}"), Some(&node.token));
    assert_eq!(status, 200);
    assert!(node.is_running(), "refused requests did nothing");

    // Every start has its own token: the old one stops working.
    let old = node.token.clone();
    node.restart();
    assert_ne!(node.token, old);
    let host = node.api.trim_start_matches("http://").to_string();
    assert_eq!(request(&node, "GET", "/api/status", &host, Some(&old)).0, 401);
    assert_eq!(request(&node, "GET", "/api/status", &host, Some(&node.token)).0, 200);
}

#[test]
fn given_a_non_loopback_api_address_without_the_flag_then_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(&binaries().node)
        .args(["--name", "alice", "--network", "dev", "--daemon", "--api", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--api-allow-remote"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}
