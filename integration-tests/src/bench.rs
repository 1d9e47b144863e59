//! Reporting for `just bench`: every result is a value next to a bound measured in the
//! same run, printed as one line and written to `target/bench/NAME.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One benchmark result.
#[derive(Debug, Clone)]
pub struct Report {
    /// Short snake_case name; also the JSON file's name.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Its unit, e.g. `MH/s`.
    pub unit: String,
    /// The bound it is compared with, measured in the same run, in the same unit.
    pub bound: f64,
    /// The ratio the issue asks for (`value / bound` ≥ target), if any.
    pub target: Option<f64>,
}

impl Report {
    /// `value / bound`.
    pub fn ratio(&self) -> f64 {
        self.value / self.bound
    }

    /// Prints `bench: NAME = VALUE UNIT (bound VALUE, ratio X)` and writes the JSON file.
    pub fn publish(&self) {
        println!(
            "bench: {} = {} {} (bound {} {}, ratio {:.3})",
            self.name,
            significant(self.value),
            self.unit,
            significant(self.bound),
            self.unit,
            self.ratio()
        );
        if let Some(target) = self.target {
            let verdict = if self.ratio() >= target { "met" } else { "NOT met" };
            println!("       target ratio >= {target}: {verdict}");
        }
        let json = serde_json::json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "bound": self.bound,
            "ratio": self.ratio(),
            "target": self.target,
        });
        write_json(&self.name, &json);
    }
}

/// Four significant digits without scientific notation for everyday magnitudes.
fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32).max(0) as usize;
    format!("{value:.digits$}")
}

/// Writes `json` to `target/bench/NAME.json` (a failure is reported, not fatal).
pub fn write_json(name: &str, json: &serde_json::Value) {
    let dir = bench_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{name}.json")), format!("{json:#}\n")));
    if let Err(error) = written {
        eprintln!("could not write {}: {error}", dir.display());
    }
}

/// `target/bench`, honouring `CARGO_TARGET_DIR`.
pub fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("bench")
}

/// Runs `work` (which does `units` units per call) repeatedly for about `duration` and
/// returns units per second.
pub fn rate(duration: Duration, units: u64, mut work: impl FnMut()) -> f64 {
    work(); // warm up caches, frequency and lazily detected CPU features
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        work();
        done += units;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Measures two rates alternately `rounds` times and keeps the best of each, so that a
/// burst of load from other processes does not favour one side of the comparison.
pub fn best_of_alternating(
    rounds: usize,
    mut first: impl FnMut() -> f64,
    mut second: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut best_first, mut best_second) = (0.0f64, 0.0f64);
    for _ in 0..rounds {
        best_first = best_first.max(first());
        best_second = best_second.max(second());
    }
    (best_first, best_second)
}

/// Bare libsecp256k1 ECDSA verifications per second on one core, the bound for
/// everything that checks signatures.
pub fn bare_verify_rate(duration: Duration) -> f64 {
    let secret = secp256k1::SecretKey::from_secret_bytes([0x5a; 32]).expect("valid scalar");
    let key = secp256k1::PublicKey::from_secret_key(&secret);
    let digest = secp256k1::Message::from_digest([7; 32]);
    let signature = secp256k1::ecdsa::sign(digest, &secret);
    rate(duration, 256, || {
        for _ in 0..256 {
            secp256k1::ecdsa::verify(&signature, digest, &key).expect("valid signature");
        }
    })
}

/// Bare libsecp256k1 ECDSA verifications per second on one core over the signatures of
/// `blocks`' transfers (each with its digest and parsed key, prepared beforehand): the
/// bound for validating those very blocks. Distinct signatures verify about 7% slower
/// than one signature checked over and over (the branch predictor and caches learn a
/// repeated one), so a workload of distinct signatures is measured against the same.
pub fn bare_verify_rate_of(blocks: &[raclette_protocol::Block], duration: Duration) -> f64 {
    let checks: Vec<_> = blocks
        .iter()
        .flat_map(|block| block.transactions.iter())
        .filter_map(|tx| tx.as_transfer())
        .map(|transfer| {
            let signature =
                secp256k1::ecdsa::Signature::from_compact(&transfer.signature.to_bytes())
                    .expect("a valid signature");
            let digest = secp256k1::Message::from_digest(transfer.sighash());
            (signature, digest, *transfer.from.inner())
        })
        .collect();
    assert!(!checks.is_empty(), "blocks without transfers give no bound");
    let mut next = checks.iter().cycle();
    rate(duration, 256, || {
        for (signature, digest, key) in next.by_ref().take(256) {
            secp256k1::ecdsa::verify(signature, *digest, key).expect("valid signature");
        }
    })
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The `p` quantile (0 to 1) of sorted values, nearest rank; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50, p99, max and the sample count of `values`, as JSON.
pub fn summary(mut values: Vec<u64>) -> serde_json::Value {
    values.sort_unstable();
    serde_json::json!({
        "p50": percentile(&values, 0.5),
        "p99": percentile(&values, 0.99),
        "max": values.last().copied().unwrap_or(0),
        "samples": values.len(),
    })
}
