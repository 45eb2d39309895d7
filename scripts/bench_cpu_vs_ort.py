#!/usr/bin/env python3
"""tract on our CPU artifact vs onnxruntime on the same file: one run, one machine, same thread counts.

    ./scripts/setup-python.sh && cargo build --release -p effv2-cli -p effv2-bench
    .venv-ci/bin/python scripts/bench_cpu_vs_ort.py [--model efficientnetv2-b0] [--size 224]
        [--timm-python .venv-peers/bin/python]   # also time timm's own ONNX export of the same variant

Prints a Markdown table of p50 latencies and tract/onnxruntime ratios. Each (runtime, file, threads) cell is
measured by its own process with the same warm-up and iteration counts, interleaved (A B A B ...) for
`--rounds` rounds, and the median of the rounds' p50s is reported, so machine drift hits both sides alike.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def tract_p50(art, threads, a):
    r = run_json([os.path.join(BIN, "effv2-bench"), "run", "--artifact", art, "--threads", str(threads),
                  "--warmup", str(a.warmup), "--iters", str(a.iters), "--json"])
    return r["latency_ms"]["p50"]


def ort_p50(onnx, threads, a):
    r = run_json([sys.executable, os.path.join(ROOT, "scripts", "py", "ort_bench.py"), onnx, "--threads", str(threads),
                  "--warmup", str(a.warmup), "--iters", str(a.iters)])
    return r["latency_ms"]["p50"]


def wrap_as_artifact(onnx, art, size, classes):
    """Give a foreign ONNX file (timm's export) a manifest so effv2-bench can time it with tract."""
    os.makedirs(art, exist_ok=True)
    data = open(onnx, "rb").read()
    open(os.path.join(art, "model.onnx"), "wb").write(data)
    manifest = {
        "format": "effv2-edge-artifact", "format_version": 1, "toolkit_version": "external", "target": "cpu",
        "precision": "fp32",
        "model": {"variant": "timm export", "fused_stages": "official", "params": 0, "macs": 0, "options": {}},
        "input": {"name": "input", "shape": [1, 3, size, size], "layout": "NCHW", "dtype": "float32"},
        "output": {"name": "logits", "shape": [1, classes], "layout": "NC", "dtype": "float32"},
        "preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "size": size, "crop_pct": 1.0,
                       "crop": "center"},
        "num_classes": classes,
        "files": [{"path": "model.onnx", "role": "model", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
    }
    json.dump(manifest, open(os.path.join(art, "manifest.json"), "w"))


TIMM_EXPORT = """
import sys, timm, torch
name, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = timm.create_model(name, num_classes=1000).eval()
torch.onnx.export(m, torch.randn(1, 3, size, size), out, opset_version=17, input_names=["input"],
                  output_names=["logits"], dynamo=False)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnetv2-b0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timm-python", help="a Python with torch+timm: also time timm's ONNX export")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="effv2-cpu-bench-")
    files = []
    ours = os.path.join(tmp, "ours")
    subprocess.run([os.path.join(BIN, "effv2-edge"), "build", "--target", "cpu", "--model", a.model,
                    "--image-size", str(a.size), "-o", ours], check=True, capture_output=True)
    files.append(("effv2-edge build (BN folded, pads in Conv, SiLU = x·sigmoid(x))", ours))
    if a.timm_python:
        timm_name = "tf_" + a.model.replace("-", "_")
        onnx = os.path.join(tmp, "timm.onnx")
        subprocess.run([a.timm_python, "-c", TIMM_EXPORT, timm_name, str(a.size), onnx], check=True, capture_output=True)
        art = os.path.join(tmp, "timm")
        wrap_as_artifact(onnx, art, a.size, 1000)
        files.append((f"timm {timm_name} torch.onnx.export (opset 17)", art))
    threads = [int(t) for t in a.threads.split(",")]
    print(f"{a.model} @{a.size}, batch 1, fp32; p50 ms, median of {a.rounds} interleaved rounds "
          f"({a.warmup} warm-up + {a.iters} timed runs each)\n")
    print("| ONNX file | threads | tract | onnxruntime | tract / onnxruntime |")
    print("|---|---:|---:|---:|---:|")
    for label, art in files:
        for t in threads:
            tr, ort = [], []
            for _ in range(a.rounds):
                tr.append(tract_p50(art, t, a))
                ort.append(ort_p50(os.path.join(art, "model.onnx"), t, a))
            tm, om = statistics.median(tr), statistics.median(ort)
            print(f"| {label} | {t} | {tm:.2f} | {om:.2f} | {tm / om:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
