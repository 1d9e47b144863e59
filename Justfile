# Raclette: `just` lists the recipes.

# List the recipes
default:
    @just --list

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
