"""ddddocr's network in PyTorch: the definition lives in ``capd.modules.net`` (custom
modules train it too); this keeps the old import path and the check against ONNX Runtime.

    python -m training.ddddocr_net --check 100    # agreement with ONNX Runtime
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from capd.modules.net import (  # noqa: F401  (re-exported for training/)
    FRONT_BLOCKS,
    HEIGHT,
    STRIDE,
    DdddNet,
    default_onnx_path,
    load_onnx_weights,
    pretrained,
)


def _greedy(logits: np.ndarray, charset: list[str]) -> str:
    best = logits.argmax(-1).tolist()
    out, prev = [], 0
    for k in best:
        if k != prev and k != 0:
            out.append(charset[k])
        prev = k
    return "".join(out)


def check(n: int) -> None:
    """Compare greedy CTC output of this network and of ONNX Runtime on real captchas."""
    import onnxruntime as ort
    from ddddocr.charsets import CHARSET_OLD

    from capd.solving.ocr.base import open_image
    from capd.solving.ocr.ddddocr_engine import DdddOcrEngine
    from training.datasets import SCHEMES, load_labels

    torch.set_num_threads(2)
    net = pretrained()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(default_onnx_path(), opts, providers=["CPUExecutionProvider"])
    eng = DdddOcrEngine()
    charset = list(CHARSET_OLD)
    same = total = right_ref = right_ours = 0
    max_diff = []
    per = max(1, n // len(SCHEMES))
    for scheme in SCHEMES:
        for path, label in load_labels(scheme)[:per]:
            with open(path, "rb") as fh:
                pixels = eng._pixels(open_image(fh.read()))
            ref = sess.run(None, {"input1": pixels})[0].reshape(-1, len(charset))
            with torch.no_grad():
                ours = net(torch.from_numpy(pixels))[:, 0, :].numpy()
            a, b = _greedy(ref, charset), _greedy(ours, charset)
            same += a == b
            right_ref += a.lower() == label.lower()
            right_ours += b.lower() == label.lower()
            total += 1
            max_diff.append(float(np.abs(ref - ours).max()))
    print(f"greedy CTC agreement with ONNX Runtime: {same}/{total} = {same / total:.3f}; "
          f"median max |logit diff| {np.median(max_diff):.3f}; exact (ignoring case) vs "
          f"labels: ONNX Runtime {right_ref / total:.3f}, PyTorch {right_ours / total:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", type=int, default=100)
    check(ap.parse_args().check)
