//! The node's web page in a real browser (headless Chromium over CDP), with a node and two
//! peers: it shows the chain and follows it live, sends money through its form, shows the
//! transfer pending, then mined (on its transaction and block pages, the block found
//! through the search box), and the reply in the inbox. A page on another origin
//! cannot use the API. Screenshots of each screen, at desktop and phone widths, go to
//! `target/web/`.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Set `RACLETTE_SKIP_BROWSER=1` to
//! skip on a machine without it; otherwise its absence fails the test rather than hiding
//! it.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::types::Bounds;
use headless_chrome::{Browser, LaunchOptions, Tab};
use raclette_integration_tests::harness::{
    NodeOptions, NodeProcess, TrackerProcess, network_file, test_params, wait_for,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);
const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, or `None` when the user chose to skip without it.
fn chromium() -> Option<PathBuf> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM.into());
    }
    if std::env::var_os("RACLETTE_SKIP_BROWSER").is_some() {
        eprintln!("skipped: {CHROMIUM} is missing and RACLETTE_SKIP_BROWSER is set");
        return None;
    }
    panic!("{CHROMIUM} is missing: apt-get install chromium, or set RACLETTE_SKIP_BROWSER=1");
}

fn launch(path: PathBuf) -> Browser {
    let options = LaunchOptions::default_builder()
        .path(Some(path))
        .headless(true)
        .sandbox(false) // tests run as root
        .window_size(Some((1280, 900)))
        .idle_browser_timeout(Duration::from_secs(300))
        .args(vec![
            OsStr::new("--disable-gpu"),
            OsStr::new("--disable-quic"),
            OsStr::new("--disable-component-update"),
        ])
        .build()
        .unwrap();
    Browser::new(options).unwrap()
}

/// Evaluates `expression` in the page; its value as JSON (null when undefined).
fn eval(tab: &Tab, expression: &str) -> Value {
    tab.evaluate(expression, true).unwrap().value.unwrap_or(Value::Null)
}

/// The text of the first element matching `selector`, or "" while there is none.
fn text(tab: &Tab, selector: &str) -> String {
    let expression =
        format!("(document.querySelector({}) || {{}}).textContent || ''", Value::from(selector));
    eval(tab, &expression).as_str().unwrap_or_default().to_string()
}

/// Waits until the element matching `selector` contains `needle`; polls the live DOM,
/// since a page with an open event stream never goes idle.
fn wait_text(tab: &Tab, selector: &str, needle: &str) -> String {
    wait_for(&format!("{selector} to show {needle:?}"), PATIENCE, || {
        let shown = text(tab, selector);
        shown.contains(needle).then_some(shown)
    })
}

/// Waits until an element matches `selector`.
fn wait_element(tab: &Tab, selector: &str) {
    let script = format!("!!document.querySelector({})", Value::from(selector));
    wait_for(&format!("{selector} on the page"), PATIENCE, || {
        eval(tab, &script).as_bool()?.then_some(())
    });
}

/// Types `query` into the search box and submits it, as a user presses Enter.
fn search(tab: &Tab, query: &str) {
    let script = format!(
        "document.querySelector('#search').value = {};\
         document.querySelector('#search-form').requestSubmit(); true",
        Value::from(query)
    );
    eval(tab, &script);
}

fn go(tab: &Tab, route: &str) {
    eval(tab, &format!("location.hash = {}", Value::from(route)));
}

/// Saves the page as it looks now at `width`×`height` to `target/web/NAME-WIDTH.png`.
fn screenshot(tab: &Tab, name: &str, (width, height): (u32, u32)) {
    let bounds = Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(width)),
        height: Some(f64::from(height)),
    };
    tab.set_bounds(bounds).unwrap();
    // Two frames: the new width is laid out and painted.
    eval(
        tab,
        "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
    );
    let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
}

fn screenshots(tab: &Tab, name: &str) {
    screenshot(tab, name, (390, 844));
    screenshot(tab, name, (1280, 900));
}

