//! The REPL: line editing, history and completion (rustyline); each line is split with
//! shell rules and parsed by clap, so a mistake prints one clear line and the prompt
//! comes back. What happens meanwhile (a payment arrives, a peer mines a block) is
//! printed above the prompt through rustyline's external printer, so it never tears the
//! line being typed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use raclette_protocol::Amount;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Context, Editor, ExternalPrinter, Helper, Highlighter, Hinter, Validator};
use tokio::runtime::Handle;

use crate::api::parse_block_id;
use crate::node::{
    BalanceView, MineView, NodeHandle, Notice, PeerView, Request, StatusView, UserError,
};

/// One REPL line.
#[derive(Parser, Debug)]
#[command(multicall = true, disable_help_subcommand = true, disable_help_flag = true)]
struct Line {
    #[command(subcommand)]
    command: ReplCommand,
}

/// The REPL commands.
#[derive(Subcommand, Debug)]
enum ReplCommand {
    /// List the commands, or explain one: help [COMMAND]
    Help {
        /// The command to explain.
        command: Option<String>,
    },
    /// Your name, PeerId, public key, addresses and balance
    Whoami,
    /// The directory: name, short key, connected (direct or relayed), last seen
    Peers,
    /// Send money and an encrypted message: send NAME AMOUNT [MESSAGE...]; `send` alone asks
    Send {
        /// The receiver's name.
        name: Option<String>,
        /// The amount, like 5 or 0.25.
        amount: Option<String>,
        /// The message (the rest of the line).
        message: Vec<String>,
    },
    /// Mine N blocks with all threads (default 1): mine [N]
    Mine {
        /// How many heights to try.
        n: Option<u32>,
    },
    /// Your balance or a peer's, confirmed and pending: balance [NAME]
    Balance {
        /// A peer's name.
        name: Option<String>,
    },
    /// Messages you received: from, amount, text, pending or in block H
    Inbox,
    /// Pending transactions
    Mempool,
    /// The last N blocks (default 10): chain [N]
    Chain {
        /// How many.
        n: Option<usize>,
    },
    /// One block with its transactions: block HEIGHT|HASH
    Block {
        /// A height or a block hash.
        id: String,
    },
    /// Network, height, tip, work, difficulty, peers, sync state, trackers
    Status,
    /// Stop the node cleanly
    #[command(alias = "exit")]
    Quit,
}

const COMMANDS: [&str; 13] = [
    "help", "whoami", "peers", "send", "mine", "balance", "inbox", "mempool", "chain", "block",
    "status", "quit", "exit",
];

/// Completes command names, and peer names after `send` and `balance`.
#[derive(Helper, Hinter, Highlighter, Validator)]
struct ReplHelper {
    peers: Arc<Mutex<Vec<String>>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let candidates: Vec<String> = match words.as_slice() {
            [] => COMMANDS.iter().map(|c| c.to_string()).collect(),
            ["send" | "balance"] => self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            ["help"] => COMMANDS.iter().map(|c| c.to_string()).collect(),
            _ => Vec::new(),
        };
        let pairs = candidates
            .into_iter()
            .filter(|c| c.to_ascii_lowercase().starts_with(&word.to_ascii_lowercase()))
            .map(|c| Pair { display: c.clone(), replacement: format!("{c} ") })
            .collect();
        Ok((start, pairs))
    }
}

/// Turns a notice into the line shown above the prompt, or nothing.
struct NoticeFormatter {
    last_progress: Option<Instant>,
}

