//! Writes the seed corpora under `fuzz/corpus/<target>/` (run it again after a change to
//! the encodings or to the fixture): `cargo run --manifest-path fuzz/Cargo.toml --example
//! seeds`. Files it did not write, such as regression inputs, are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = raclette_fuzz::seeds::all();
    for seed in &seeds {
        let dir = corpus.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&seed.name), &seed.bytes)?;
    }
    let bytes: usize = seeds.iter().map(|seed| seed.bytes.len()).sum();
    println!("wrote {} seeds, {bytes} bytes, under {}", seeds.len(), corpus.display());
    Ok(())
}
