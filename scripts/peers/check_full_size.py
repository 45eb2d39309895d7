#!/usr/bin/env python3
"""Full-size peer check (local only; needs the peers venv and a release build of effv2-edge).

For full-size timm / torchvision EfficientNetV2 models with random weights, this script calibrates BatchNorm
statistics on a random batch (train-mode forward with momentum 1, so activations are normalised as in a
trained network), saves the state dict, imports it with `effv2-edge import`, runs `effv2-edge run` at the
eval size and at odd sizes, and compares with the peer's own logits.

    cargo build --release -p effv2-cli
    .venv-peers/bin/python scripts/peers/check_full_size.py --bin target/release/effv2-edge

Prints one row per (model, size) and exits non-zero if any max|diff| / max|peer| >= 1e-4. The row also shows how
far the peer's own float32 logits are from a float64 run of the same peer (the noise floor of float32).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import safetensors.torch
import timm
import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import randomize_  # noqa: E402

# (layout, peer constructor, our variant, sizes as (H, W))
CASES = [
    ("timm-tf", "tf_efficientnetv2_b0", "efficientnetv2-b0", [(224, 224), (225, 199)]),
    ("timm-tf", "tf_efficientnetv2_b3", "efficientnetv2-b3", [(300, 300)]),
    ("timm-tf", "tf_efficientnetv2_s", "efficientnetv2-s", [(384, 384), (301, 257)]),
    ("timm", "efficientnetv2_s", "efficientnetv2-s", [(300, 300), (97, 131)]),
    ("timm-tf", "tf_efficientnetv2_m", "efficientnetv2-m", [(480, 480)]),
    ("torchvision", "efficientnet_v2_s", "efficientnetv2-s", [(384, 384), (253, 317)]),
    ("torchvision", "efficientnet_v2_l", "efficientnetv2-l", [(224, 224)]),
]
TOL = 1e-4


def build(layout, ctor):
    if layout == "torchvision":
        return getattr(torchvision.models, ctor)(weights=None)
    return timm.create_model(ctor, num_classes=1000)


def calibrate_bn(model, size=128, batch=4):
    """Running statistics := the statistics of a random batch (what a trained network would have)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size))
    model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/effv2-edge")
    ap.add_argument("--only", help="substring filter on the peer constructor")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    worst = 0.0
    print(f"{'layout':<12} {'model':<20} {'size':>9} {'max|peer|':>10} {'max|diff|':>10} {'rel':>9} "
          f"{'ours~f64':>9} {'peer~f64':>9} {'ours s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for layout, ctor, ours, sizes in CASES:
            if args.only and args.only not in ctor:
                continue
            model = build(layout, ctor)
            randomize_(model)
            calibrate_bn(model, size=sizes[0][0])
            sd = {k: v.contiguous() for k, v in model.state_dict().items()}
            wfile = os.path.join(tmp, "w.safetensors")
            safetensors.torch.save_file(sd, wfile)
            ckpt = os.path.join(tmp, "c.safetensors")
            subprocess.run([args.bin, "import", "--from", layout, "--model", ours, "--weights", wfile, "-o", ckpt],
                           check=True, stderr=subprocess.DEVNULL)
            for h, w in sizes:
                x = torch.randn(1, 3, h, w)
                with torch.no_grad():
                    want = model(x).numpy()
                    ref64 = model.double()(x.double()).numpy()
                    model.float()
                xf, yf = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
                np.save(xf, x.numpy())
                t0 = time.time()
                subprocess.run([args.bin, "run", "--checkpoint", ckpt, "--input", xf, "--output", yf], check=True)
                secs = time.time() - t0
                got = np.load(yf)
                diff = float(np.abs(got - want).max())
                rel = diff / float(np.abs(want).max())
                worst = max(worst, rel)
                peer_floor = float(np.abs(want - ref64).max()) / float(np.abs(ref64).max())
                ours_vs64 = float(np.abs(got - ref64).max()) / float(np.abs(ref64).max())
                print(f"{layout:<12} {ours:<20} {h:>4}x{w:<4} {np.abs(want).max():>10.4f} {diff:>10.2e} {rel:>9.2e} "
                      f"{ours_vs64:>9.2e} {peer_floor:>9.2e} {secs:>7.2f}", flush=True)
    print(f"worst relative error {worst:.2e} (bound {TOL:.0e})")
    sys.exit(0 if worst < TOL else 1)


if __name__ == "__main__":
    main()
