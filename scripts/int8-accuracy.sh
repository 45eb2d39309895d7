#!/usr/bin/env bash
# fp32 vs int8 top-1 on Fashion-MNIST's 10,000 test images, for trained checkpoints:
#   ./scripts/int8-accuracy.sh RUN_DIR/best [MORE_CHECKPOINTS...]
# Each checkpoint is built as a cpu fp32 artifact, a cpu int8 artifact and a coral int8 artifact
# (both int8 calibrated on 100 Fashion-MNIST training images, 99.99th percentile), then scored by our
# runtimes (CPU engine on the checkpoint, tract on the ONNX files) and by peers (onnxruntime on the
# ONNX files, LiteRT's interpreter on the coral .tflite). Prints one Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 CHECKPOINT [CHECKPOINT...]" >&2; exit 2; }
./scripts/setup-data.sh >/dev/null
./scripts/setup-python.sh >/dev/null
cargo build --release -q -p effv2-cli
BIN=./target/release/effv2-edge
PY=.venv-ci/bin/python
OUT=${OUT:-$(mktemp -d -t effv2-int8-acc-XXXX)}
top1() { python3 -c 'import json,sys; print("%.2f" % (json.loads(sys.stdin.read().strip().splitlines()[-1])["top1"] * 100))'; }
echo "| checkpoint | model | fp32 engine | fp32 tract | fp32 ORT | int8 tract | int8 ORT | coral .tflite LiteRT | int8 drop (LiteRT vs fp32 engine) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for ckpt in "$@"; do
  name=$(echo "$ckpt" | tr '/' '_')
  d="$OUT/$name"
  "$BIN" build --target cpu --checkpoint "$ckpt" --batch 100 -o "$d/fp32" 2>/dev/null
  "$BIN" build --target cpu --precision int8 --checkpoint "$ckpt" --calib fashion-mnist --batch 100 -o "$d/int8" 2>/dev/null
  "$BIN" build --target coral --checkpoint "$ckpt" --calib fashion-mnist --no-compile -o "$d/coral" 2>/dev/null
  e=$("$BIN" eval --checkpoint "$ckpt" --json | top1)
  ft=$("$BIN" eval --artifact "$d/fp32" --json 2>/dev/null | top1)
  fo=$("$PY" scripts/py/peer_eval.py "$d/fp32" | top1)
  it=$("$BIN" eval --artifact "$d/int8" --json 2>/dev/null | top1)
  io=$("$PY" scripts/py/peer_eval.py "$d/int8" | top1)
  co=$("$PY" scripts/py/peer_eval.py "$d/coral" 2>/dev/null | top1)
  model=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); o=m["model"]["options"]; se=o["se"] and (o["fused_stages"]!="all" or o["se_on_fused"]); print(o["activation"] + ("+SE" if se else ", no SE") + ", fused " + o["fused_stages"])' "$d/fp32/manifest.json")
  drop=$(python3 -c "print(f'{$e - $co:+.2f}')")
  echo "| $ckpt | $model | $e | $ft | $fo | $it | $io | $co | $drop |"
done
echo
echo "artifacts in $OUT"
