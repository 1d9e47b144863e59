//! The README, taken at its word. One test types the commands of "Running it yourself"
//! exactly as they stand there, through `just`, in an empty directory: a tracker, then
//! two nodes on pseudo-terminals that meet, mine and pay each other. The other checks
//! that every `just …`, `cargo …` and binary command the README shows names recipes,
//! flags and benchmarks that exist.
//!
//! Needs `just` on the PATH (`.ci/run` installs it). Set `RACLETTE_SKIP_JUST=1` to skip
//! on a machine without it; otherwise its absence fails the tests rather than hiding it.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use raclette_integration_tests::harness::{binaries, tail};
use raclette_integration_tests::readme::{self, ReadmeCommand, Workspace};
use raclette_node::demo::user_command;
use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

/// The flags the test adds to the README's commands: ports chosen by the OS, and traffic
/// on loopback only.
const LOOPBACK: [&str; 2] = ["--listen", "/ip4/127.0.0.1/tcp/0"];

/// A guard against hanging, long enough for a first release build of the workspace on
/// two shared cores.
const BUILD_GUARD: Duration = Duration::from_secs(25 * 60);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn readme_text() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).unwrap()
}

/// Whether the tests can run: `just` is installed, or the user chose to skip.
fn just_installed() -> bool {
    if Command::new("just").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var_os("RACLETTE_SKIP_JUST").is_some() {
        eprintln!("skipped: just is not installed and RACLETTE_SKIP_JUST is set");
        return false;
    }
    panic!(
        "just is not on the PATH: install it (cargo install just, or pip install rust-just) \
         or set RACLETTE_SKIP_JUST=1"
    );
}

/// `just` with the workspace's Justfile, run in `dir` as if the user stood there (with
/// none of the variables cargo set for this test).
fn just_in(dir: &Path, words: &[String]) -> Command {
    let mut command = user_command("just".as_ref());
    command
        .arg("--justfile")
        .arg(workspace_root().join("Justfile"))
        .arg("--working-directory")
        .arg(dir)
        .args(words);
    command
}

/// Kills a whole process group (`just`, the shell of a recipe, cargo and the program it
/// runs) however the test ends, and reaps its leader if the test started it.
struct Group {
    id: u32,
    leader: Option<Child>,
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.id)])
            .stderr(Stdio::null())
            .status();
        if let Some(leader) = &mut self.leader {
            let _ = leader.wait();
        }
    }
}

/// A user's terminal running one README command: its process group and its screen.
struct Terminal {
    screen: PtySession,
    _group: Group,
}

impl Terminal {
    /// Starts `words` through `just` in `dir` on a pseudo-terminal. The shell in front
    /// prints its pid (the session's process group) and then becomes `just`.
    fn open(dir: &Path, words: &[String]) -> Self {
        let just = just_in(dir, words);
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo \"group $$\"; exec \"$@\"", "sh"])
            .arg(just.get_program())
            .args(just.get_args());
        let options = Options::new()
            .timeout_ms(Some(BUILD_GUARD.as_millis() as u64))
            .strip_ansi_escape_codes(true);
        let mut screen = spawn_with_options(command, options).unwrap();
        let (_, group) = screen.exp_regex(r"group \d+").unwrap();
        let group = Group { id: group.trim_start_matches("group ").parse().unwrap(), leader: None };
        Self { screen, _group: group }
    }

    /// Types `line` and waits for `regex`; returns what matched.
    fn answer(&mut self, line: &str, regex: &str) -> String {
        self.screen.send_line(line).unwrap();
        self.screen.exp_regex(regex).unwrap().1
    }
}

/// The `just` commands of the README's "Running it yourself" code block, as written.
fn running_it_yourself() -> Vec<Vec<String>> {
    readme::commands(&readme_text())
        .into_iter()
        .filter(|command: &ReadmeCommand| {
            command.in_block && command.section == "Running it yourself"
        })
        .filter_map(|command| {
            let words = shell_words::split(&command.text).unwrap();
            (words.first().map(String::as_str) == Some("just")).then(|| words[1..].to_vec())
        })
        .collect()
}

