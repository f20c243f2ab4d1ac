"""TFLite / LiteRT: convert an exported SavedModel and run the result.

The conversion reads the SavedModel written by
`keras_hourglass.export.export_saved_model` directly and takes its `crops`
signature: float32 crops `[1, height, width, 3]` in `[0, 1]` in, keypoints
(crop pixels), scores and heatmaps out, decoding included. That signature
has no image-warp op, so the model needs only TFLite's built-in ops; the app
crops the person (centre and scale, see `keras_hourglass.transforms`) and
maps keypoints back.

Quantization: `float32`, `float16` (weights), `dynamic` (int8 weights,
float activations) and `int8` (full-integer kernels calibrated on
`representative_images`, float input and output kept so the app's code is
the same for every variant).
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import tensorflow as tf

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
SIGNATURE = "crops"


def convert_saved_model(saved_model_dir: str, output_path: str, quantization: str = "float32",
                        representative_images: Iterable | None = None) -> str:
    """Converts the `crops` signature of an exported SavedModel; writes `output_path` atomically."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"{saved_model_dir}: not a SavedModel directory (no saved_model.pb).")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None:
            raise ValueError("int8 quantization needs representative_images (crops drawn from the training data).")
        images = [np.asarray(image, np.float32) for image in representative_images]

        def representative():
            for image in images:
                yield {"images": image[None] if image.ndim == 3 else image}

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    temporary = output_path + ".partial"
    with open(temporary, "wb") as f:
        f.write(flatbuffer)
    os.replace(temporary, output_path)
    return output_path


def make_interpreter(model_path: str, num_threads: int = 2):
    """A LiteRT interpreter (`ai_edge_litert`), or `tf.lite.Interpreter` where LiteRT is not installed."""
    if not os.path.isfile(model_path):
        raise ValueError(f"{model_path}: no such .tflite file.")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=model_path, num_threads=num_threads)


class TFLitePoseModel:
    """Runs a converted model: `predict(crops)` returns `{"keypoints", "scores", "heatmaps"}` as arrays."""

    def __init__(self, model_path: str, num_threads: int = 2):
        self.path = model_path
        self.interpreter = make_interpreter(model_path, num_threads)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)

    def predict(self, crops) -> dict:
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be [N, height, width, 3] float32 in [0, 1], got shape {crops.shape}.")
        outputs = [self.runner(images=crop[None]) for crop in crops]  # the converted graph has batch 1
        return {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
