#!/usr/bin/env bash
# The whole test suite, as CI runs it. Needs only the Rust toolchain; numerics are checked
# against committed peer fixtures (scripts/peers/ makes them; CI never runs those).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
