#!/usr/bin/env python3
"""tract on our CPU artifact vs onnxruntime on the same file: one run, one machine, same thread counts.

    ./scripts/setup-python.sh && cargo build --release -p effv2-cli -p effv2-bench
    .venv-ci/bin/python scripts/bench_cpu_vs_ort.py [--model efficientnetv2-b0] [--size 224]
        [--timm-python .venv-peers/bin/python]   # also time timm's own ONNX export of the same variant
        [--precision fp32,int8,int8-qlinear]      # int8 = `build --precision int8` (QDQ convs), int8-qlinear = QLinearConv

Prints a Markdown table of p50 latencies and tract/onnxruntime ratios, then int8 vs fp32 per runtime.
The int8 file is calibrated on synthetic images (fresh weights: latency does not depend on the values). Each (runtime, file, threads) cell is
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
    ap.add_argument("--precision", default="fp32,int8,int8-qlinear", help="comma list of fp32, int8, int8-qlinear")
    ap.add_argument("--timm-python", help="a Python with torch+timm: also time timm's ONNX export")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="effv2-cpu-bench-")
    files = []
    precisions = a.precision.split(",")
    for p in precisions:
        if p not in ("fp32", "int8", "int8-qlinear"):
            raise SystemExit(f"--precision: unknown {p!r} (fp32, int8, int8-qlinear)")
        ours = os.path.join(tmp, f"ours-{p}")
        extra = [] if p == "fp32" else ["--precision", "int8", "--calib", "synthetic", "--calib-images", "8",
                                         "--int8-onnx", "qlinear" if p == "int8-qlinear" else "qdq"]
        subprocess.run([os.path.join(BIN, "effv2-edge"), "build", "--target", "cpu", "--model", a.model,
                        "--image-size", str(a.size), *extra, "-o", ours], check=True, capture_output=True)
        label = {"fp32": "effv2-edge build (BN folded, pads in Conv, SiLU = x·sigmoid(x))",
                 "int8": "--precision int8 (default `--int8-onnx qdq`: DQ → Conv → Q)",
                 "int8-qlinear": "--precision int8 --int8-onnx qlinear (QLinearConv)"}[p]
        files.append((label, ours, p))
    if a.timm_python:
        timm_name = "tf_" + a.model.replace("-", "_")
        onnx = os.path.join(tmp, "timm.onnx")
        subprocess.run([a.timm_python, "-c", TIMM_EXPORT, timm_name, str(a.size), onnx], check=True, capture_output=True)
        art = os.path.join(tmp, "timm")
        wrap_as_artifact(onnx, art, a.size, 1000)
        files.append((f"timm {timm_name} torch.onnx.export (opset 17)", art, "timm"))
    threads = [int(t) for t in a.threads.split(",")]
    print(f"{a.model} @{a.size}, batch 1; p50 ms, median of {a.rounds} interleaved rounds "
          f"({a.warmup} warm-up + {a.iters} timed runs each)\n")
    print("| ONNX file | threads | tract | onnxruntime | tract / onnxruntime |")
    print("|---|---:|---:|---:|---:|")
    p50 = {}
    for label, art, kind in files:
        for t in threads:
            tr, ort = [], []
            for _ in range(a.rounds):
                tr.append(tract_p50(art, t, a))
                ort.append(ort_p50(os.path.join(art, "model.onnx"), t, a))
            tm, om = statistics.median(tr), statistics.median(ort)
            p50[kind, t] = (tm, om)
            print(f"| {label} | {t} | {tm:.2f} | {om:.2f} | {tm / om:.2f}× |", flush=True)
    if "fp32" in precisions:
        print("\n| file | threads | int8 / fp32, tract | int8 / fp32, onnxruntime | int8 tract / int8 onnxruntime |")
        print("|---|---:|---:|---:|---:|")
        for p in precisions[1:] if precisions[0] == "fp32" else [q for q in precisions if q != "fp32"]:
            for t in threads:
                (f_tr, f_ort), (i_tr, i_ort) = p50["fp32", t], p50[p, t]
                print(f"| {p} | {t} | {i_tr / f_tr:.2f}× | {i_ort / f_ort:.2f}× | {i_tr / i_ort:.2f}× |")


if __name__ == "__main__":
    main()
