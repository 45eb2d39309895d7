#!/usr/bin/env bash
# Runs on the lent GPU machine (../shared/reference/gpu-machine.md) with gpu-bin/ from prepare.sh.
#   bash scripts/gpu/check.sh [correct] [train] [trainperf] [infer] [sweep] [profile] [trainab]   (no argument: all)
# Sections, each time-boxed so one stuck step cannot eat the session's device time:
#   correct  the CUDA inference backend vs the CPU reference engine, b0 and s (fp32 < 1e-4, fp16 < 1e-2);
#            the training kernels on the GPU vs the CPU maths; the CUDA training engine vs the CPU
#            trainer (3 steps: logits, weights, EMA, eval, state round trip)
#   train    `train --device cuda` on Fashion-MNIST with the README's main-job recipe (the CPU run:
#            88.80% test top-1 after 5 epochs at 1,700 img/s on 2 cores)
#   trainperf  EfficientNetV2-S 224px batch 128 training steps: ours (`effv2-bench train-step --device cuda`,
#            bf16 mixed precision and tf32; TRAINPERF_PRECISIONS="bf16 tf32 fp32" adds FMA-only fp32) vs timm
#            channels_last eager in bf16 autocast and in tf32, same call: images/s, TFLOP/s, memory;
#            and the data pipeline's images/s (ours vs torchvision + timm's transform, same JPEGs)
#   trainab  bf16 training steps again with each lowering choice switched or tuned (see the section; also
#            run by `trainperf` when TRAINPERF_AB=1)
#   infer    EfficientNetV2-S 384px batch 128 fp16 inference: ours vs timm eager and torch.compile
#   sweep    the Fused-MBConv placement sweep of b0 at 224 on this GPU
#   profile  EFFV2_CUDA_PROFILE tables: where a S@384 b128 fp16 inference pass and a S@224 b128 bf16
#            training step spend their time, per launch kind and slowest launches
# Each call must stay under 600 s: "correct train", then "trainperf infer", then "sweep" (the order to
# drop from when device time runs short); with one call only, "correct trainperf infer profile trainab"
# under BUDGET=540 (the A/B runs last, cut first). Results go to $OUT; summary.md (scripts/gpu/summarize.py)
# puts the ratios against the peers and the A/B runs in tables at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
# The device tool brings back at most 8 files from $OUT: results are written to a folder of their own
# and packed into $OUT/results.tar.gz after every section (so a cut-off call still returns the rest).
FINAL=${OUT:-/tmp/effv2-gpu}
OUT=/tmp/effv2-results
SECTIONS=${*:-correct train trainperf infer sweep profile trainab}
rm -rf "$OUT"; mkdir -p "$FINAL" "$OUT" /tmp/effv2-bin
pack() { tar -C "$OUT" -czf "$FINAL/results.tar.gz.part" . && mv "$FINAL/results.tar.gz.part" "$FINAL/results.tar.gz"; }
tar -C /tmp/effv2-bin -xJf gpu-bin/bins.tar.xz
B=/tmp/effv2-bin
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# The libraries' versions and the GPUs as our probe sees them (effv2_runtime::probe).
"$B/effv2-bench" devices 2>&1 | tee "$OUT/devices.txt" | grep -E "jetson|GPU|CUDA driver|NCCL"
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
# BUDGET (seconds, default 560) caps the whole call: each step's time box is cut to what is left of it,
# so a slow early section shortens the later ones instead of running the call past the device limit.
END=$((SECONDS + ${BUDGET:-560}))
tbox() { local left=$((END - SECONDS)); (( left < 5 )) && left=5; (( $1 < left )) && echo "$1" || echo "$left"; }
timeout() { local t=$1; shift; command timeout "$(tbox "$t")" "$@"; }

if has correct; then
  echo "== correctness"
  timeout "${T_CORRECT:-240}" "$B/cuda_plan" the_cuda_backend --nocapture 2>&1 | tee "$OUT/correctness.txt" | grep -E "rel err|test result|panicked|Error"
  # The host-replay tests need g++ (not here): only the GPU ones run.
  timeout 120 "$B/cuda_train_kernels" train_kernels_on_a_gpu --nocapture 2>&1 | tee "$OUT/train_kernels.txt" | grep -E "equal|test result|panicked|skipped"
  timeout 120 "$B/cuda_engine" --nocapture --test-threads 1 2>&1 | tee "$OUT/train_engine.txt" | grep -E "engine on|replica|NCCL|rel err|graph|test result|panicked|skipped"
fi

