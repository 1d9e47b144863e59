# Raclette: `just` lists the recipes.

# List the recipes
default:
    @just --list

# A local network in one command: a tracker, bob and carol in the background, your REPL
demo:
    cargo run --release --bin raclette-node -- demo

# Run a tracker (TCP and QUIC on port 7000; data and addresses.txt in raclette-data/tracker)
tracker *ARGS:
    cargo run --release --bin raclette-tracker -- --data raclette-data/tracker {{ARGS}}

# Run a node named NAME on the dev network, using the local tracker (or $TRACKER)
node NAME *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    tracker="${TRACKER:-$(grep -m1 '/ip4/127.0.0.1/tcp/' raclette-data/tracker/addresses.txt 2>/dev/null || true)}"
    if [ -z "$tracker" ]; then echo "start a tracker first (just tracker) or set TRACKER=<multiaddr>"; exit 1; fi
    cargo run --release --bin raclette-node -- --name {{NAME}} --network dev --tracker "$tracker" {{ARGS}}

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
