//! `raclette-node demo`: a tracker, two background peers and your own REPL on a dev
//! network, in one command, all in a temporary directory removed on exit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use crate::cli::{DemoArgs, NodeArgs};

/// Kills the background processes however the demo ends.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The tracker binary next to this one. Run through `cargo run`, it is built first when
/// missing: it lives in another package of the workspace, which `cargo run --bin
/// raclette-node` does not build. Cargo's own progress is shown, so that a first build of
/// a few minutes never looks like a hang.
fn tracker_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let dir = exe.parent().ok_or("cannot locate this binary's directory")?;
    let tracker = dir.join("raclette-tracker");
    if tracker.exists() {
        return Ok(tracker);
    }
    let cargo = std::env::var_os("CARGO").ok_or_else(|| {
        format!(
            "{} is missing: build the workspace first (cargo build --release)",
            tracker.display()
        )
    })?;
    eprintln!("building raclette-tracker for the demo (the first time takes a few minutes)...");
    let release = dir.file_name().is_some_and(|name| name == "release");
    let mut build = user_command(&cargo);
    build.args(["build", "-p", "raclette-tracker", "--bin", "raclette-tracker"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|error| error.to_string())?;
    if !status.success() || !tracker.exists() {
        return Err("could not build raclette-tracker".into());
    }
    Ok(tracker)
}

/// `program` (cargo, or `just` that runs cargo) as a user would run it, from a program
/// that `cargo run` or `cargo test` started. Cargo gives such a program the variables it
/// sets for build scripts (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`...); build scripts that
/// watch them (ring's does) would see other values than in a plain build, and their
/// crates and everything above them would be rebuilt now and again at the next plain
/// build.
pub fn user_command(program: &std::ffi::OsStr) -> Command {
    const SET_BY_CARGO: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && SET_BY_CARGO.iter().any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    command
}

/// Starts the tracker on loopback and returns its TCP address.
fn start_tracker(
    binary: &Path,
    data: &Path,
    background: &mut Background,
) -> Result<String, String> {
    let log = std::fs::File::create(data.join("tracker.log")).map_err(|error| error.to_string())?;
    let mut child = Command::new(binary)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data"])
        .arg(data.join("tracker"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start the tracker: {error}"))?;
    let stdout = child.stdout.take().ok_or("no tracker output")?;
    background.0.push(child);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|error| error.to_string())?;
        if let Some(address) = line.strip_prefix("tracker address: ")
            && address.contains("/tcp/")
        {
            let address = address.to_string();
            std::thread::spawn(move || lines.for_each(drop)); // keep its pipe drained
            return Ok(address);
        }
    }
    Err("the tracker exited before listening".into())
}

fn start_peer(
    name: &str,
    tracker: &str,
    data: &Path,
    background: &mut Background,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let log = std::fs::File::create(data.join(format!("{name}.log")))
        .map_err(|error| error.to_string())?;
    let child = Command::new(exe)
        .args([
            "--name",
            name,
            "--tracker",
            tracker,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--network",
            "dev",
        ])
        .args(["--daemon", "--threads", "1", "--data"])
        .arg(data.join(name))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start {name}: {error}"))?;
    background.0.push(child);
    Ok(())
}

/// Runs the demo until the user quits.
pub fn run(args: DemoArgs) -> ExitCode {
    let dir = match tempfile::Builder::new().prefix("raclette-demo-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("raclette-node demo: cannot create a temporary directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut background = Background(Vec::new());
    let tracker = match tracker_binary()
        .and_then(|binary| start_tracker(&binary, dir.path(), &mut background))
    {
        Ok(address) => address,
        Err(message) => {
            eprintln!("raclette-node demo: {message}");
            return ExitCode::FAILURE;
        }
    };
    for name in ["bob", "carol"] {
        if let Err(message) = start_peer(name, &tracker, dir.path(), &mut background) {
            eprintln!("raclette-node demo: {message}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "demo network (dev): a tracker and two peers, bob and carol; logs in {}",
        dir.path().display()
    );
    println!("try: mine 3, then send bob 10 hello bob, then inbox, chain, peers; quit to end");
    let node = NodeArgs {
        name: Some(args.name),
        trackers: vec![tracker.parse().expect("the tracker printed a valid multiaddr")],
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("constant address")],
        external: Vec::new(),
        data: Some(dir.path().join("you")),
        api: None,
        api_allow_remote: false,
        min_relay_fee: crate::cli::DEFAULT_MIN_RELAY_FEE.parse().expect("a valid amount"),
        threads: args.threads,
        network: "dev".into(),
        network_file: None,
        daemon: false,
    };
    let code = crate::run::run_node(&node);
    drop(background);
    code
}
