#!/usr/bin/env bash
# The whole test suite, as CI runs it: Python peer runtimes (onnxruntime, ...) into .venv-ci, then every
# crate's tests. Numerics are checked against committed peer fixtures; torch is never needed here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export EFFV2_PYTHON="$PWD/.venv-ci/bin/python"
# NVRTC from PyPI: the CUDA engine's kernels are compiled by the real compiler (no GPU needed).
NVRTC_LIB=$("$EFFV2_PYTHON" -c 'import nvidia.cu13, os; print(os.path.join(nvidia.cu13.__path__[0], "lib"))')
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export EFFV2_REQUIRE_NVRTC=1
# ptxas from the same CUDA release: the kernels' register and local-memory use, per GPU generation.
export EFFV2_PTXAS="$(dirname "$NVRTC_LIB")/bin/ptxas"
./scripts/setup-data.sh
# No incremental cache: CI builds once, and the cache doubles the disk a build needs.
export CARGO_INCREMENTAL=0
cargo test --workspace --locked "$@"
