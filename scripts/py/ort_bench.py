"""Time onnxruntime on an ONNX file: ort_bench.py MODEL [--threads N] [--warmup N] [--iters N] [--batch N]

Prints one JSON object with latency_ms {p50, p90, p99, min, mean} (nearest-rank percentiles), the same keys
effv2-bench prints, so the two can be compared in one run on one machine.
"""
import argparse
import json
import math
import time

import numpy as np
import onnxruntime as ort


def percentile(sorted_ms, q):
    # Nearest rank: the smallest value with at least q% of the samples at or below it.
    k = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return sorted_ms[k - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [a.batch] + list(inp.shape[1:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(a.warmup):
        sess.run(None, {inp.name: x})
    ms = []
    for _ in range(a.iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    out = {
        "backend": f"onnxruntime {ort.__version__}",
        "threads": a.threads,
        "latency_ms": {
            "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "min": ms[0], "mean": sum(ms) / len(ms),
        },
        "throughput_ips": a.batch * 1e3 / (sum(ms) / len(ms)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
