#!/usr/bin/env bash
# Build here (the GPU machine has no cargo) what scripts/gpu/check.sh runs on a lent GPU machine:
# release effv2-edge and effv2-bench plus the CUDA test binaries (inference backend, training
# kernels, training engine), stripped and xz-packed into gpu-bin/ (git-ignored), plus Fashion-MNIST.
# Then device calls, each under the 600 s limit: check.sh correct train; check.sh trainperf infer; check.sh sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_INCREMENTAL=0
cargo build --release --locked -p effv2-cli -p effv2-bench
# test_binary PACKAGE TEST: path of that integration test's release executable.
test_binary() {
  cargo test --release --locked -p "$1" --test "$2" "${@:3}" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}
plan_bin=$(test_binary effv2-targets cuda_plan)
train_bin=$(test_binary effv2-train cuda_train_kernels)
engine_bin=$(test_binary effv2-train cuda_engine --features cuda)
rm -rf gpu-bin && mkdir -p gpu-bin
cp target/release/effv2-edge target/release/effv2-bench gpu-bin/
cp "$plan_bin" gpu-bin/cuda_plan
cp "$train_bin" gpu-bin/cuda_train_kernels
cp "$engine_bin" gpu-bin/cuda_engine
bins="effv2-edge effv2-bench cuda_plan cuda_train_kernels cuda_engine"
(cd gpu-bin && strip $bins && tar -cJf bins.tar.xz $bins && rm $bins)
# Fashion-MNIST for the GPU training run (the GPU machine has no internet; 30 MB of the 64 MiB carry).
./scripts/setup-data.sh
mkdir -p gpu-bin/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz gpu-bin/fashion-mnist/
ls -la gpu-bin gpu-bin/fashion-mnist
