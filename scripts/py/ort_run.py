"""Run an ONNX model in onnxruntime: ort_run.py MODEL INPUT.npy OUTPUT.npy [THREADS]

Used by the Rust tests to check our artifacts against a peer runtime.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, out = sys.argv[1:4]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = np.load(inp)
    (name,) = [i.name for i in sess.get_inputs()]
    y = sess.run(None, {name: x})[0]
    np.save(out, y.astype(np.float32))


if __name__ == "__main__":
    main()
