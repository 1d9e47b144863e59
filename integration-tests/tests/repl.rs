//! The demo and the REPL on a pseudo-terminal, as a user types: the demo network comes
//! up, commands work, every mistake gets one clear line, and `quit` cleans up.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::process::Command;

use raclette_integration_tests::harness::binaries;
use rexpect::reader::Options;
use rexpect::session::spawn_with_options;

#[test]
fn given_the_demo_on_a_terminal_when_a_user_types_then_it_answers_like_the_readme_says() {
    let mut command = Command::new(&binaries().node);
    command.args(["demo", "--threads", "1"]);
    let options = Options::new().timeout_ms(Some(60_000)).strip_ansi_escape_codes(true);
    let mut repl = spawn_with_options(command, options).unwrap();
    repl.exp_string("logs in ").unwrap();
    let logs = repl.exp_string("\n").unwrap().trim().to_string();
    repl.exp_string("alice> ").unwrap();

    // The background peers come up and are found through the tracker.
    let mut both_connected = false;
    for _ in 0..100 {
        repl.send_line("peers").unwrap();
        let listing = repl.exp_string("alice> ").unwrap();
        if listing.matches("connected (direct)").count() == 2
            && listing.contains("bob")
            && listing.contains("carol")
        {
            both_connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(both_connected, "bob and carol connected");

    repl.send_line("mine 2").unwrap();
    repl.exp_string("mined 2 block(s), lost 0").unwrap();
    repl.send_line("sned bob 5").unwrap();
    repl.exp_string("unknown command 'sned'; did you mean 'send'?").unwrap();
    repl.send_line("send carl 1").unwrap();
    repl.exp_string("unknown peer 'carl'; known peers: bob, carol").unwrap();
    repl.send_line("send bob lots").unwrap();
    repl.exp_string("'lots' is not a number").unwrap();
    repl.send_line("send bob 1000").unwrap();
    repl.exp_string("insufficient balance").unwrap();
    repl.send_line("send bob 5 hello bob").unwrap();
    repl.exp_string("bob accepted it").unwrap();

    // `send` alone asks: the peer from a numbered list, the amount, the message.
    repl.send_line("send").unwrap();
    repl.exp_string("peer [1-2]: ").unwrap();
    repl.send_line("2").unwrap();
    repl.exp_string("amount: ").unwrap();
    repl.send_line("1.5").unwrap();
    repl.exp_string("message: ").unwrap();
    repl.send_line("hi carol").unwrap();
    repl.exp_string("carol accepted it").unwrap();

    repl.send_line("balance").unwrap();
    repl.exp_string("alice: 100 confirmed, 93.498 with pending").unwrap();
    repl.send_line("help send").unwrap();
    repl.exp_string("NAME").unwrap();
    repl.send_line("quit").unwrap();
    repl.exp_eof().unwrap();
    assert!(!std::path::Path::new(&logs).exists(), "the demo removed {logs}");
}
