#!/usr/bin/env python3
"""Generate peer (timm / torchvision) reference fixtures for effv2-edge.

Every case builds a small, randomly initialised EfficientNetV2 in one of the peer libraries, gives it
non-trivial BatchNorm statistics and biases, runs it in eval mode on a random input and writes

    <out>/<case>/weights.safetensors   the peer's full state_dict(), keys exactly as the peer names them
                                       (float32; int64 `num_batches_tracked` entries kept as they are)
    <out>/<case>/input.npy             float32 NCHW input: N(0,1) noise + an N(0,1) offset per (sample, channel)
    <out>/<case>/logits.npy            float32 [N, num_classes] peer logits (eval mode, torch.no_grad())
    <out>/<case>/meta.json             layout, our variant name, width/depth, fused placement, the exact peer
                                       constructor call, library versions, seed

plus <out>/param_counts.json (full-size parameter and state-dict-key counts of the peers, 1000 classes).

Nothing is downloaded: every model is random-init. The script is deterministic (fixed seeds) and re-runnable:

    python scripts/peers/make_fixtures.py --out toolkit/tests/fixtures/peers

Before writing anything for a case the script checks that the peer's state_dict has exactly the keys and shapes
that the OFFICIAL EfficientNetV2 scaling rules predict (channels = max(8, int(c*w + 4) // 8 * 8), repeats =
ceil(r*d), head = round_filters(1280), SE squeeze = max(1, block_in // 4)), so every fixture describes a model our
toolkit can build from (model, width, depth, fused_stages) alone.

CI never runs this script; it only reads the committed fixtures.
"""

import argparse
import functools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

import safetensors
import safetensors.torch
import timm
import torchvision
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

# ------------------------------------------------------------------------------------------------
# Official architecture tables (google/automl efficientnetv2/effnetv2_configs.py)
# rows: (kind, kernel, stride, expand, in, out, repeats, se_ratio); kind F = Fused-MBConv, M = MBConv
# ------------------------------------------------------------------------------------------------
F, M = "F", "M"
TABLES = {
    "base": [
        (F, 3, 1, 1, 32, 16, 1, None),
        (F, 3, 2, 4, 16, 32, 2, None),
        (F, 3, 2, 4, 32, 48, 2, None),
        (M, 3, 2, 4, 48, 96, 3, 0.25),
        (M, 3, 1, 6, 96, 112, 5, 0.25),
        (M, 3, 2, 6, 112, 192, 8, 0.25),
    ],
    "s": [
        (F, 3, 1, 1, 24, 24, 2, None),
        (F, 3, 2, 4, 24, 48, 4, None),
        (F, 3, 2, 4, 48, 64, 4, None),
        (M, 3, 2, 4, 64, 128, 6, 0.25),
        (M, 3, 1, 6, 128, 160, 9, 0.25),
        (M, 3, 2, 6, 160, 256, 15, 0.25),
    ],
    "m": [
        (F, 3, 1, 1, 24, 24, 3, None),
        (F, 3, 2, 4, 24, 48, 5, None),
        (F, 3, 2, 4, 48, 80, 5, None),
        (M, 3, 2, 4, 80, 160, 7, 0.25),
        (M, 3, 1, 6, 160, 176, 14, 0.25),
        (M, 3, 2, 6, 176, 304, 18, 0.25),
        (M, 3, 1, 6, 304, 512, 5, 0.25),
    ],
    "l": [
        (F, 3, 1, 1, 32, 32, 4, None),
        (F, 3, 2, 4, 32, 64, 7, None),
        (F, 3, 2, 4, 64, 96, 7, None),
        (M, 3, 2, 4, 96, 192, 10, 0.25),
        (M, 3, 1, 6, 192, 224, 19, 0.25),
        (M, 3, 2, 6, 224, 384, 25, 0.25),
        (M, 3, 1, 6, 384, 640, 7, 0.25),
    ],
    "xl": [
        (F, 3, 1, 1, 32, 32, 4, None),
        (F, 3, 2, 4, 32, 64, 8, None),
        (F, 3, 2, 4, 64, 96, 8, None),
        (M, 3, 2, 4, 96, 192, 16, 0.25),
        (M, 3, 1, 6, 192, 256, 24, 0.25),
        (M, 3, 2, 6, 256, 512, 32, 0.25),
        (M, 3, 1, 6, 512, 640, 8, 0.25),
    ],
}
# our variant name -> (table, own width, own depth)
VARIANTS = {
    "efficientnetv2-b0": ("base", 1.0, 1.0),
    "efficientnetv2-b1": ("base", 1.0, 1.1),
    "efficientnetv2-b2": ("base", 1.1, 1.2),
    "efficientnetv2-b3": ("base", 1.2, 1.4),
    "efficientnetv2-s": ("s", 1.0, 1.0),
    "efficientnetv2-m": ("m", 1.0, 1.0),
    "efficientnetv2-l": ("l", 1.0, 1.0),
    "efficientnetv2-xl": ("xl", 1.0, 1.0),
}
HEAD_CH = 1280
DEFAULT_SE_RATIO = 0.25


