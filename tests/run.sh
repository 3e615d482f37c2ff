#!/usr/bin/env bash
# The whole test suite, as the README gives it. .ci/run calls this after installing what a
# fresh machine lacks. Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
