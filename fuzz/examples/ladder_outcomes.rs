//! Which rules a `block_ladder` corpus reaches: runs every input of the given directories
//! (by default the seeds and what the fuzzer collected) and counts what the import said,
//! by rule: `cargo run --manifest-path fuzz/Cargo.toml --example ladder_outcomes [DIR]...`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raclette_node::chain::{ImportError, Placement};

fn main() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec![fuzz.join("corpus/block_ladder"), fuzz.join("target/corpus/block_ladder")];
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        for entry in std::fs::read_dir(dir)? {
            let outcome = raclette_fuzz::ladder::run(&std::fs::read(entry?.path())?);
            *counts.entry(rule(outcome)).or_default() += 1;
        }
    }
    for (rule, count) in counts {
        println!("{count:>8}  {rule}");
    }
    Ok(())
}

/// The outcome without its details: the placement, or the error's variants.
fn rule(outcome: Option<Result<raclette_node::chain::Imported, ImportError>>) -> String {
    let text = match outcome {
        None => return "does not decode".into(),
        Some(Ok(imported)) => match imported.placement {
            Placement::Orphan { .. } => "Orphan".into(),
            placement => format!("{placement:?}"),
        },
        Some(Err(error)) => format!("{error:?}"),
    };
    // `State(Transfer { index: 1, error: NonceGap { .. } })` → `State(Transfer NonceGap`
    text.split(['(', ' ', '{', '}', ')', ','])
        .filter(|word| word.chars().next().is_some_and(char::is_uppercase))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
