"""Peer for `effv2-bench data`: the same training-image pipeline the PyTorch way — torchvision's
ImageFolder (PIL decoding) and timm's training transform (RandomResizedCrop with bilinear
resizing, horizontal flip, RandAugment `rand-mM-n2`, ToTensor, Normalize) in a torch DataLoader
with N worker processes — timed like ours: the wall time between consecutive batches as the
training loop receives them, the first batch untimed. Point both at the same files
(`effv2-bench data --keep-synthetic DIR`, then `--data DIR` here). Prints one JSON object.
Needs torch, torchvision and timm (the peer venv of scripts/peers, or the GPU machine's install);
never run by CI."""
import argparse
import json
import time

import timm.data
import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="ImageFolder directory (one folder per class)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--randaug", type=int, default=10, help="RandAugment magnitude, 2 ops (0: none)")
    # timm applies each drawn op with probability 0.5 by default; ours (and the official code)
    # always apply both, so the peer does too unless told otherwise.
    p.add_argument("--op-prob", type=float, default=1.0, help="probability of applying each drawn RandAugment op")
    p.add_argument("--min-crop-area", type=float, default=0.08)
    a = p.parse_args()
    transform = timm.data.create_transform(
        input_size=a.size,
        is_training=True,
        scale=(a.min_crop_area, 1.0),
        hflip=0.5,
        color_jitter=None,
        auto_augment=f"rand-m{a.randaug}-n2-p{a.op_prob}" if a.randaug > 0 else None,
        interpolation="bilinear",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        re_prob=0.0,
    )
    ds = torchvision.datasets.ImageFolder(a.data, transform=transform)
    n = (a.batches + 1) * a.batch
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=n, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, sampler=sampler, num_workers=a.workers, drop_last=True,
                                         prefetch_factor=4 if a.workers > 0 else None)
    gaps, last = [], None
    for x, _ in loader:
        assert x.shape == (a.batch, 3, a.size, a.size), x.shape
        now = time.perf_counter()
        if last is not None:
            gaps.append((now - last) * 1e3)
        last = now
    mean = sum(gaps) / len(gaps)
    print(json.dumps({
        "peer": f"torchvision {torchvision.__version__} ImageFolder + timm {timm.__version__} create_transform, torch {torch.__version__} DataLoader",
        "transform": str(transform).replace("\n", " "),
        "image_size": a.size, "batch": a.batch, "workers": a.workers, "randaug": a.randaug, "op_prob": a.op_prob,
        "batch_ms_mean": mean, "images_per_s": a.batch * 1e3 / mean, "images_per_s_per_worker": a.batch * 1e3 / mean / max(a.workers, 1),
    }))


if __name__ == "__main__":
    main()