impl NoticeFormatter {
    fn format(&mut self, notice: &Notice) -> Option<String> {
        let throttled = |last: &mut Option<Instant>| {
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(3)) {
                return true;
            }
            *last = Some(now);
            false
        };
        Some(match notice {
            Notice::Received { from, amount, text, height } => {
                let text = if text.is_empty() { String::new() } else { format!(": {text}") };
                let place = match height {
                    None => " (pending until mined)".to_string(),
                    Some(height) => format!(" (in block {height})"),
                };
                format!("{from} sent you {amount}{text}{place}")
            }
            Notice::BlockFromPeer { miner, height } => format!("{miner} mined block {height}"),
            Notice::Mining { height, rate } => {
                if throttled(&mut self.last_progress) {
                    return None;
                }
                format!("mining block {height} at {}", hash_rate(*rate))
            }
            Notice::Mined { height, hash } => {
                format!("you mined block {height} ({})", hash.short())
            }
            Notice::Lost { height, winner } => {
                format!(
                    "MiningComplete: {winner} won block {height}; adopted it, mining goes on from the new tip"
                )
            }
            Notice::Reorganized { disconnected, connected } => {
                format!(
                    "switched to a heavier branch: {disconnected} blocks replaced by {connected}"
                )
            }
            Notice::Syncing { height, target } => {
                if throttled(&mut self.last_progress) {
                    return None;
                }
                format!("catching up: block {height} of {target}")
            }
            Notice::Synced { height } => format!("caught up at block {height}"),
            Notice::PeerJoined { name } => format!("{name} joined"),
            Notice::NameRefused { reason } => format!("{reason}; stopping"),
            Notice::NameContested { reason } => {
                format!("{reason}; the other trackers keep it for you")
            }
            Notice::Tip { .. } => return None, // blocks are announced as they come
        })
    }
}

/// A hash rate with a unit.
pub fn hash_rate(rate: f64) -> String {
    match rate {
        r if r >= 1e9 => format!("{:.2} GH/s", r / 1e9),
        r if r >= 1e6 => format!("{:.2} MH/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1} kH/s", r / 1e3),
        r => format!("{r:.0} H/s"),
    }
}

/// How long ago, in words.
/// `text` from the network (a message, a memo, a peer's or tracker's reason) as it may
/// be shown on a terminal: control characters, newlines included, are written as escapes
/// (`\x1b`), so no sender can move the cursor, recolour the screen or fake a line.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            shown.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else if is_bidi_control(c) {
            shown.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// The characters that reorder text on terminals that support bidirectional text
/// ("carol\u{202e}evil" would show as "carollive").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line of `peers`: a connected peer is seen now, so only the others say when.
fn peer_line(peer: &PeerView, now: u64) -> String {
    let state = match peer.link {
        Some(link) => format!("connected ({link})"),
        None => format!("not connected, last seen {}", ago(peer.last_seen, now)),
    };
    let conflict = match peer.also_claimed_by.as_slice() {
        [] => String::new(),
        others => format!("  (also claimed by {}; this key was seen first)", others.join(", ")),
    };
    format!("{:<16} {:<14} {state}{conflict}", peer.name, &peer.key[..12])
}