pack
if has train; then
  echo "== Fashion-MNIST on the GPU, main-job recipe"
  export EFFV2_FASHION_MNIST=$PWD/gpu-bin/fashion-mnist
  recipe=(--model b0 --width 0.5 --depth 0.5 --fused-stages all --lr-decay cosine --workers 12)
  rm -rf /tmp/run-gpu
  timeout "${T_TRAIN:-240}" "$B/effv2-edge" train "${recipe[@]}" --device cuda --precision bf16 --epochs 5 -o /tmp/run-gpu 2>&1 | tee "$OUT/train_gpu.txt" | grep -vE "^\s*$" | tail -8
  rc=${PIPESTATUS[0]}
  cp /tmp/run-gpu/metrics.jsonl "$OUT/train_gpu_metrics.jsonl" 2>/dev/null
  # A bf16 failure that is not a timeout (124): the same recipe in fp32, so the call still yields a GPU run.
  if [[ $rc -ne 0 && $rc -ne 124 ]]; then
    echo "bf16 run failed (rc $rc): fp32"
    rm -rf /tmp/run-gpu32
    timeout "${T_TRAIN:-240}" "$B/effv2-edge" train "${recipe[@]}" --device cuda --epochs 5 -o /tmp/run-gpu32 2>&1 | tee "$OUT/train_gpu_fp32.txt" | grep -vE "^\s*$" | tail -8
    cp /tmp/run-gpu32/metrics.jsonl "$OUT/train_gpu_fp32_metrics.jsonl" 2>/dev/null
  fi
fi

pack
if has trainperf; then
  echo "== S@224 batch 128 training steps: ours vs timm"
  precisions=${TRAINPERF_PRECISIONS:-bf16 tf32}
  for p in $precisions; do
    timeout "${T_TRAINPERF:-150}" "$B/effv2-bench" train-step --device cuda --precision $p --model efficientnetv2-s --image-size 224 --batch 128 \
      --warmup 2 --iters 8 --json > "$OUT/ours_train_s224_$p.json" 2> "$OUT/ours_train_s224_$p.log"; cat "$OUT/ours_train_s224_$p.json" "$OUT/ours_train_s224_$p.log" | tail -3
  done
  gmacs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gmacs_per_image"])' "$OUT/ours_train_s224_bf16.json" 2>/dev/null || echo 2.85)
  timeout "${T_PEER:-200}" python3 scripts/py/gpu_train_peer.py --model efficientnetv2_s --size 224 --batch 128 --gmacs "$gmacs" \
    > "$OUT/timm_train_s224.json" 2> "$OUT/timm_train_s224.log"; cat "$OUT/timm_train_s224.json"
  # Our tf32 against timm's f32 with TF32 convs and matmuls.
  if [[ " $precisions " == *" tf32 "* ]]; then
    timeout "${T_PEER:-200}" python3 scripts/py/gpu_train_peer.py --precision tf32 --model efficientnetv2_s --size 224 --batch 128 --gmacs "$gmacs" \
      > "$OUT/timm_train_s224_tf32.json" 2> "$OUT/timm_train_s224_tf32.log"; cat "$OUT/timm_train_s224_tf32.json"
  fi
  # Data loading must keep up: our loader against torchvision + timm's transform on the same JPEGs,
  # every core but one each (what `train --device cuda` uses by default).
  w=$(( $(nproc) - 1 )); rm -rf /tmp/effv2-jpegs
  timeout 60 "$B/effv2-bench" data --keep-synthetic /tmp/effv2-jpegs --workers $w --batch 128 --batches 20 --json \
    > "$OUT/ours_data_224.json" 2> "$OUT/ours_data_224.log"; cat "$OUT/ours_data_224.json" | cut -c1-300
  timeout 120 python3 scripts/py/data_peer.py --data /tmp/effv2-jpegs --workers $w --batch 128 --batches 20 \
    > "$OUT/timm_data_224.json" 2> "$OUT/timm_data_224.log"; cut -c1-200 "$OUT/timm_data_224.json"
  # Several GPUs: the same steps data-parallel (global batch 128 per GPU, NCCL, synchronised BN).
  gpus=$(nvidia-smi -L | wc -l)
  if [ "$gpus" -gt 1 ]; then
    timeout "${T_TRAINPERF:-150}" "$B/effv2-bench" train-step --device cuda --precision bf16 --gpus "$gpus" --model efficientnetv2-s --image-size 224 \
      --batch $((128 * gpus)) --warmup 2 --iters 8 --json > "$OUT/ours_train_s224_bf16_x$gpus.json" 2> "$OUT/ours_train_s224_bf16_x$gpus.log"
    cat "$OUT/ours_train_s224_bf16_x$gpus.json" "$OUT/ours_train_s224_bf16_x$gpus.log" | tail -3
  fi
fi