def round_filters(c, w):
    """Official rounding: no '+8 if below 90%' bump."""
    return max(8, int(c * w + 4) // 8 * 8)


def round_repeats(r, d):
    return int(math.ceil(r * d))


def resolve(model, width=None, depth=None, fused="official"):
    """The official resolved architecture for (variant, width, depth, fused placement).

    `fused`: "official", "none", "all", "N" (first N stages) or "i,j,k" (exactly these stages).
    Fused stages carry no SE; MBConv stages get the row's SE ratio or 0.25.
    """
    table_name, w0, d0 = VARIANTS[model]
    table = TABLES[table_name]
    w = w0 if width is None else width
    d = d0 if depth is None else depth
    n = len(table)
    if fused == "official":
        fused_set = {i for i, row in enumerate(table) if row[0] == F}
    elif fused == "none":
        fused_set = set()
    elif fused == "all":
        fused_set = set(range(n))
    elif "," in fused:
        fused_set = {int(t) for t in fused.split(",")}
    else:
        fused_set = set(range(int(fused)))
    assert all(0 <= i < n for i in fused_set), fused
    stages = []
    for i, (_, k, s, e, cin, cout, r, se) in enumerate(table):
        kind = F if i in fused_set else M
        se_ratio = None if kind == F else (se if se is not None else DEFAULT_SE_RATIO)
        stages.append(dict(kind=kind, k=k, s=s, e=e, cin=round_filters(cin, w), cout=round_filters(cout, w),
                           r=round_repeats(r, d), se=se_ratio))
    return dict(stem=round_filters(table[0][4], w), stages=stages, head=round_filters(HEAD_CH, w))


def iter_blocks(spec):
    for si, st in enumerate(spec["stages"]):
        for b in range(st["r"]):
            cin = st["cin"] if b == 0 else st["cout"]
            stride = st["s"] if b == 0 else 1
            se_ch = None if st["se"] is None else max(1, int(cin * st["se"]))
            yield si, b, st, cin, stride, cin * st["e"], se_ch


def _bn(sd, prefix, c):
    for p in ("weight", "bias", "running_mean", "running_var"):
        sd[f"{prefix}.{p}"] = (c,)
    sd[f"{prefix}.num_batches_tracked"] = ()


def expected_timm(spec, num_classes):
    """Key -> shape of a timm EfficientNet built from `spec` (cn / er / ir blocks)."""
    sd = {"conv_stem.weight": (spec["stem"], 3, 3, 3)}
    _bn(sd, "bn1", spec["stem"])
    last = spec["stem"]
    for si, b, st, cin, _, mid, se_ch in iter_blocks(spec):
        p, k, cout = f"blocks.{si}.{b}", st["k"], st["cout"]
        if st["kind"] == F and st["e"] == 1:  # cn: ConvBnAct
            sd[f"{p}.conv.weight"] = (cout, cin, k, k)
            _bn(sd, f"{p}.bn1", cout)
        elif st["kind"] == F:  # er: EdgeResidual
            sd[f"{p}.conv_exp.weight"] = (mid, cin, k, k)
            _bn(sd, f"{p}.bn1", mid)
            sd[f"{p}.conv_pwl.weight"] = (cout, mid, 1, 1)
            _bn(sd, f"{p}.bn2", cout)
        else:  # ir: InvertedResidual (timm keeps conv_pw even at e=1; not used by these fixtures)
            sd[f"{p}.conv_pw.weight"] = (mid, cin, 1, 1)
            _bn(sd, f"{p}.bn1", mid)
            sd[f"{p}.conv_dw.weight"] = (mid, 1, k, k)
            _bn(sd, f"{p}.bn2", mid)
            sd[f"{p}.se.conv_reduce.weight"] = (se_ch, mid, 1, 1)
            sd[f"{p}.se.conv_reduce.bias"] = (se_ch,)
            sd[f"{p}.se.conv_expand.weight"] = (mid, se_ch, 1, 1)
            sd[f"{p}.se.conv_expand.bias"] = (mid,)
            sd[f"{p}.conv_pwl.weight"] = (cout, mid, 1, 1)
            _bn(sd, f"{p}.bn3", cout)
        last = cout
    sd["conv_head.weight"] = (spec["head"], last, 1, 1)
    _bn(sd, "bn2", spec["head"])
    sd["classifier.weight"] = (num_classes, spec["head"])
    sd["classifier.bias"] = (num_classes,)
    return sd


def expected_torchvision(spec, num_classes):
    """Key -> shape of a torchvision EfficientNet built from `spec`."""
    sd = {"features.0.0.weight": (spec["stem"], 3, 3, 3)}
    _bn(sd, "features.0.1", spec["stem"])
    last = spec["stem"]
    for si, b, st, cin, _, mid, se_ch in iter_blocks(spec):
        p, k, cout = f"features.{si + 1}.{b}.block", st["k"], st["cout"]
        if st["kind"] == F and st["e"] == 1:
            sd[f"{p}.0.0.weight"] = (cout, cin, k, k)
            _bn(sd, f"{p}.0.1", cout)
        elif st["kind"] == F:
            sd[f"{p}.0.0.weight"] = (mid, cin, k, k)
            _bn(sd, f"{p}.0.1", mid)
            sd[f"{p}.1.0.weight"] = (cout, mid, 1, 1)
            _bn(sd, f"{p}.1.1", cout)
        else:
            j = 0
            if st["e"] != 1:  # torchvision skips the 1x1 expand when the ratio is 1
                sd[f"{p}.0.0.weight"] = (mid, cin, 1, 1)
                _bn(sd, f"{p}.0.1", mid)
                j = 1
            sd[f"{p}.{j}.0.weight"] = (mid, 1, k, k)
            _bn(sd, f"{p}.{j}.1", mid)
            sd[f"{p}.{j + 1}.fc1.weight"] = (se_ch, mid, 1, 1)
            sd[f"{p}.{j + 1}.fc1.bias"] = (se_ch,)
            sd[f"{p}.{j + 1}.fc2.weight"] = (mid, se_ch, 1, 1)
            sd[f"{p}.{j + 1}.fc2.bias"] = (mid,)
            sd[f"{p}.{j + 2}.0.weight"] = (cout, mid, 1, 1)
            _bn(sd, f"{p}.{j + 2}.1", cout)
        last = cout
    h = len(spec["stages"]) + 1
    sd[f"features.{h}.0.weight"] = (spec["head"], last, 1, 1)
    _bn(sd, f"features.{h}.1", spec["head"])
    sd["classifier.1.weight"] = (num_classes, spec["head"])
    sd["classifier.1.bias"] = (num_classes,)
    return sd


def check_shapes(model, expected, what):
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or extra or wrong:
        msg = [f"{what}: peer state_dict does not match the official formula"]
        msg += [f"  missing {k} {expected[k]}" for k in missing[:10]]
        msg += [f"  extra   {k} {got[k]}" for k in extra[:10]]
        msg += [f"  shape   {k} peer {got[k]} official {expected[k]}" for k in wrong[:10]]
        raise AssertionError("\n".join(msg))


# ------------------------------------------------------------------------------------------------
# Randomisation
# ------------------------------------------------------------------------------------------------
def randomize_(model):
    """Deterministic (global RNG) random weights with non-trivial BN statistics and biases.

    Convs: normal(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups (the official/timm init, applied to both peers so
    torchvision's tiny depthwise init does not flatten the signal). Linear: uniform(+-1/sqrt(out)).
    BN: weight U(0.5, 1.5), bias N(0, 0.2), running_mean N(0, 0.2), running_var U(0.5, 2.0).
    Every conv/linear bias (SE convs, classifier): N(0, 0.2).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                fan_out = kh * kw * m.out_channels // m.groups
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                m.weight.uniform_(-r, r)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.2)


# ------------------------------------------------------------------------------------------------
# Peer builders. Each returns (model, constructor-call string) and must be deterministic given the seed.
# ------------------------------------------------------------------------------------------------
def build_timm(name, kwargs):
    model = timm.create_model(name, **kwargs)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return model, f"timm.create_model({name!r}, {args})"


# timm's efficientnetv2_m arch_def (timm/models/efficientnet.py, _gen_efficientnetv2_m)
TIMM_M_ARCH_DEF = [
    ["cn_r3_k3_s1_e1_c24_skip"],
    ["er_r5_k3_s2_e4_c48"],
    ["er_r5_k3_s2_e4_c80"],
    ["ir_r7_k3_s2_e4_c160_se0.25"],
    ["ir_r14_k3_s1_e6_c176_se0.25"],
    ["ir_r18_k3_s2_e6_c304_se0.25"],
    ["ir_r5_k3_s1_e6_c512_se0.25"],
]


def build_timm_m_scaled_head(width, depth, num_classes):
    """timm efficientnetv2_m(channel_multiplier=width, depth_multiplier=depth) with the head scaled.

    timm's M/L/XL generators hard-code num_features=1280 (the head is NOT scaled by channel_multiplier, unlike its
    S and B0-B3 generators and unlike the official round_filters(1280)). To get a model our toolkit describes, build
    the same EfficientNet class from the same arch_def with num_features=round_channels(1280, width), exactly as
    timm's S generator does. Everything else (blocks, symmetric padding, BN eps 1e-5, SiLU) is efficientnetv2_m's.
    """
    from timm.layers import get_act_layer
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.efficientnet import EfficientNet as TimmEfficientNet

    head = round_channels(1280, multiplier=width)
    model = TimmEfficientNet(
        block_args=decode_arch_def(TIMM_M_ARCH_DEF, depth),
        num_features=head,
        stem_size=24,
        round_chs_fn=functools.partial(round_channels, multiplier=width),
        norm_layer=functools.partial(nn.BatchNorm2d),
        act_layer=get_act_layer("silu"),
        num_classes=num_classes,
    )
    call = (f"timm.models.efficientnet.EfficientNet(block_args=timm.models._efficientnet_builder.decode_arch_def("
            f"{TIMM_M_ARCH_DEF!r}, {depth!r}), num_features={head}, stem_size=24, round_chs_fn=functools.partial("
            f"timm.models._efficientnet_builder.round_channels, multiplier={width!r}), "
            f"norm_layer=torch.nn.BatchNorm2d, act_layer=timm.layers.get_act_layer('silu'), "
            f"num_classes={num_classes})  # = timm.create_model('efficientnetv2_m', channel_multiplier={width!r}, "
            f"depth_multiplier={depth!r}, num_classes={num_classes}) but with the head scaled to {head} like the "
            f"official code (timm's M/L/XL generators keep num_features=1280)")
    # same blocks as the registered entrypoint: keys/shapes agree everywhere except the head
    ref = timm.create_model("efficientnetv2_m", channel_multiplier=width, depth_multiplier=depth,
                            num_classes=num_classes)
    a, b = model.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    head_keys = {k for k in a if k.startswith(("conv_head.", "bn2.", "classifier."))}
    for k in a:
        if k not in head_keys:
            assert a[k].shape == b[k].shape, k
    assert b["conv_head.weight"].shape[0] == 1280, "timm now scales the M head; use create_model directly"
    return model, call


def tv_settings(spec):
    cfgs, text = [], []
    for st in spec["stages"]:
        args = (st["e"], st["k"], st["s"], st["cin"], st["cout"], st["r"])
        if st["kind"] == F:
            cfgs.append(FusedMBConvConfig(*args))
            text.append(f"FusedMBConvConfig{args}")
        else:
            assert st["se"] == 0.25, "torchvision MBConv always has SE with squeeze max(1, in//4)"
            cfgs.append(MBConvConfig(*args))  # width_mult = depth_mult = 1.0: channels/repeats pass through
            text.append(f"MBConvConfig{args}")
    return cfgs, text


def build_torchvision(spec, num_classes, dropout=0.2, stochastic_depth_prob=0.2):
    cfgs, text = tv_settings(spec)
    model = EfficientNet(cfgs, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob,
                         num_classes=num_classes, norm_layer=functools.partial(nn.BatchNorm2d, eps=1e-3),
                         last_channel=spec["head"])
    call = ("torchvision.models.efficientnet.EfficientNet([" + ", ".join(text) + f"], dropout={dropout}, "
            f"stochastic_depth_prob={stochastic_depth_prob}, num_classes={num_classes}, "
            f"norm_layer=functools.partial(torch.nn.BatchNorm2d, eps=0.001), last_channel={spec['head']})")
    return model, call


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------
NUM_CLASSES = 10

CASES = [
    dict(name="timm-tf_b0_w025", layout="timm-tf", model="efficientnetv2-b0", width=0.25, depth=0.5,
         fused="official", input=[2, 3, 64, 64], seed=1001,
         timm=("tf_efficientnetv2_b0", dict(channel_multiplier=0.25, depth_multiplier=0.5))),
    # Same model (same seed -> identical weights) as timm-tf_b0_w025; odd sizes exercise asymmetric SAME padding.
    dict(name="timm-tf_b0_w025_odd", layout="timm-tf", model="efficientnetv2-b0", width=0.25, depth=0.5,
         fused="official", input=[1, 3, 67, 45], seed=1001,
         timm=("tf_efficientnetv2_b0", dict(channel_multiplier=0.25, depth_multiplier=0.5))),
    dict(name="timm-tf_s_w025", layout="timm-tf", model="efficientnetv2-s", width=0.25, depth=0.25,
         fused="official", input=[2, 3, 97, 75], seed=1003,
         timm=("tf_efficientnetv2_s", dict(channel_multiplier=0.25, depth_multiplier=0.25))),
    dict(name="timm_m_w025", layout="timm", model="efficientnetv2-m", width=0.25, depth=0.2,
         fused="official", input=[1, 3, 65, 65], seed=1004, timm_m_scaled_head=True),
    dict(name="torchvision_s_w025", layout="torchvision", model="efficientnetv2-s", width=0.25, depth=0.25,
         fused="official", input=[2, 3, 71, 64], seed=1005, torchvision=True,
         # the same weights in timm's non-tf efficientnetv2_s (bn_eps 1e-3) must give the same logits
         crosscheck=("efficientnetv2_s", dict(channel_multiplier=0.25, depth_multiplier=0.25, bn_eps=1e-3))),
    dict(name="torchvision_b0_w025_fused-none", layout="torchvision", model="efficientnetv2-b0", width=0.25,
         depth=0.5, fused="none", input=[1, 3, 48, 48], seed=1006, torchvision=True),
    dict(name="torchvision_b0_w025_fused-4", layout="torchvision", model="efficientnetv2-b0", width=0.25,
         depth=0.5, fused="4", input=[1, 3, 50, 50], seed=1007, torchvision=True),
]


def versions():
    return {"torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def forward(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).float()


def check_logits(name, logits):
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits"
    mx = logits.abs().max().item()
    spread = logits.std(dim=1).min().item()
    assert 0.05 < mx < 1000.0, f"{name}: max|logit| {mx} is trivially small or huge"
    assert spread > 1e-3, f"{name}: logits are (nearly) constant across classes ({spread})"
    return mx, spread


def make_case(case, out_dir):
    spec = resolve(case["model"], case["width"], case["depth"], case["fused"])
    torch.manual_seed(case["seed"])
    extra = {}
    if "timm_m_scaled_head" in case:
        model, call = build_timm_m_scaled_head(case["width"], case["depth"], NUM_CLASSES)
        check_shapes(model, expected_timm(spec, NUM_CLASSES), case["name"])
        bn_eps, padding = 1e-5, "symmetric"
    elif "timm" in case:
        tname, tkw = case["timm"]
        kwargs = dict(tkw, num_classes=NUM_CLASSES)
        model, call = build_timm(tname, kwargs)
        check_shapes(model, expected_timm(spec, NUM_CLASSES), case["name"])
        bn_eps = 1e-3 if case["layout"] == "timm-tf" else 1e-5
        padding = "tf-same" if case["layout"] == "timm-tf" else "symmetric"
    else:
        model, call = build_torchvision(spec, NUM_CLASSES)
        check_shapes(model, expected_torchvision(spec, NUM_CLASSES), case["name"])
        bn_eps, padding = 1e-3, "symmetric"
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == bn_eps, (case["name"], m.eps)
    randomize_(model)
    model.eval()
    # standard-normal noise plus a standard-normal offset per (sample, channel): still Gaussian, but the offsets
    # survive global average pooling, so the logits of different samples differ ~10x more than with white noise
    # alone (batch-mixing bugs show up); the rest of each logit comes from the BN biases/statistics.
    n, c = case["input"][:2]
    x = (torch.randn(*case["input"]) + torch.randn(n, c, 1, 1)).to(torch.float32).contiguous()
    logits = forward(model, x)
    assert list(logits.shape) == [case["input"][0], NUM_CLASSES]
    mx, spread = check_logits(case["name"], logits)
    # eval mode is deterministic (no dropout / drop-path / stochastic depth active)
    assert torch.equal(logits, forward(model, x)), f"{case['name']}: eval forward not deterministic"

    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            assert v.dtype == torch.int64, k
        else:
            assert v.dtype == torch.float32, k
    tensors = {k: v.detach().contiguous().clone() for k, v in sd.items()}

    # --- extra checks -------------------------------------------------------------------------
    if "torchvision" in case:
        # stochastic depth (0.2 ramp) and classifier dropout (0.2) must be inert in eval mode:
        # the same weights in a model built with both at 0 give bit-identical logits.
        plain, _ = build_torchvision(spec, NUM_CLASSES, dropout=0.0, stochastic_depth_prob=0.0)
        plain.load_state_dict(sd, strict=True)
        assert torch.equal(forward(plain, x), logits), f"{case['name']}: dropout/stochastic depth not inert"
        extra["dropout_sd_inert"] = True
    if "crosscheck" in case:
        cname, ckw = case["crosscheck"]
        peer = timm.create_model(cname, num_classes=NUM_CLASSES, **ckw)
        psd = peer.state_dict()
        assert len(psd) == len(sd)
        mapped = {}
        for (tk, tv), (vk, vv) in zip(psd.items(), sd.items()):  # positional pairing (pytorch-peers.md §5)
            assert tv.shape == vv.shape, (tk, vk)
            mapped[tk] = vv
        peer.load_state_dict(mapped, strict=True)
        diff = (forward(peer, x) - logits).abs().max().item()
        assert diff < 1e-4, f"{case['name']}: timm {cname} disagrees with torchvision ({diff})"
        extra["crosscheck"] = f"timm {cname} same weights: max|diff| {diff:.2e}"
    if case["layout"] == "timm-tf":
        # the same weights with symmetric padding must give different logits (SAME padding matters)
        tname, tkw = case["timm"]
        sym = timm.create_model(tname, num_classes=NUM_CLASSES, pad_type="", **tkw)
        sym.load_state_dict(sd, strict=True)
        diff = (forward(sym, x) - logits).abs().max().item()
        assert diff > 1e-3, f"{case['name']}: SAME padding made no difference ({diff})"
        extra["crosscheck"] = f"same weights, symmetric padding: max|diff| {diff:.3f}"

    # --- write ---------------------------------------------------------------------------------
    d = os.path.join(out_dir, case["name"])
    os.makedirs(d, exist_ok=True)
    wpath = os.path.join(d, "weights.safetensors")
    safetensors.torch.save_file(tensors, wpath)
    np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
    meta = {
        "layout": case["layout"],
        "model": case["model"],
        "width": case["width"],
        "depth": case["depth"],
        "num_classes": NUM_CLASSES,
        "fused_stages": case["fused"],
        "input_shape": case["input"],
        "peer": call,
        "versions": versions(),
        "seed": case["seed"],
        "bn_eps": bn_eps,
        "padding": padding,
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    # round trip: the written file reloads strictly into a fresh peer and reproduces the logits
    loaded = safetensors.torch.load_file(wpath)
    model.load_state_dict(loaded, strict=True)
    assert torch.equal(forward(model, x), logits)

    n_params = sum(p.numel() for p in model.parameters())
    nbt = sum(1 for k in sd if k.endswith("num_batches_tracked"))
    return dict(case=case["name"], layout=case["layout"], model=case["model"], w=case["width"], d=case["depth"],
                fused=case["fused"], input="x".join(map(str, case["input"])),
                repeats=[s["r"] for s in spec["stages"]], params=n_params, keys=len(sd), nbt=nbt,
                kb=os.path.getsize(wpath) / 1024.0, max_logit=mx, extra=extra.get("crosscheck", ""))


# ------------------------------------------------------------------------------------------------
# Full-size parameter counts
# ------------------------------------------------------------------------------------------------
def count(model):
    sd = model.state_dict()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "state_dict_keys": len(sd),
        "num_batches_tracked_keys": sum(1 for k in sd if k.endswith("num_batches_tracked")),
    }


def param_counts():
    out = {"num_classes": 1000, "versions": versions(), "timm": {}, "torchvision": {}}
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for v in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl"):
            name = f"tf_efficientnetv2_{v}"
            m = timm.create_model(name, num_classes=1000)
            out["timm"][name] = dict(model=f"efficientnetv2-{v}", peer=f"timm.create_model({name!r})", **count(m))
            check_shapes(m, expected_timm(resolve(f"efficientnetv2-{v}"), 1000), name)
        for v in ("s", "m", "l"):
            name = f"efficientnet_v2_{v}"
            m = getattr(torchvision.models, name)(weights=None)
            out["torchvision"][name] = dict(model=f"efficientnetv2-{v}",
                                            peer=f"torchvision.models.{name}(weights=None)", **count(m))
            check_shapes(m, expected_torchvision(resolve(f"efficientnetv2-{v}"), 1000), name)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="toolkit/tests/fixtures/peers")
    ap.add_argument("--only", nargs="*", help="case names to (re)generate; default all")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    rows = []
    for case in CASES:
        if args.only and case["name"] not in args.only:
            continue
        rows.append(make_case(case, args.out))
        print(f"wrote {case['name']}", file=sys.stderr)

    counts = param_counts()
    with open(os.path.join(args.out, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
        f.write("\n")

    print()
    hdr = f"{'case':32} {'layout':11} {'model':18} {'w':>5} {'d':>5} {'fused':8} {'input':11} " \
          f"{'repeats':22} {'params':>8} {'keys':>5} {'KiB':>7} {'max|logit|':>10}  check"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['case']:32} {r['layout']:11} {r['model']:18} {r['w']:5} {r['d']:5} {r['fused']:8} "
              f"{r['input']:11} {str(r['repeats']):22} {r['params']:8d} {r['keys']:5d} {r['kb']:7.1f} "
              f"{r['max_logit']:10.4f}  {r['extra']}")
    total = sum(r["kb"] for r in rows)
    print(f"total weights: {total:.1f} KiB")
    print()
    print(f"{'peer model (1000 classes)':30} {'params':>12} {'keys':>6} {'nbt':>5}")
    for lib in ("timm", "torchvision"):
        for name, c in counts[lib].items():
            print(f"{lib + ':' + name:30} {c['params']:12d} {c['state_dict_keys']:6d} {c['num_batches_tracked_keys']:5d}")


if __name__ == "__main__":
    main()