#[test]
fn given_the_page_with_the_token_then_it_follows_the_chain_sends_and_shows_the_inbox() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&dir.path().join("tracker"));
    let params = test_params("web", 12);
    let options = NodeOptions {
        trackers: vec![tracker.address.clone()],
        network_file: Some(network_file(dir.path(), &params)),
        ..NodeOptions::default()
    };
    let nodes: Vec<NodeProcess> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| NodeProcess::start(name, &dir.path().join(name), &options))
        .collect();
    let [alice, bob, _carol] = &nodes[..] else { unreachable!() };
    for node in &nodes {
        wait_for(&format!("{} to see both others", node.name), PATIENCE, || {
            let peers = node.peer_names();
            (peers.len() == 2 && peers.iter().all(|(_, connected)| *connected)).then_some(())
        });
    }
    alice.mine(2);

    let browser = launch(chromium);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{}/#token={}", alice.api, alice.token)).unwrap();
    // The chain height, and the token gone from the address bar.
    wait_text(&tab, "#height", "2");
    wait_text(&tab, "#blocks", "alice");
    assert!(!eval(&tab, "location.href").as_str().unwrap().contains("token"));

    // Live: a block mined elsewhere appears without a reload.
    bob.mine(1);
    wait_text(&tab, "#height", "3");
    wait_element(&tab, "#blocks [data-height=\"3\"]");
    screenshots(&tab, "explorer");

    // Send 2 to bob through the form.
    go(&tab, "#/wallet");
    wait_for("bob in the send form", PATIENCE, || {
        let script =
            "[...document.querySelectorAll('#send-to option')].some(o => o.value === 'bob')";
        eval(&tab, script).as_bool()?.then_some(())
    });
    eval(
        &tab,
        "document.querySelector('#send-to').value = 'bob';\
         document.querySelector('#send-amount').value = '2';\
         document.querySelector('#send-message').value = 'for the fondue';\
         document.querySelector('#send-button').click(); true",
    );
    let result = wait_text(&tab, "#send-result", "bob accepted it");
    let short = result.split("(tx ").nth(1).unwrap().trim_end_matches(')').trim().to_string();
    let txid = wait_for("the transfer in alice's mempool", PATIENCE, || {
        alice.mempool_ids().into_iter().find(|id| id.starts_with(&short))
    });
    screenshots(&tab, "wallet");

    // Pending in the mempool, then in a block.
    go(&tab, "#/");
    wait_element(&tab, &format!("#mempool [data-txid=\"{txid}\"]"));
    alice.mine(1);
    wait_text(&tab, "#height", "4");
    go(&tab, &format!("#/tx/{txid}"));
    wait_text(&tab, "#tx-view", "confirmed");
    wait_text(&tab, "#tx-view", "for the fondue");
    screenshots(&tab, "transaction");
    // The block that holds it, found through the search box by its height.
    search(&tab, "4");
    wait_text(&tab, "#block-view", "alice");
    wait_element(&tab, &format!("#block-txs [data-txid=\"{txid}\"]"));
    wait_text(&tab, "#block-txs", "for the fondue");
    screenshots(&tab, "block");
    // A name in the search box: that peer's balance.
    search(&tab, "bob");
    wait_text(&tab, "#search-result", "confirmed");

    // Bob answers; alice's inbox shows it.
    bob.send("alice", "1", "merci alice");
    go(&tab, "#/wallet");
    wait_text(&tab, "#inbox", "merci alice");
    go(&tab, "#/network");
    wait_text(&tab, "#peers", "bob");
    screenshots(&tab, "network");
    go(&tab, "#/mining");
    wait_element(&tab, "#mine-button");
    wait_element(&tab, "#hash-rate");
    screenshots(&tab, "mining");

    // A page on another origin (the tracker's, another port) posts to the API as any web
    // page could (a no-cors POST needs no preflight), without the token: nothing happens.
    let other = browser.new_tab().unwrap();
    other.navigate_to(&format!("{}/api/peers", tracker.api)).unwrap();
    let attack = format!(
        "fetch('{}/api/shutdown', {{method: 'POST', mode: 'no-cors'}})\
         .then(() => 'sent', () => 'failed')",
        alice.api
    );
    assert_eq!(eval(&other, &attack), "sent", "the request left the browser");
    assert_eq!(alice.height(), 4, "alice still answers: the request was refused");
    let mut alice = nodes.into_iter().next().unwrap();
    assert!(alice.is_running(), "the cross-origin POST did not stop the node");
}
