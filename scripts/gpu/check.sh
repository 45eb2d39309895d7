#!/usr/bin/env bash
# Runs on the lent GPU machine (../shared/reference/gpu-machine.md) with gpu-bin/ from prepare.sh:
#  1. correctness: the CUDA backend vs the CPU reference engine, b0 and s (fp32 < 1e-4, fp16 < 1e-2),
#     and the training kernels launched on the GPU vs the CPU maths;
#  2. EfficientNetV2-S 384px batch 128 fp16 inference: ours vs timm eager and torch.compile, same call;
#  3. the Fused-MBConv placement sweep of b0 at 224 on this GPU.
# Results go to $OUT (the device tool brings them back). Each step is time-boxed so one stuck step
# cannot eat the session's device time.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/effv2-gpu}
mkdir -p "$OUT" /tmp/effv2-bin
tar -C /tmp/effv2-bin -xJf gpu-bin/bins.tar.xz
B=/tmp/effv2-bin
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

echo "== 1. correctness"
timeout "${T_CORRECT:-240}" "$B/cuda_plan" the_cuda_backend --nocapture 2>&1 | tee "$OUT/correctness.txt" | grep -E "rel err|test result|panicked|Error"
# The training kernels launched on the GPU vs the CPU maths (the host-replay tests need g++: not here).
timeout 120 "$B/cuda_train_kernels" train_kernels_on_a_gpu --nocapture 2>&1 | tee "$OUT/train_kernels.txt" | grep -E "equal|test result|panicked|skipped"

echo "== 2. S@384 batch 128 fp16: ours vs timm"
timeout 180 "$B/effv2-edge" build --target jetson --model efficientnetv2-s --image-size 384 --batch 128 -o /tmp/s384 2>&1 | tail -2
timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 5 --iters 30 --json > "$OUT/ours_s384_fp16.json"
timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 5 --iters 30 | tee "$OUT/ours_s384_fp16.txt"
timeout "${T_PEER:-300}" python3 scripts/py/gpu_infer_peer.py --model efficientnetv2_s --size 384 --batch 128 --iters 30 \
  > "$OUT/timm_s384.json" 2> "$OUT/timm_s384.log"; cat "$OUT/timm_s384.json"

echo "== 3. b0 placement sweep at 224, batch 256, fp16"
timeout "${T_SWEEP:-240}" "$B/effv2-bench" sweep --target jetson --model efficientnetv2-b0 --fused-stages 0..=6 \
  --image-size 224 --batch 256 --warmup 3 --iters 20 -o "$OUT/sweep-b0-224" 2>&1 | tail -12
