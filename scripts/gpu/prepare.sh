#!/usr/bin/env bash
# Build here (the GPU machine has no cargo) what scripts/gpu/check.sh runs on a lent GPU machine:
# release effv2-edge and effv2-bench plus the CUDA backend's test binary, stripped and xz-packed into
# gpu-bin/ (git-ignored). Then: device run --carry gpu-bin "bash scripts/gpu/check.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_INCREMENTAL=0
cargo build --release --locked -p effv2-cli -p effv2-bench
test_bin=$(cargo test --release --locked -p effv2-targets --test cuda_plan --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_plan":
        print(m["executable"])')
rm -rf gpu-bin && mkdir -p gpu-bin
cp target/release/effv2-edge target/release/effv2-bench gpu-bin/
cp "$test_bin" gpu-bin/cuda_plan
strip gpu-bin/effv2-edge gpu-bin/effv2-bench gpu-bin/cuda_plan
tar -C gpu-bin -cJf gpu-bin/bins.tar.xz effv2-edge effv2-bench cuda_plan
rm gpu-bin/effv2-edge gpu-bin/effv2-bench gpu-bin/cuda_plan
ls -la gpu-bin
