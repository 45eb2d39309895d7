"""Run many ONNX models in onnxruntime in one process: ort_run_many.py LIST [THREADS]

LIST holds one "MODEL INPUT.npy OUTPUT.npy" triple per line (paths without spaces). Used by the Rust
tests that check many small models (one per op of an int8 model) without a Python start-up each.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        model, inp, out = line.split()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in sess.get_inputs()]
        np.save(out, sess.run(None, {name: np.load(inp)})[0].astype(np.float32))


if __name__ == "__main__":
    main()
