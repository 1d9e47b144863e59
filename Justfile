# Raclette: `just` lists the recipes.

# The workspace, so that the recipes that run a tracker or a node also work from another
# directory, which then holds their data: `just -f PATH/Justfile -d DIR node alice`
manifest := justfile_directory() / "Cargo.toml"

# List the recipes
default:
    @just --list

# A local network in one command: a tracker, bob and carol in the background, your REPL
demo *ARGS:
    cargo run --release --manifest-path "{{manifest}}" --bin raclette-node -- demo {{ARGS}}

# Run a tracker (TCP and QUIC on port 7000; data and addresses.txt in raclette-data/tracker)
tracker *ARGS:
    cargo run --release --manifest-path "{{manifest}}" --bin raclette-tracker -- --data raclette-data/tracker {{ARGS}}

# Run a node named NAME on the dev network, using the local tracker (or $TRACKER)
node NAME *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    # The tracker lists its addresses there while it runs, the loopback one first.
    tracker="${TRACKER:-$(head -n1 raclette-data/tracker/addresses.txt 2>/dev/null || true)}"
    if [ -z "$tracker" ]; then echo "start a tracker first (just tracker) or set TRACKER=<multiaddr>"; exit 1; fi
    cargo run --release --manifest-path "{{manifest}}" --bin raclette-node -- --name {{NAME}} --network dev --tracker "$tracker" {{ARGS}}

# Run every test: unit, property, golden vectors and end-to-end
test:
    cargo test --workspace

# Formatting and clippy; warnings are errors
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks, each against a bound measured in the same run: `just bench` or `just bench pow`
bench NAME="all":
    #!/usr/bin/env bash
    set -euo pipefail
    if [ "{{NAME}}" = all ]; then
        cargo bench -p raclette-integration-tests --benches
    else
        cargo bench -p raclette-integration-tests --bench "{{NAME}}"
    fi

# Fuzz TARGET until it fails or Ctrl-C (`just fuzz` lists targets; ARG: seconds or an input file)
fuzz TARGET="" ARG="0":
    #!/usr/bin/env bash
    set -euo pipefail
    # `just fuzz TARGET 60` stops after a minute; `just fuzz TARGET FILE` runs one input
    # (a crash from fuzz/artifacts/TARGET/) and shows what it does.
    fuzz="{{justfile_directory()}}/fuzz"
    if ! RUSTUP_AUTO_INSTALL=0 cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzzing needs a nightly toolchain and cargo-fuzz:"
        echo "rustup toolchain install nightly && cargo install --locked cargo-fuzz"
        exit 1
    fi
    if [ -z "{{TARGET}}" ]; then cargo +nightly fuzz list --fuzz-dir "$fuzz"; exit 0; fi
    # No sanitizer: our code is safe Rust (overflow checks and debug assertions stay on),
    # and AddressSanitizer would mostly watch libsecp256k1's C, fuzzed upstream. Measured
    # on two cores: a first build takes 9 CPU-minutes instead of 13, and the targets run
    # 3 to 4 times as many inputs per second (block_ladder 10,000/s instead of 3,600).
    flags=(--fuzz-dir "$fuzz" --sanitizer none)
    cd "{{invocation_directory()}}"
    if [ -f "{{ARG}}" ]; then exec cargo +nightly fuzz run "${flags[@]}" "{{TARGET}}" "{{ARG}}"; fi
    case "{{ARG}}" in ""|*[!0-9]*) echo "{{ARG}} is neither a number of seconds nor a file"; exit 1;; esac
    # libFuzzer adds what it finds to the first directory: the seeds in fuzz/corpus stay
    # as committed, the rest collects in fuzz/target/corpus.
    mkdir -p "$fuzz/target/corpus/{{TARGET}}"
    cargo +nightly fuzz run "${flags[@]}" "{{TARGET}}" "$fuzz/target/corpus/{{TARGET}}" \
        "$fuzz/corpus/{{TARGET}}" -- -max_total_time={{ARG}} -timeout=25
