#!/usr/bin/env bash
# The whole test suite, as CI runs it: Python peer runtimes (onnxruntime, ...) into .venv-ci, then every
# crate's tests. Numerics are checked against committed peer fixtures; torch is never needed here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export EFFV2_PYTHON="$PWD/.venv-ci/bin/python"
./scripts/setup-data.sh
cargo test --workspace --locked "$@"
