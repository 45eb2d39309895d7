"""Run a .tflite model in LiteRT's interpreter (PyPI ai-edge-litert):

    tflite_run.py MODEL INPUT.npy OUTPUT.npy [--resolver ref|default|builtin] [--details OUT.json]

INPUT.npy holds a batch of model inputs in the model's own dtype (int8 or uint8, [N, H, W, C]); the
model is batch 1, so each sample is invoked on its own and the raw outputs are stacked into
OUTPUT.npy ([N, ...], the output dtype). Resolvers: `ref` = BUILTIN_REF (TFLite's reference
kernels, what effv2-quantize's executor predicts bit for bit), `default` = the interpreter's
default (optimized kernels plus its default delegates), `builtin` = optimized kernels without
default delegates. `--details` writes the ops and tensors the interpreter loaded, as JSON.

Used by the Rust tests to check our TFLite writer and int8 executor against a real interpreter.
"""
import argparse
import json

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

RESOLVERS = {
    "ref": OpResolverType.BUILTIN_REF,
    "default": OpResolverType.AUTO,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def details(interp):
    tensors = []
    for t in interp.get_tensor_details():
        q = t["quantization_parameters"]
        tensors.append({
            "index": int(t["index"]),
            "name": t["name"],
            "shape": [int(d) for d in t["shape"]],
            "dtype": np.dtype(t["dtype"]).name,
            "scales": [float(s) for s in q["scales"]],
            "zero_points": [int(z) for z in q["zero_points"]],
            "quantized_dimension": int(q["quantized_dimension"]),
        })
    ops = [{"op_name": o["op_name"], "inputs": [int(i) for i in o["inputs"]], "outputs": [int(i) for i in o["outputs"]]}
           for o in interp._get_ops_details()]
    return {"ops": ops, "tensors": tensors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--resolver", choices=sorted(RESOLVERS), default="ref")
    ap.add_argument("--details")
    a = ap.parse_args()
    interp = Interpreter(model_path=a.model, experimental_op_resolver_type=RESOLVERS[a.resolver], num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    x = np.load(a.input)
    if x.dtype != inp["dtype"] or tuple(x.shape[1:]) != tuple(inp["shape"][1:]):
        raise SystemExit(f"input {x.dtype} {x.shape} does not fit the model's {np.dtype(inp['dtype']).name} {list(inp['shape'])}")
    ys = []
    for i in range(x.shape[0]):
        interp.set_tensor(inp["index"], x[i:i + 1])
        interp.invoke()
        ys.append(interp.get_tensor(out["index"])[0].copy())
    np.save(a.output, np.stack(ys))
    if a.details:
        with open(a.details, "w") as f:
            json.dump(details(interp), f)


if __name__ == "__main__":
    main()
