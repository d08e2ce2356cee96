"""A tiny detector IR built with OpenVINO's own opset, for tests that need a real model file
but not the shipped one: input [1,3,64,64], YOLOv8 output layout [1, 4+3, 84], no detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_tiny_detector(folder: Path) -> Path:
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 3, 64, 64], np.float32, name="images")
    zero = ops.multiply(ops.reduce_mean(image, [0, 1, 2, 3], keep_dims=False), ops.constant(np.float32(0)))
    out = ops.add(ops.constant(np.zeros((1, 7, 84), np.float32)), zero)
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([out], [image], "tiny-detector"), str(folder / "tiny-detector.xml"))
    (folder / "metadata.yaml").write_text("task: detect\nimgsz: 64\nnames: {0: scratch, 1: dent, 2: stain}\n")
    return folder