#[test]
fn given_the_readme_when_followed_literally_then_alice_pays_bob_and_bob_sees_it() {
    if !just_installed() {
        return;
    }
    let commands = running_it_yourself();
    let tracker = commands.first().expect("the README starts a tracker");
    assert_eq!(tracker, &["tracker"], "the README's first command runs the tracker");
    let names: Vec<String> = commands[1..]
        .iter()
        .map(|words| {
            assert_eq!(words.len(), 2, "`just node NAME`, as the README says: {words:?}");
            assert_eq!(words[0], "node");
            words[1].clone()
        })
        .collect();
    assert!(names.len() >= 2, "the README starts two nodes: {commands:?}");
    let dir = tempfile::tempdir().unwrap();

    // `just tracker`: in its own terminal the user sees cargo, then the address lines.
    let build_log = dir.path().join("tracker-terminal.log");
    let mut words = tracker.clone();
    words.extend(LOOPBACK.map(String::from));
    let mut child = just_in(dir.path(), &words)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&build_log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _tracker = Group { id: child.id(), leader: Some(child) };
    let (sender, lines) = sync_channel(64);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let address = loop {
        let line = lines
            .recv_timeout(BUILD_GUARD)
            .unwrap_or_else(|_| panic!("`just tracker` printed no address: {}", tail(&build_log)));
        if let Some(address) = line.strip_prefix("tracker address: ") {
            break address.to_string();
        }
    };
    std::thread::spawn(move || lines.iter().for_each(drop)); // keep its pipe drained
    let listed = std::fs::read_to_string(dir.path().join("raclette-data/tracker/addresses.txt"))
        .expect("the tracker writes raclette-data/tracker/addresses.txt");
    assert_eq!(listed.lines().next(), Some(address.as_str()), "{listed}");

    // `just node alice`, `just node bob`: each in a terminal of its own.
    let mut terminals: Vec<(String, Terminal)> = names
        .iter()
        .map(|name| {
            let mut words = vec!["node".to_string(), name.clone()];
            words.extend(LOOPBACK.map(String::from));
            words.extend(["--threads", "1"].map(String::from));
            let mut terminal = Terminal::open(dir.path(), &words);
            terminal.screen.exp_string(&format!("{name}> ")).unwrap();
            (name.clone(), terminal)
        })
        .collect();
    let (alice, bob) = (names[0].clone(), names[1].clone());

    // Alice sees bob connected, mines, and sends him 5 with a message.
    let (_, first) = &mut terminals[0];
    let bob_line = format!(r"(no peers known yet|{bob} +[0-9a-f]{{12}} +[^\r\n]*)\r?\n");
    let mut connected = false;
    for _ in 0..300 {
        let line = first.answer("peers", &bob_line);
        if line.contains("connected (") {
            assert!(!line.contains("last seen"), "a connected peer is seen now: {line}");
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(connected, "{alice} sees {bob} connected");
    first.answer("mine 2", r"mined 2 block\(s\), lost 0");
    first.answer(&format!("send {bob} 5 hello {bob}"), &format!("{bob} accepted it"));

    // Bob's REPL prints it above his prompt.
    let (_, second) = &mut terminals[1];
    second.screen.exp_string(&format!("{alice} sent you 5: hello {bob}")).unwrap();

    // `quit` ends each node, and with it cargo and just.
    for (_, terminal) in &mut terminals {
        terminal.screen.send_line("quit").unwrap();
        terminal.screen.exp_eof().unwrap();
    }
    // What alice typed is kept for her alone.
    let history = dir.path().join(format!("raclette-data/{alice}/history.txt"));
    let mode = std::fs::metadata(&history).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", history.display());
}

#[test]
fn given_the_readme_then_every_command_it_shows_names_what_exists() {
    if !just_installed() {
        return;
    }
    let binaries = binaries();
    let workspace = Workspace::new(&workspace_root(), &binaries.node, &binaries.tracker).unwrap();
    let readme = readme_text();
    let commands = readme::commands(&readme);
    assert!(commands.len() >= 10, "the README's commands are found: {commands:?}");
    let problems = readme::check(&readme, &workspace);
    assert!(problems.is_empty(), "the README names what does not exist:\n{}", problems.join("\n"));
}
