"""Export the trained checkpoint to ONNX (dynamic batch and width) and write the charset.

    python -m training.export [--ckpt training/out/model.pt]
    python -m training.export --ckpt training/out/crnn_web.pt \
        --out capd/solving/ocr/models/capd_web.onnx --meta capd/solving/ocr/models/capd_web.json

Then ``python -m training.evaluate --calibrate`` fits the confidence calibration on the
calibration split and writes capd/solving/ocr/models/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from training import config
from training.model import CHARSET, CRNN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=config.CHECKPOINT)
    ap.add_argument("--out", default=config.ONNX_OUT)
    ap.add_argument("--meta", default=config.CHARSET_OUT,
                    help="where the charset and the run's figures go (the capd-web model:"
                         " capd/solving/ocr/models/capd_web.json)")
    args = ap.parse_args()
    ck = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    model = CRNN()
    model.load_state_dict(ck["model"])
    model.eval()
    dummy = torch.zeros(1, 1, config.HEIGHT, config.WIDTH)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    torch.onnx.export(model, (dummy,), args.out, input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "batch", 3: "width"},
                                    "logits": {0: "frames", 1: "batch"}})
    with open(args.meta, "w") as f:
        json.dump({"charset": CHARSET, "input_height": config.HEIGHT,
                   "input_width": config.WIDTH, "trained_steps": ck.get("step"),
                   "trained_images": ck.get("seen"),
                   "train_seconds": round(ck.get("elapsed_s", 0))}, f, indent=1)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB), step {ck.get('step')}")


if __name__ == "__main__":
    main()
