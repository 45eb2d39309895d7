#!/usr/bin/env bash
# Progressive learning with adaptive regularization vs a fixed-size baseline on Fashion-MNIST:
# same model, epochs, seed and final size; prints test top-1 and training wall time side by side.
#   ./scripts/compare-progressive.sh [EPOCHS] [SEED] [extra train flags...]
# Progressive: 3 stages, 20 -> 32 px, RandAugment 0 -> 6, mixup/cutmix 0 -> 0.2, dropout 0.1 -> 0.2
# (paper-style interpolation). Baseline: one stage at 32 px with the final stage's regularization.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-10}
SEED=${2:-0}
shift $(( $# > 2 ? 2 : $# ))
./scripts/setup-data.sh
cargo build --release -q -p effv2-cli
BIN=./target/release/effv2-edge
OUT=${OUT:-runs/compare-progressive-e${EPOCHS}-s${SEED}}
rm -rf "$OUT"
mkdir -p "$OUT"
COMMON=(--model b0 --width 0.5 --depth 0.5 --fused-stages all --epochs "$EPOCHS" --seed "$SEED" --lr-decay cosine
  --max-size 32 --randaug-max 6 --mixup-max 0.2 --cutmix-max 0.2 "$@")
run() {
  local name=$1; shift
  local t0=$SECONDS
  "$BIN" train "${COMMON[@]}" "$@" -o "$OUT/$name" 2> "$OUT/$name.log"
  echo $((SECONDS - t0)) > "$OUT/$name.wall"
}
run progressive --stages 3 --min-size 20 --dropout-min 0.1
run fixed --stages 1
printf '%-12s %10s %10s %12s %10s\n' run "best top1" "last top1" "train secs" "wall secs"
for name in progressive fixed; do
  python3 - "$OUT/$name" "$(cat "$OUT/$name.wall")" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
name = sys.argv[1].rsplit("/", 1)[1]
print(f"{name:<12} {max(r['test_top1'] for r in rows)*100:9.2f}% {rows[-1]['test_top1']*100:9.2f}% {rows[-1]['train_seconds']:12.0f} {sys.argv[2]:>10}")
PY
done
echo "seed $SEED, $EPOCHS epochs; runs in $OUT"
