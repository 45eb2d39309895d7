#!/usr/bin/env bash
# The pipeline on the embedded default data, in minutes on 2 cores: train a small EfficientNetV2 on
# Fashion-MNIST, evaluate it, build an int8 CPU artifact and a Coral artifact from it, evaluate the int8
# artifact as deployed (tract).
#   ./scripts/main-job.sh [EPOCHS] [RUN_DIR]      (defaults: 5, runs/main-<time>)
# 5 epochs: 175 s of training, 88.8% test top-1 (3.4 min in all); 20 epochs reach 92.35% (docs/int8-accuracy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-5}
RUN=${2:-runs/main-$(date +%Y%m%d-%H%M%S)}
./scripts/setup-data.sh
cargo build --release -q -p effv2-cli
BIN=./target/release/effv2-edge
set -x
"$BIN" train --model b0 --width 0.5 --depth 0.5 --fused-stages all --epochs "$EPOCHS" --lr-decay cosine -o "$RUN"
"$BIN" eval --checkpoint "$RUN/best"
"$BIN" build --target cpu --precision int8 --checkpoint "$RUN/best" --calib fashion-mnist --batch 100 -o "$RUN/artifact-cpu-int8"
"$BIN" eval --artifact "$RUN/artifact-cpu-int8"
"$BIN" build --target coral --checkpoint "$RUN/best" --calib fashion-mnist -o "$RUN/artifact-coral"