pack
if has infer; then
  echo "== S@384 batch 128 fp16: ours vs timm"
  timeout 180 "$B/effv2-edge" build --target jetson --model efficientnetv2-s --image-size 384 --batch 128 -o /tmp/s384 2>&1 | tail -2
  timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 5 --iters 30 --json > "$OUT/ours_s384_fp16.json"
  timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 5 --iters 30 | tee "$OUT/ours_s384_fp16.txt"
  if [ "${INFER_BF16:-1}" != 0 ]; then
    timeout 180 "$B/effv2-edge" build --target jetson --precision bf16 --model efficientnetv2-s --image-size 384 --batch 128 -o /tmp/s384bf 2>&1 | tail -1
    timeout 120 "$B/effv2-bench" run --artifact /tmp/s384bf --warmup 5 --iters 30 | tee "$OUT/ours_s384_bf16.txt"
  fi
  timeout "${T_PEER:-300}" python3 scripts/py/gpu_infer_peer.py --model efficientnetv2_s --size 384 --batch 128 --iters 30 \
    > "$OUT/timm_s384.json" 2> "$OUT/timm_s384.log"; cat "$OUT/timm_s384.json"
fi

pack
if has sweep; then
  echo "== b0 placement sweep at 224, batch 256, fp16"
  timeout "${T_SWEEP:-240}" "$B/effv2-bench" sweep --target jetson --model efficientnetv2-b0 --fused-stages 0..=6 \
    --image-size 224 --batch 256 --warmup 3 --iters 20 -o "$OUT/sweep-b0-224" 2>&1 | tail -12
fi
pack
if has profile; then
  echo "== per-launch profiles"
  [ -d /tmp/s384 ] || timeout 180 "$B/effv2-edge" build --target jetson --model efficientnetv2-s --image-size 384 --batch 128 -o /tmp/s384 2>&1 | tail -1
  EFFV2_CUDA_PROFILE=1 timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 1 --iters 3 > /dev/null 2> "$OUT/profile_infer_s384_fp16.txt"
  head -30 "$OUT/profile_infer_s384_fp16.txt"
  EFFV2_CUDA_PROFILE=1 timeout 150 "$B/effv2-bench" train-step --device cuda --precision bf16 --model efficientnetv2-s --image-size 224 --batch 128 \
    --warmup 1 --iters 2 > /dev/null 2> "$OUT/profile_train_s224_bf16.txt"
  head -40 "$OUT/profile_train_s224_bf16.txt"
fi

pack
# trainab: bf16 steps again with each lowering choice of the training plan switched off, to time what
# it buys (EFFV2_CUDA_FUSE_BN_ACT: BN + activation fused; EFFV2_CUDA_GEMM_1X1: 1x1 convs on cuBLAS;
# EFFV2_CUDA_GRAPH: forward and backward replayed as captured CUDA graphs), and with other rows per
# partial of the per-channel sums and depthwise filter gradients (defaults: at most 64 rows, fewer down
# to 8 while a sum's launch has under 65,536 threads; 128 rows. CHAN_THREADS=0: 64 everywhere), and the
# depthwise kernels with k at run time (DW_UNROLL=0; also an inference run). Last in the default order:
# the first section cut when the budget runs out.
if has trainab || { [ "${TRAINPERF_AB:-0}" = 1 ] && has trainperf; }; then
  echo "== S@224 batch 128 bf16 training steps, lowering A/B"
  for v in EFFV2_CUDA_CHAN_THREADS=0 EFFV2_CUDA_CHAN_THREADS=262144 EFFV2_CUDA_CHAN_ROWS=32 EFFV2_CUDA_DW_ROWS=32 EFFV2_CUDA_DW_UNROLL=0 EFFV2_CUDA_FUSE_BN_ACT=0 EFFV2_CUDA_GEMM_1X1=0 EFFV2_CUDA_GRAPH=0; do
    env "$v" timeout "${T_TRAINPERF:-150}" "$B/effv2-bench" train-step --device cuda --precision bf16 --model efficientnetv2-s --image-size 224 --batch 128 \
      --warmup 2 --iters 8 --json > "$OUT/ours_train_s224_bf16_$v.json" 2> "$OUT/ours_train_s224_bf16_$v.log"; echo "$v:"; tail -1 "$OUT/ours_train_s224_bf16_$v.json"
  done
  # The depthwise kernels with k at run time in inference too (the S@384 artifact of `infer`).
  if [ -d /tmp/s384 ]; then
    EFFV2_CUDA_DW_UNROLL=0 timeout 120 "$B/effv2-bench" run --artifact /tmp/s384 --warmup 5 --iters 30 | tee "$OUT/ours_s384_fp16_EFFV2_CUDA_DW_UNROLL=0.txt" | tail -2
  fi
fi
pack

# The figures the issue asks for, as markdown (also in results.tar.gz as summary.md).
echo "== summary"
python3 scripts/gpu/summarize.py "$OUT" | tee "$OUT/summary.md"
pack
