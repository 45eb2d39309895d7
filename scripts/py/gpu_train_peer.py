"""Peer for the CUDA training engine's throughput: timm EfficientNetV2 training steps on the GPU,
bf16 autocast, channels_last, eager (the issue's reference; --precision tf32: f32 with TF32 convs and
matmuls instead, what our tf32 is compared with), batch already on the device: forward,
cross-entropy, backward, RMSpropTF step (timm's TF-style RMSProp, as our engine). Timed with CUDA
events. Prints one JSON object with images/s, peak memory and (given --gmacs, the MACs per image our
cost counter reports for the same architecture) achieved TFLOP/s counted as 3 x 2 x MACs per image.
Runs on the lent GPU machine (torch + timm preinstalled there)."""
import argparse
import json

import timm
import timm.optim
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--gmacs", type=float, default=None)
    p.add_argument("--precision", choices=["bf16", "tf32"], default="bf16")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    # PyTorch allows TF32 in cuDNN convs by default, not in matmuls: tf32 allows both, as ours does.
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    model = timm.create_model(a.model, pretrained=False).cuda().train().to(memory_format=torch.channels_last)
    opt = timm.optim.RMSpropTF(model.parameters(), lr=1e-3, alpha=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5)
    x = torch.randn(a.batch, 3, a.size, a.size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (a.batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.iters):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / a.iters
    ips = a.batch / (ms / 1e3)
    out = {"peer": f"timm {timm.__version__} {a.model}", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
           "size": a.size, "batch": a.batch, "precision": ("bf16 autocast" if a.precision == "bf16" else "tf32 (f32, TF32 convs and matmuls)") + ", channels_last, eager",
           "step_ms": ms, "throughput_ips": ips, "peak_memory_bytes": torch.cuda.max_memory_allocated()}
    if a.gmacs:
        out["achieved_tflops"] = 6 * a.gmacs * 1e9 * ips / 1e12
    print(json.dumps(out))


if __name__ == "__main__":
    main()
