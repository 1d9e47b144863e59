//! The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer), briefly: each runs for a few
//! seconds from its committed seeds and must neither panic nor break a property. A long
//! run of one is `just fuzz TARGET`.
//!
//! Needs a nightly toolchain and cargo-fuzz (`.ci/run` installs cargo-fuzz where nightly
//! is there). Stable Rust cannot build the targets, so without them the test says it
//! skipped, and passes. Set `RACLETTE_SKIP_FUZZ=1` to skip it anyway: the first build of
//! the targets (unoptimised) takes about three minutes on two cores.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use raclette_node::demo::user_command;

/// How long each target runs.
const SECONDS_PER_TARGET: u32 = 8;
/// An input that takes longer than this is a finding of its own: a peer could send it.
const SECONDS_PER_INPUT: u32 = 25;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("fuzz")
}

/// `cargo +nightly ARGS` as the user would run it (none of the variables cargo set for
/// this test, nor the toolchain it chose), and never installing a missing toolchain.
fn nightly_cargo(args: &[&str]) -> Command {
    let mut command = user_command("cargo".as_ref());
    command.env("RUSTUP_AUTO_INSTALL", "0").env_remove("RUSTUP_TOOLCHAIN").arg("+nightly");
    command.args(args).current_dir(fuzz_dir());
    command
}

/// `cargo +nightly fuzz SUBCOMMAND` on the fuzz crate, with the flags `just fuzz` uses,
/// so that both share one build in `fuzz/target`.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut command = nightly_cargo(&["fuzz", subcommand, "--fuzz-dir"]);
    // Unoptimised: a few seconds per target need no speed, and the first build (the
    // whole node, with nightly) is what this test costs on a fresh machine.
    command.arg(fuzz_dir()).args(["--sanitizer", "none", "--dev"]);
    command
}

/// Why the targets cannot run here, if they cannot.
fn unavailable() -> Option<&'static str> {
    if std::env::var_os("RACLETTE_SKIP_FUZZ").is_some() {
        return Some("RACLETTE_SKIP_FUZZ is set");
    }
    let works = |mut command: Command| {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command.status().is_ok_and(|status| status.success())
    };
    if !works(nightly_cargo(&["--version"])) {
        return Some("there is no nightly toolchain (rustup toolchain install nightly)");
    }
    if !works(nightly_cargo(&["fuzz", "--version"])) {
        return Some("cargo-fuzz is not installed (cargo install --locked cargo-fuzz)");
    }
    None
}

/// The executions libFuzzer counted, from its final statistics.
fn executions(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|count| count.trim().parse().ok())
}

/// What a failed run found: the panic or libFuzzer's error, and where the input went.
fn finding(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let found = |text: &str| lines.iter().position(|line| line.contains(text));
    let first = found("panicked at").or_else(|| found("ERROR: libFuzzer")).unwrap_or(0);
    let mut shown: Vec<&str> = lines[first..].iter().take(12).copied().collect();
    if let Some(input) = found("Failing input:") {
        shown.extend(lines[input..].iter().take(3));
    }
    shown.join("\n")
}

#[test]
fn given_each_fuzz_target_when_run_briefly_from_its_seeds_then_none_fails() {
    if let Some(reason) = unavailable() {
        eprintln!("skipped: the fuzz targets did not run: {reason}");
        return;
    }
    let listed = nightly_cargo(&["fuzz", "list", "--fuzz-dir"]).arg(fuzz_dir()).output().unwrap();
    assert!(
        listed.status.success(),
        "cargo fuzz list: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let targets: Vec<String> =
        String::from_utf8(listed.stdout).unwrap().lines().map(str::to_string).collect();
    assert!(targets.iter().any(|target| target == "block_ladder"), "targets: {targets:?}");
    // One build for all of them first, so that no target's time goes to building.
    let built = cargo_fuzz("build").status().unwrap();
    assert!(built.success(), "the fuzz targets do not build");

    let mut failures = Vec::new();
    for target in &targets {
        let seeds = fuzz_dir().join("corpus").join(target);
        let seed_count = std::fs::read_dir(&seeds).map_or(0, Iterator::count);
        assert!(seed_count > 0, "{target} has no seeds in {}", seeds.display());
        // libFuzzer writes what it finds into the first directory, so the committed
        // seeds are only read.
        let scratch = tempfile::tempdir().unwrap();
        let output = cargo_fuzz("run")
            .arg(target)
            .arg(scratch.path())
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
            .arg(format!("-timeout={SECONDS_PER_INPUT}"))
            .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let runs = executions(&stderr).map_or("no".to_string(), |runs| runs.to_string());
        eprintln!("fuzz: {target} = {runs} runs in {SECONDS_PER_TARGET} s from {seed_count} seeds");
        if !output.status.success() {
            failures.push(format!("{target} failed:\n{}", finding(&stderr)));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nThe input is in fuzz/artifacts/TARGET/: `just fuzz TARGET FILE` replays it.",
        failures.join("\n\n")
    );
}