/// How long before `now` the time `ms` was, in the largest whole unit.
fn ago(ms: u64, now: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let seconds = now.saturating_sub(ms) / 1000;
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86_399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// One line for a clap error: the problem, with clap's suggestion if it has one.
fn one_line(error: &clap::Error) -> String {
    if error.kind() == ErrorKind::InvalidSubcommand {
        let given = match error.get(ContextKind::InvalidSubcommand) {
            Some(ContextValue::String(given)) => given.clone(),
            _ => String::new(),
        };
        return match error.get(ContextKind::SuggestedSubcommand) {
            Some(ContextValue::String(suggestion)) => {
                format!("unknown command '{given}'; did you mean '{suggestion}'? (help lists them)")
            }
            Some(ContextValue::Strings(suggestions)) if !suggestions.is_empty() => {
                format!(
                    "unknown command '{given}'; did you mean '{}'? (help lists them)",
                    suggestions[0]
                )
            }
            _ => format!("unknown command '{given}'; help lists the commands"),
        };
    }
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("invalid command").trim_start_matches("error: ");
    format!("{first} (help explains each command)")
}

/// The REPL session.
struct Repl {
    node: NodeHandle,
    runtime: Handle,
    editor: Editor<ReplHelper, DefaultHistory>,
    peers: Arc<Mutex<Vec<String>>>,
}

impl Repl {
    fn ask<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Request,
    ) -> Result<T, UserError> {
        self.runtime.block_on(self.node.ask(make))
    }

    fn refresh_peer_names(&self) -> Vec<PeerView> {
        let peers = self.ask(Request::Peers).unwrap_or_default();
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) =
            peers.iter().map(|p| p.name.clone()).collect();
        peers
    }

    /// Runs one command; returns false to quit.
    fn execute(&mut self, command: ReplCommand) -> Result<bool, UserError> {
        match command {
            ReplCommand::Help { command } => println!("{}", help(command.as_deref())),
            ReplCommand::Whoami => {
                let me = self.ask(Request::WhoAmI)?;
                println!(
                    "name:      {}\npeer id:   {}\nkey:       {}",
                    me.name, me.peer_id, me.key
                );
                println!("balance:   {} (pending {})", me.confirmed, me.pending);
                for address in me.addresses {
                    println!("address:   {address}");
                }
            }
            ReplCommand::Peers => {
                let peers = self.refresh_peer_names();
                if peers.is_empty() {
                    println!("no peers known yet");
                }
                let now = crate::node::now_ms();
                for peer in &peers {
                    println!("{}", peer_line(peer, now));
                }
            }
            ReplCommand::Send { name, amount, message } => self.send(name, amount, message)?,
            ReplCommand::Mine { n } => {
                let blocks = n.unwrap_or(1);
                println!("mining {blocks} block(s)...");
                let report: MineView = self.ask(|reply| Request::Mine { blocks, reply })??;
                println!("mined {} block(s), lost {}", report.mined.len(), report.lost.len());
            }
            ReplCommand::Balance { name } => {
                let balance: BalanceView = self.ask(|reply| Request::Balance { name, reply })??;
                println!(
                    "{}: {} confirmed, {} with pending",
                    balance.name, balance.confirmed, balance.pending
                );
            }
            ReplCommand::Inbox => {
                let inbox = self.ask(Request::Inbox)?;
                if inbox.is_empty() {
                    println!("no messages yet");
                }
                for item in inbox {
                    let place =
                        item.height.map_or("pending".to_string(), |h| format!("in block {h}"));
                    println!(
                        "{:<12} {:>14}  {:<12} {}",
                        item.from,
                        item.amount,
                        place,
                        printable(&item.message)
                    );
                }
            }
            ReplCommand::Mempool => {
                let pending = self.ask(Request::Mempool)?;
                if pending.is_empty() {
                    println!("no pending transactions");
                }
                for tx in pending {
                    println!(
                        "{}  {} -> {}  {} (fee {})",
                        &tx.txid[..12],
                        tx.from,
                        tx.to,
                        tx.amount,
                        tx.fee
                    );
                }
            }
            ReplCommand::Chain { n } => {
                let limit = n.unwrap_or(10);
                for block in self.ask(|reply| Request::Blocks { from: None, limit, reply })? {
                    println!(
                        "{:>6}  {}  {:<12} {:>3} tx  {}",
                        block.height,
                        &block.hash[..16],
                        block.miner,
                        block.txs,
                        ago(block.time, crate::node::now_ms())
                    );
                }
            }
            ReplCommand::Block { id } => {
                let id = parse_block_id(&id)?;
                let block = self.ask(|reply| Request::Block { id, reply })??;
                println!(
                    "block {} {}{}",
                    block.height,
                    block.hash,
                    if block.best_chain { "" } else { " (side chain)" }
                );
                println!(
                    "parent {}  miner {}  bits {}  nonce {}",
                    &block.prev[..16],
                    block.miner,
                    block.bits,
                    block.nonce
                );
                for tx in block.transactions {
                    let from = tx.from.unwrap_or_else(|| "(reward)".into());
                    let fee = tx.fee.map(|fee| format!(" fee {fee}")).unwrap_or_default();
                    let text =
                        tx.message.map(|m| format!(": {}", printable(&m))).unwrap_or_default();
                    println!("  {}  {from} -> {}  {}{fee}{text}", &tx.txid[..12], tx.to, tx.amount);
                }
            }
            ReplCommand::Status => print_status(&self.ask(Request::Status)?),
            ReplCommand::Quit => return Ok(false),
        }
        Ok(true)
    }

    fn send(
        &mut self,
        name: Option<String>,
        amount: Option<String>,
        message: Vec<String>,
    ) -> Result<(), UserError> {
        let (name, amount, message) = match (name, amount) {
            (Some(name), Some(amount)) => (name, amount, message.join(" ")),
            (Some(_), None) => {
                return Err(UserError::Invalid(
                    "send NAME AMOUNT [MESSAGE...]: the amount is missing".into(),
                ));
            }
            (None, _) => match self.ask_send()? {
                Some(answers) => answers,
                None => return Ok(()),
            },
        };
        let amount: Amount =
            amount.parse().map_err(|error: raclette_protocol::amount::ParseAmountError| {
                UserError::Invalid(error.to_string())
            })?;
        let to = name.clone();
        let sent = self.ask(|reply| Request::Send { to, amount, message, fee: None, reply })??;
        match sent.status {
            "accepted" => println!("{name} accepted it (tx {})", &sent.txid[..12]),
            _ => println!("could not reach {name}: broadcast instead (tx {})", &sent.txid[..12]),
        }
        if !sent.also_claimed_by.is_empty() {
            println!(
                "note: {} also claim(s) '{name}' at some tracker; it went to the key first seen with that name",
                sent.also_claimed_by.join(", ")
            );
        }
        Ok(())
    }

    /// `send` alone: pick the peer from a numbered list, then the amount, then the message.
    fn ask_send(&mut self) -> Result<Option<(String, String, String)>, UserError> {
        let peers = self.refresh_peer_names();
        if peers.is_empty() {
            return Err(UserError::Invalid(
                "no peers known yet: wait for the tracker or check `status`".into(),
            ));
        }
        for (index, peer) in peers.iter().enumerate() {
            let state = if peer.connected { "connected" } else { "offline" };
            println!("  {:>2}. {} ({state})", index + 1, peer.name);
        }
        let Some(choice) = self.prompt(&format!("peer [1-{}]: ", peers.len())) else {
            return Ok(None);
        };
        let index = choice
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|i| (1..=peers.len()).contains(i))
            .ok_or_else(|| {
            UserError::Invalid(format!("pick a number from 1 to {}", peers.len()))
        })?;
        let Some(amount) = self.prompt("amount: ") else { return Ok(None) };
        let Some(message) = self.prompt("message: ") else { return Ok(None) };
        Ok(Some((peers[index - 1].name.clone(), amount.trim().to_string(), message)))
    }

    fn prompt(&mut self, prompt: &str) -> Option<String> {
        self.editor.readline(prompt).ok()
    }
}

