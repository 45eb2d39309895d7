"""Dump the state-dict keys and shapes of every full-size peer EfficientNetV2 (no weights).

The Rust import tests check that our key mapping produces exactly these keys and shapes, so the
mapping is verified for every variant and layout without committing hundreds of MB of weights.

    python scripts/peers/dump_keys.py --out toolkit/tests/fixtures/peer_keys
"""
import argparse
import json
import pathlib

import timm
import torch
import torchvision

MODELS = [
    ("timm", f"tf_efficientnetv2_{v}", f"efficientnetv2-{v}") for v in ["b0", "b1", "b2", "b3", "s", "m", "l", "xl"]
] + [("torchvision", f"efficientnet_v2_{v}", f"efficientnetv2-{v}") for v in ["s", "m", "l"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = pathlib.Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    for family, ctor, ours in MODELS:
        with torch.device("meta"):
            if family == "timm":
                m = timm.create_model(ctor, num_classes=1000)
            else:
                m = getattr(torchvision.models, ctor)(weights=None)
        sd = m.state_dict()
        entry = {
            "peer": f"{family} {ctor}",
            "model": ours,
            "versions": {"timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__},
            "params": sum(p.numel() for p in m.parameters()),
            "keys": [[k, list(v.shape)] for k, v in sd.items()],
        }
        path = out / f"{family}_{ours}.json"
        path.write_text(json.dumps(entry, separators=(",", ":")) + "\n")
        print(f"{path}: {len(sd)} keys, {entry['params']:,} params")


if __name__ == "__main__":
    main()
