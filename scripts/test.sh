#!/usr/bin/env bash
# The whole test suite, as CI runs it: Python peer runtimes (onnxruntime, ...) into .venv-ci, then every
# crate's tests. Numerics are checked against committed peer fixtures; torch is never needed here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export EFFV2_PYTHON="$PWD/.venv-ci/bin/python"
./scripts/setup-data.sh
# No incremental cache: CI builds once, and the cache doubles the disk a build needs.
export CARGO_INCREMENTAL=0
cargo test --workspace --locked "$@"
