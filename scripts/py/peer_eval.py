"""Top-1/top-5 of a built artifact on Fashion-MNIST's test split, in a peer runtime:

    peer_eval.py ARTIFACT_DIR [--limit N] [--threads T]

`model.onnx` (cpu fp32/int8) runs in onnxruntime, `model_int8.tflite` (coral) in LiteRT's
interpreter (TFLite's CPU kernels, what the Edge TPU's host fallback runs). Images are read from
Debian's dataset-fashion-mnist and preprocessed as the manifest says (the whole 28 px image resized
to `size` with a triangle filter, rounded to 8 bits, then (x/255 - mean) / std), independently of
our Rust loader. Prints one JSON object: top1, top5 (fractions), images, runtime.
"""
import argparse
import gzip
import json
import os

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def triangle_weights(n_in, n_out):
    """[n_out, n_in] resampling matrix of a triangle filter (image-rs `FilterType::Triangle`)."""
    ratio = n_in / n_out
    scale = max(ratio, 1.0)
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        centre = (o + 0.5) * ratio
        for i in range(n_in):
            w[o, i] = max(0.0, 1.0 - abs((i + 0.5 - centre) / scale))
        w[o] /= w[o].sum()
    return w


def preprocess(images, size, mean, std):
    """uint8 [N, H, W] -> float32 [N, 1, size, size]."""
    wy = triangle_weights(images.shape[1], size)
    wx = triangle_weights(images.shape[2], size)
    x = np.einsum("oh,nhw,pw->nop", wy, images.astype(np.float64), wx)
    x = np.clip(np.round(x), 0, 255) / 255.0
    return ((x - mean[0]) / std[0]).astype(np.float32)[:, None]


def onnx_logits(model, x, batch, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in sess.get_inputs()]
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = np.zeros((batch - len(chunk),) + x.shape[1:], np.float32)
        out.append(sess.run(None, {name: np.concatenate([chunk, pad])})[0][:len(chunk)])
    return np.concatenate(out)


def tflite_logits(model, x, quant, threads):
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=model, num_threads=threads)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (outp,) = interp.get_output_details()
    qi, qo = quant["input"], quant["output"]
    info = np.iinfo(inp["dtype"])
    out = []
    for img in x:
        nhwc = img.transpose(1, 2, 0)[None]
        q = np.clip(np.round(nhwc / qi["scale"]) + qi["zero_point"], info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        y = interp.get_tensor(outp["index"]).astype(np.float32)
        out.append((y.reshape(-1) - qo["zero_point"]) * qo["scale"])
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    m = json.load(open(os.path.join(a.artifact, "manifest.json")))
    images, labels = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    if a.limit:
        images, labels = images[:a.limit], labels[:a.limit]
    p = m["preprocess"]
    shape = m["input"]["shape"]
    channels = shape[3] if m["input"].get("layout") == "NHWC" else shape[1]
    if channels != 1:
        raise SystemExit("peer_eval.py: Fashion-MNIST is grayscale but the artifact takes %d channels" % channels)
    x = preprocess(images, p["size"], p["mean"], p["std"])
    model = next(f["path"] for f in m["files"] if f["role"] == "model")
    path = os.path.join(a.artifact, model)
    if model.endswith(".onnx"):
        logits, runtime = onnx_logits(path, x, m["input"]["shape"][0], a.threads), "onnxruntime"
    else:
        logits, runtime = tflite_logits(path, x, m["quantization"], a.threads), "litert"
    top5 = np.argsort(-logits, axis=1)[:, :5]
    print(json.dumps({
        "top1": float(np.mean(top5[:, 0] == labels)),
        "top5": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "images": int(len(labels)),
        "runtime": runtime,
    }))


if __name__ == "__main__":
    main()