fn print_status(status: &StatusView) {
    println!("network    {} ({})", status.network_name, status.network);
    println!("height     {}  tip {}", status.height, status.tip);
    println!("work       {}  difficulty {:.2}", status.work, status.difficulty);
    let sync = if status.syncing {
        format!("catching up (best known {})", status.best_known_height)
    } else {
        "up to date".into()
    };
    println!(
        "peers      {} connected, {} known  {sync}  mempool {}  {}",
        status.peers,
        status.known_peers,
        status.mempool,
        if status.mining { "mining" } else { "" }
    );
    println!(
        "reachable  {}",
        match status.reachability {
            "public" => "directly (public address)",
            "private" => "through the trackers' relays (behind a NAT)",
            _ => "not known yet",
        }
    );
    for tracker in &status.trackers {
        println!(
            "tracker    {} {}",
            tracker.peer_id,
            if tracker.connected { "connected" } else { "not connected" }
        );
    }
}

/// `help` and `help COMMAND`.
fn help(command: Option<&str>) -> String {
    let mut cli = Line::command();
    match command {
        None => {
            let mut out = String::from("commands:\n");
            for sub in cli.get_subcommands() {
                let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
                out.push_str(&format!("  {:<9} {about}\n", sub.get_name()));
            }
            out.push_str("Tab completes commands and peer names; Ctrl-D quits.");
            out
        }
        Some(name) => match cli.find_subcommand_mut(name) {
            Some(sub) => sub.render_long_help().to_string(),
            None => format!("unknown command '{name}'; help lists the commands"),
        },
    }
}

