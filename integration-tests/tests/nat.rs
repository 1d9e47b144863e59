//! Across the internet, in miniature: Linux network namespaces for a "public" host with
//! the tracker and two homes, each behind its own NAT router (masquerade, no forwarded
//! port). Alice and Bob, behind different NATs, find each other by name through the
//! tracker (given by DNS name), exchange a direct encrypted transfer and agree on mined
//! blocks — over a hole-punched direct connection when the NATs allow it, through the
//! tracker's relay when they randomise ports.
//!
//! Needs root, iproute2 and nftables (`.ci/run` installs them). Set
//! `RACLETTE_SKIP_NETNS=1` to skip on a machine where that is impossible; otherwise a
//! missing prerequisite fails the test rather than hiding it.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, network_file, test_params, wait_for,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(90);

/// How the home routers translate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nat {
    /// Keeps source ports when it can, and drops unsolicited traffic from the internet
    /// like a home router does: hole punching works.
    HomeRouter,
    /// A new random port per destination: hole punching cannot work; relay only.
    Symmetric,
}

fn run(args: &[&str]) {
    let output =
        Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn run_quietly(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

fn ns_run(ns: &str, args: &[&str]) {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full);
}

fn nft(ns: &str, rules: &str) {
    let file = std::env::temp_dir().join(format!("raclette-{ns}.nft"));
    std::fs::write(&file, rules).unwrap();
    ns_run(ns, &["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(file);
}

/// Namespaces, links and name files of one scenario; all removed on drop, also when the
/// test fails.
struct Topology {
    id: u8,
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        format!("rc{}-{role}", self.id)
    }

    fn public_ip(&self) -> String {
        format!("203.0.113.{}", self.id)
    }

    /// The management address of a namespace (from the host), where APIs listen.
    fn mgmt_ip(&self, slot: u8) -> String {
        format!("10.250.{}.2", self.id * 10 + slot)
    }

    fn lan_ip(&self, home: u8) -> String {
        format!("172.16.{}.2", self.id * 10 + home)
    }

    fn remove(&self) {
        for ns in &self.namespaces {
            run_quietly(&["ip", "netns", "del", ns]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        for link in &self.host_links {
            run_quietly(&["ip", "link", "del", link]);
        }
    }

    fn build(id: u8, nat: Nat) -> Self {
        let mut topology = Topology { id, namespaces: Vec::new(), host_links: Vec::new() };
        for role in ["pub", "ra", "ha", "rb", "hb"] {
            topology.namespaces.push(topology.ns(role));
        }
        topology.remove(); // leftovers of an interrupted run
        for ns in &topology.namespaces {
            run(&["ip", "netns", "add", ns]);
            ns_run(ns, &["ip", "link", "set", "lo", "up"]);
        }
        let (public, ra, ha, rb, hb) = (
            topology.ns("pub"),
            topology.ns("ra"),
            topology.ns("ha"),
            topology.ns("rb"),
            topology.ns("hb"),
        );
        // The internet: the public host holds the tracker's address and routes between
        // the routers' WAN links.
        ns_run(
            &public,
            &["ip", "addr", "add", &format!("{}/32", topology.public_ip()), "dev", "lo"],
        );
        ns_run(&public, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (side, router, home, index) in [("a", &ra, &ha, 1u8), ("b", &rb, &hb, 2u8)] {
            let wan_net = format!("10.{}.{index}", id);
            let lan_net = format!("172.16.{}", id * 10 + index);
            // WAN: public host <-> router.
            run(&[
                "ip",
                "link",
                "add",
                &format!("rc{id}w{side}"),
                "netns",
                &public,
                "type",
                "veth",
                "peer",
                "name",
                "wan",
                "netns",
                router,
            ]);
            ns_run(
                &public,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{wan_net}.1/24"),
                    "dev",
                    &format!("rc{id}w{side}"),
                ],
            );
            ns_run(&public, &["ip", "link", "set", &format!("rc{id}w{side}"), "up"]);
            ns_run(router, &["ip", "addr", "add", &format!("{wan_net}.2/24"), "dev", "wan"]);
            ns_run(router, &["ip", "link", "set", "wan", "up"]);
            ns_run(router, &["ip", "route", "add", "default", "via", &format!("{wan_net}.1")]);
            ns_run(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            // LAN: router <-> home.
            run(&[
                "ip", "link", "add", "lan", "netns", router, "type", "veth", "peer", "name",
                "eth0", "netns", home,
            ]);
            ns_run(router, &["ip", "addr", "add", &format!("{lan_net}.1/24"), "dev", "lan"]);
            ns_run(router, &["ip", "link", "set", "lan", "up"]);
            ns_run(home, &["ip", "addr", "add", &format!("{lan_net}.2/24"), "dev", "eth0"]);
            ns_run(home, &["ip", "link", "set", "eth0", "up"]);
            ns_run(home, &["ip", "route", "add", "default", "via", &format!("{lan_net}.1")]);
            let masquerade = match nat {
                Nat::HomeRouter => "masquerade",
                Nat::Symmetric => "masquerade random,fully-random",
            };
            nft(
                router,
                &format!(
                    "table ip nat {{
                       chain postrouting {{
                         type nat hook postrouting priority 100;
                         oifname \"wan\" {masquerade}
                       }}
                     }}
                     table ip filter {{
                       chain input_chain {{
                         type filter hook input priority 0; policy accept;
                         iifname \"wan\" ct state new drop
                       }}
                       chain forward {{
                         type filter hook forward priority 0; policy drop;
                         iifname \"lan\" accept
                         iifname \"wan\" ct state established,related accept
                       }}
                     }}
                    "
                ),
            );
            // Names: the homes know the tracker as tracker.test.
            let etc = Path::new("/etc/netns").join(home);
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(
                etc.join("hosts"),
                format!("127.0.0.1 localhost\n{} tracker.test\n", topology.public_ip()),
            )
            .unwrap();
            std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        }
        // Management links from the host, for the test to reach the APIs.
        for (slot, ns) in [(0u8, &public), (1, &ha), (2, &hb)] {
            let host_link = format!("rc{id}m{slot}");
            let net = format!("10.250.{}", id * 10 + slot);
            run(&[
                "ip", "link", "add", &host_link, "type", "veth", "peer", "name", "mgmt", "netns",
                ns,
            ]);
            run(&["ip", "addr", "add", &format!("{net}.1/30"), "dev", &host_link]);
            run(&["ip", "link", "set", &host_link, "up"]);
            ns_run(ns, &["ip", "addr", "add", &format!("{net}.2/30"), "dev", "mgmt"]);
            ns_run(ns, &["ip", "link", "set", "mgmt", "up"]);
            topology.host_links.push(host_link);
        }
        topology
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

fn prerequisites_missing() -> Option<String> {
    if std::env::var_os("RACLETTE_SKIP_NETNS").is_some() {
        return Some("RACLETTE_SKIP_NETNS is set".into());
    }
    None
}

fn in_ns(ns: &str) -> Vec<String> {
    ["ip", "netns", "exec", ns].iter().map(ToString::to_string).collect()
}

fn link_to(node: &NodeProcess, name: &str) -> Option<String> {
    let peers = node.get("peers");
    let peer: &Value = peers.as_array()?.iter().find(|p| p["name"] == name)?;
    peer["link"].as_str().map(str::to_string)
}

/// Builds the topology, starts the tracker and alice and bob, and checks the whole
/// story; returns the final link between them.
fn scenario(id: u8, nat: Nat, dir: &Path) -> String {
    let topology = Topology::build(id, nat);
    let tracker = TrackerProcess::start_with(
        &dir.join("tracker"),
        &[
            format!("/ip4/{}/tcp/7000", topology.public_ip()),
            format!("/ip4/{}/udp/7000/quic-v1", topology.public_ip()),
        ],
        &format!("{}:7080", topology.mgmt_ip(0)),
        &in_ns(&topology.ns("pub")),
    );
    let tracker_id = tracker.address.rsplit("/p2p/").next().unwrap().to_string();
    let params = test_params(&format!("nat{id}"), 10);
    let file: PathBuf = network_file(dir, &params);
    let node = |name: &str, home: &str, slot: u8| {
        let options = NodeOptions {
            trackers: vec![format!("/dns4/tracker.test/tcp/7000/p2p/{tracker_id}")],
            network_file: Some(file.clone()),
            prefix: in_ns(&topology.ns(home)),
            listen: vec![
                format!("/ip4/{}/tcp/4001", topology.lan_ip(slot)),
                format!("/ip4/{}/udp/4001/quic-v1", topology.lan_ip(slot)),
            ],
            api: Some(format!("{}:8080", topology.mgmt_ip(slot))),
            ..NodeOptions::default()
        };
        NodeProcess::start(name, &dir.join(name), &options)
    };
    let alice = node("alice", "ha", 1);
    let bob = node("bob", "hb", 2);

    // Found by name through the tracker, reachable through its relay at least.
    for (me, other) in [(&alice, "bob"), (&bob, "alice")] {
        wait_for(&format!("{} to reach {other}", me.name), PATIENCE, || link_to(me, other));
    }
    alice.mine(1);
    wait_for("bob on alice's block", PATIENCE, || (bob.tip() == alice.tip()).then_some(()));
    let (txid, status) = alice.send("bob", "5", "through two NATs");
    assert_eq!(status, "accepted", "sent straight to bob across the NATs");
    let inbox = bob.get("inbox");
    let item = inbox.as_array().unwrap().iter().find(|i| i["txid"] == txid.as_str()).unwrap();
    assert_eq!(item["message"], "through two NATs");
    bob.mine(1);
    wait_for("alice on bob's block", PATIENCE, || (alice.tip() == bob.tip()).then_some(()));
    assert_eq!(alice.balance("bob"), bob.balance("bob"));
    assert_eq!(alice.balance("bob"), "55.001", "bob's reward, alice's 5 and her fee");

    let link = match nat {
        Nat::HomeRouter => {
            wait_for("the relayed connection to be upgraded to direct", PATIENCE, || {
                (link_to(&alice, "bob").as_deref() == Some("direct")).then_some(())
            });
            // Independently of what the nodes say: alice's router tracks a flow straight to
            // bob's router that got answers (not UNREPLIED), not only flows to the tracker.
            let bob_router = format!("10.{id}.2.2");
            let flows = Command::new("ip")
                .args(["netns", "exec", &topology.ns("ra"), "conntrack", "-L"])
                .output()
                .unwrap();
            let flows = String::from_utf8_lossy(&flows.stdout);
            assert!(
                flows.lines().any(|flow| flow.contains(&format!("dst={bob_router}"))
                    && !flow.contains("UNREPLIED")),
                "no answered flow from alice's router to bob's router:\n{flows}"
            );
            "direct".to_string()
        }
        Nat::Symmetric => link_to(&alice, "bob").unwrap(),
    };
    drop((alice, bob, tracker));
    link
}

#[test]
fn given_nodes_behind_home_routers_then_they_meet_trade_agree_and_hole_punch_to_direct() {
    if let Some(reason) = prerequisites_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(scenario(1, Nat::HomeRouter, dir.path()), "direct");
}

#[test]
fn given_nats_that_defeat_hole_punching_then_everything_works_through_the_relay() {
    if let Some(reason) = prerequisites_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(scenario(2, Nat::Symmetric, dir.path()), "relayed");
}

#[test]
fn given_twenty_nodes_behind_one_nat_then_a_block_and_a_transfer_from_another_home_reach_them_all()
{
    if let Some(reason) = prerequisites_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    const CROWD: u16 = 20;
    let dir = tempfile::tempdir().unwrap();
    // Random ports per destination: the crowd's links to the outside are relayed.
    let topology = Topology::build(3, Nat::Symmetric);
    let tracker = TrackerProcess::start_with(
        &dir.path().join("tracker"),
        &[format!("/ip4/{}/tcp/7000", topology.public_ip())],
        &format!("{}:7080", topology.mgmt_ip(0)),
        &in_ns(&topology.ns("pub")),
    );
    let tracker_id = tracker.address.rsplit("/p2p/").next().unwrap().to_string();
    let file = network_file(dir.path(), &test_params("crowd", 10));
    let node = |name: &str, home: &str, slot: u8, port: u16| {
        let options = NodeOptions {
            trackers: vec![format!("/dns4/tracker.test/tcp/7000/p2p/{tracker_id}")],
            network_file: Some(file.clone()),
            prefix: in_ns(&topology.ns(home)),
            listen: vec![format!("/ip4/{}/tcp/{}", topology.lan_ip(slot), 4000 + port)],
            api: Some(format!("{}:{}", topology.mgmt_ip(slot), 8000 + port)),
            ..NodeOptions::default()
        };
        NodeProcess::start(name, &dir.path().join(name), &options)
    };
    let crowd: Vec<NodeProcess> =
        (1..=CROWD).map(|i| node(&format!("home{i:02}"), "ha", 1, i)).collect();
    let bob = node("bob", "hb", 2, 1);
    wait_for("bob linked to some of the crowd", PATIENCE, || {
        bob.peer_names().iter().any(|(_, connected)| *connected).then_some(())
    });
    let started = std::time::Instant::now();
    let tip = bob.mine(1)["mined"][0]["hash"].as_str().unwrap().to_string();
    for home in &crowd {
        wait_for(&format!("{} on bob's block", home.name), PATIENCE, || {
            (home.tip() == tip).then_some(())
        });
    }
    eprintln!("bob's block reached all {CROWD} in {} ms", started.elapsed().as_millis());
    let last = crowd.last().unwrap();
    let (txid, _) = bob.send(&last.name, "3", "to the last one behind the NAT");
    wait_for("the transfer in the last one's inbox", PATIENCE, || {
        let inbox = last.get("inbox");
        inbox.as_array()?.iter().any(|item| item["txid"] == txid.as_str()).then_some(())
    });
    let relayed = crowd.iter().filter(|home| link_to(home, "bob").as_deref() == Some("relayed"));
    eprintln!("{} of the crowd hold a relayed link to bob", relayed.count());
    drop((crowd, bob, tracker));
}
