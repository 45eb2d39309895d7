"""The issue's GPU figures from a check.sh results folder, as markdown: training and inference
throughput against the peers measured in the same call (with the issue's goals), the lowering A/B
runs against the default, and the correctness lines. Standard library only: runs on the GPU
machine at the end of check.sh and here on a fetched results folder.

    python3 scripts/gpu/summarize.py RESULTS_DIR
"""
import glob
import json
import os
import sys

TRAIN_GOAL = 1.25  # x timm bf16 channels_last eager, S@224 b128 (issue 6)
INFER_GOAL = 1.0  # x torch.compile, S@384 b128 fp16


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ratio_line(ours, peer, goal=None):
    r = ours / peer
    verdict = "" if goal is None else (" — goal %.2fx %s" % (goal, "met" if r >= goal else "not met"))
    return "%.2fx%s" % (r, verdict)


def training(d, out):
    rows = []
    default = load(os.path.join(d, "ours_train_s224_bf16.json"))
    peers = {"bf16": load(os.path.join(d, "timm_train_s224.json")), "tf32": load(os.path.join(d, "timm_train_s224_tf32.json"))}
    for p in ["bf16", "tf32", "fp32"]:
        o = load(os.path.join(d, "ours_train_s224_%s.json" % p))
        if not o:
            continue
        peer = peers.get(p)
        ratio = "—"
        if peer:
            ratio = ratio_line(o["throughput_ips"], peer["throughput_ips"], TRAIN_GOAL if p == "bf16" else None)
        gib = (o.get("device_bytes") or 0) / 2**30
        peer_txt = "—" if not peer else "%.1f ms, %.0f img/s, %.1f TFLOP/s, %.1f GiB" % (
            peer["step_ms"], peer["throughput_ips"], peer.get("achieved_tflops", 0), peer["peak_memory_bytes"] / 2**30)
        rows.append("| S@224 b128 %s training step | %.1f ms, %.0f img/s, %.1f TFLOP/s, %.1f GiB | %s | %s |" % (
            p, o["step_ms"]["p50"], o["throughput_ips"], o["achieved_tflops"], gib, peer_txt, ratio))
    if rows:
        out.append("| what | ours (p50) | timm eager, same call | ratio |")
        out.append("|---|---|---|---|")
        out.extend(rows)
        out.append("")
    ab = sorted(glob.glob(os.path.join(d, "ours_train_s224_bf16_EFFV2_*.json")))
    if ab and default:
        base = default["step_ms"]["p50"]
        out.append("Lowering A/B, bf16 S@224 b128 (default %.1f ms):" % base)
        out.append("")
        out.append("| switch | step p50 | vs default |")
        out.append("|---|---|---|")
        for path in ab:
            name = os.path.basename(path)[len("ours_train_s224_bf16_"):-len(".json")]
            o = load(path)
            if not o:
                out.append("| `%s` | failed (see its .log) | — |" % name)
                continue
            t = o["step_ms"]["p50"]
            out.append("| `%s` | %.1f ms | %+.1f%% |" % (name, t, 100 * (t / base - 1)))
        out.append("")


def data_pipeline(d, out):
    """Training images/s of our loader and of torchvision + timm's transform on the same JPEGs, set
    against what our bf16 training step consumes."""
    o = load(os.path.join(d, "ours_data_224.json"))
    if not o:
        return
    line = "Data pipeline (%s -> %d px, RandAugment m%g n2, %d workers): ours %.0f img/s" % (
        o["source"], o["image_size"], o["randaug"], o["workers"], o["images_per_s"])
    peer = load(os.path.join(d, "timm_data_224.json"))
    if peer:
        line += ", torchvision + timm DataLoader %.0f img/s (%s)" % (peer["images_per_s"], ratio_line(o["images_per_s"], peer["images_per_s"]))
    step = load(os.path.join(d, "ours_train_s224_bf16.json"))
    if step:
        need = step["throughput_ips"]
        line += "; the bf16 training step takes %.0f img/s: %s" % (
            need, "keeps up (%.1fx)" % (o["images_per_s"] / need) if o["images_per_s"] >= need else "does NOT keep up (%.2fx)" % (o["images_per_s"] / need))
    out.append(line)
    out.append("")


def inference(d, out):
    o = load(os.path.join(d, "ours_s384_fp16.json"))
    peer = load(os.path.join(d, "timm_s384.json"))
    if not o:
        return
    ips = o.get("device_throughput_ips") or o["throughput_ips"]
    ms = (o.get("device_latency_ms") or o["latency_ms"])["p50"]
    line = "S@384 b128 fp16 inference (batch on the GPU): %.2f ms, %.0f img/s" % (ms, ips)
    if peer:
        eager = ratio_line(ips, peer["eager"]["throughput_ips"])
        line += "; timm eager %.0f img/s (%s)" % (peer["eager"]["throughput_ips"], eager)
        if peer.get("compiled"):
            comp = ratio_line(ips, peer["compiled"]["throughput_ips"], INFER_GOAL)
            line += ", torch.compile %.0f img/s (%s)" % (peer["compiled"]["throughput_ips"], comp)
    out.append(line)
    out.append("End to end (host input): %.2f ms p50, %.0f img/s" % (o["latency_ms"]["p50"], o["throughput_ips"]))
    out.append("")


def correctness(d, out):
    lines = []
    for name in ["correctness.txt", "train_kernels.txt", "train_engine.txt"]:
        try:
            with open(os.path.join(d, name)) as f:
                lines += [l.rstrip() for l in f if "rel err" in l or "test result" in l or "panicked" in l]
        except OSError:
            pass
    if lines:
        out.append("Correctness lines:")
        out.append("")
        out.extend("    " + l for l in lines)
        out.append("")


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: summarize.py RESULTS_DIR")
    d = sys.argv[1]
    out = []
    training(d, out)
    data_pipeline(d, out)
    inference(d, out)
    correctness(d, out)
    print("\n".join(out) if out else "no results in %s" % d)


if __name__ == "__main__":
    main()