/// Runs the REPL on this terminal until `quit` or Ctrl-D. Blocking: call it from a
/// thread that may block, with a handle to the runtime the node runs on.
pub fn run(node: NodeHandle, runtime: Handle, history: &Path, name: &str) -> rustyline::Result<()> {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let mut editor: Editor<ReplHelper, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(ReplHelper { peers: peers.clone() }));
    let _ = editor.load_history(history);
    let mut printer = editor.create_external_printer()?;
    let mut notices = node.notices.subscribe();
    runtime.spawn(async move {
        let mut formatter = NoticeFormatter { last_progress: None };
        loop {
            match notices.recv().await {
                Ok(notice) => {
                    if let Some(line) = formatter.format(&notice)
                        && printer.print(format!("{}\n", printable(&line))).is_err()
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut repl = Repl { node, runtime, editor, peers };
    repl.refresh_peer_names();
    println!("type `help` for the commands");
    let prompt = format!("{name}> ");
    loop {
        let line = match repl.editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = repl.editor.add_history_entry(line.as_str());
        let words = match shell_words::split(&line) {
            Ok(words) => words,
            Err(error) => {
                println!("cannot read that line: {error}");
                continue;
            }
        };
        match Line::try_parse_from(&words) {
            Ok(parsed) => match repl.execute(parsed.command) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => println!("{}", printable(&error.to_string())),
            },
            Err(error) => println!("{}", one_line(&error)),
        }
        repl.refresh_peer_names();
    }
    let _ = repl.editor.save_history(history);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_typo_when_parsed_then_one_line_with_suggestion() {
        let error = Line::try_parse_from(["sned", "bob", "5"]).unwrap_err();
        assert_eq!(
            one_line(&error),
            "unknown command 'sned'; did you mean 'send'? (help lists them)"
        );
        let error = Line::try_parse_from(["mine", "lots"]).unwrap_err();
        assert!(!one_line(&error).contains('\n'));
    }

    #[test]
    fn given_send_line_when_parsed_then_message_is_the_rest() {
        let words = shell_words::split("send bob 2.5 hello there 'with quotes'").unwrap();
        let Line { command: ReplCommand::Send { name, amount, message } } =
            Line::try_parse_from(words).unwrap()
        else {
            panic!("send parses as send");
        };
        assert_eq!((name.as_deref(), amount.as_deref()), (Some("bob"), Some("2.5")));
        assert_eq!(message.join(" "), "hello there with quotes");
    }

    #[test]
    fn given_control_characters_from_a_peer_then_shown_escaped_on_one_line() {
        assert_eq!(printable("hi bob"), "hi bob");
        assert_eq!(printable("\x1b[2J\x1b[Hbob sent you 1000"), "\\x1b[2J\\x1b[Hbob sent you 1000");
        assert_eq!(printable("a\nalice sent you 9\r"), "a\\x0aalice sent you 9\\x0d");
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m", "the C1 control sequence introducer");
        assert_eq!(printable("fondue é 🧀"), "fondue é 🧀");
        assert_eq!(printable("carol\u{202e}evil"), "carol\\u202eevil", "right-to-left override");
    }

    #[test]
    fn given_a_transfer_notice_then_it_says_pending_until_mined() {
        let mut formatter = NoticeFormatter { last_progress: None };
        let amount = "5".parse().unwrap();
        let notice =
            |height| Notice::Received { from: "bob".into(), amount, text: "hi".into(), height };
        assert_eq!(
            formatter.format(&notice(None)).unwrap(),
            "bob sent you 5: hi (pending until mined)"
        );
        assert_eq!(
            formatter.format(&notice(Some(12))).unwrap(),
            "bob sent you 5: hi (in block 12)"
        );
    }

    #[test]
    fn given_a_connected_peer_then_its_line_says_connected_and_no_stale_last_seen() {
        let peer = |link: Option<&'static str>, last_seen| PeerView {
            name: "bob".into(),
            key: "0391187e45dc0391187e45dc".into(),
            peer_id: String::new(),
            connected: link.is_some(),
            link,
            addresses: Vec::new(),
            last_seen,
            also_claimed_by: Vec::new(),
        };
        let now = 1_700_000_000_000;
        let connected = peer_line(&peer(Some("direct"), now - 33_000), now);
        assert!(connected.ends_with("connected (direct)"), "{connected}");
        assert!(!connected.contains("last seen"), "{connected}");
        let gone = peer_line(&peer(None, now - 33_000), now);
        assert!(gone.ends_with("not connected, last seen 33s ago"), "{gone}");
    }

    #[test]
    fn given_help_then_every_command_listed() {
        let text = help(None);
        for command in COMMANDS.iter().filter(|c| **c != "exit") {
            assert!(text.contains(command), "{command} missing from help");
        }
        assert!(help(Some("send")).contains("NAME"));
    }
}
