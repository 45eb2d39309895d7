"""Peer for the CUDA engine's inference throughput: timm EfficientNetV2 on the GPU, fp16 autocast,
channels_last, batch already on the device, eager and torch.compile, timed with CUDA events.
Prints one JSON object. Runs on the lent GPU machine (torch + timm preinstalled there)."""
import argparse
import json
import time

import timm
import torch


def bench(fn, x, warmup, iters):
    for _ in range(warmup):
        fn(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    mean = sum(times) / len(times)
    return {"p50_ms": times[len(times) // 2], "mean_ms": mean, "throughput_ips": x.shape[0] / (mean / 1e3)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    model = timm.create_model(a.model, pretrained=False).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, a.size, a.size, device="cuda").to(memory_format=torch.channels_last)

    def eager(t):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            return model(t)

    out = {"peer": f"timm {timm.__version__} {a.model}", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
           "size": a.size, "batch": a.batch, "precision": "fp16 autocast, channels_last"}
    out["eager"] = bench(eager, x, a.warmup, a.iters)
    if not a.no_compile:
        t0 = time.time()
        compiled = torch.compile(model)

        def comp(t):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                return compiled(t)

        comp(x)
        out["compile_s"] = time.time() - t0
        out["compiled"] = bench(comp, x, a.warmup, a.iters)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
