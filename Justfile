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
