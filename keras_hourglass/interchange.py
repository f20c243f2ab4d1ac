"""ONNX and OpenVINO files: the `crops` signature converted for runtimes outside TensorFlow, and run by them.

`convert(saved_model, path, fmt)` converts the same graph the TFLite files
come from (`keras_hourglass.export.crops_signature`): float32 crops `[N,
height, width, 3]` in `[0, 1]` in; `heatmaps` (the last stack's), `keypoints`
(crop pixels) and `scores` out, the decoding (and the flip test, where the
SavedModel was exported with it) included, with a dynamic batch.

* `onnx`: the signature's graph is frozen (variables become constants) and
  converted by `tf2onnx` (`from_graph_def`, opset `ONNX_OPSET`); the outputs
  are renamed to `heatmaps`, `keypoints`, `scores` and the input to
  `images`. The export metadata (joint names, limbs, codec, input size,
  normalisation) is the model's `metadata_props` entry `keras_hourglass`
  (JSON). Runs in ONNX Runtime.
* `openvino`: `openvino.convert_model` on the same concrete function (it
  names the outputs after the signature's), saved as `model.xml` +
  `model.bin` in float32 (`compress_to_fp16=False`); the metadata is the
  `rt_info` entry `keras_hourglass`. Runs in OpenVINO Runtime on the CPU
  with `INFERENCE_PRECISION_HINT` f32: on CPUs with bf16 units (AVX-512
  BF16, AMX) OpenVINO otherwise computes in bf16, which moved the demo
  model's heatmaps by 0.016 (measured on this project's Xeon) against 1e-6
  in f32.

* `openvino-int8`: the OpenVINO model quantized by NNCF's post-training
  quantization, calibrated on the crops TFLite int8 calibrates on
  (`model-int8.xml`).

The runtimes are extras: `pip install keras-hourglass[onnx]` (tf2onnx, onnx,
onnxruntime) and `keras-hourglass[openvino]` (openvino, nncf); without them `require` says in
one line which extra to install. `RuntimePoseModel` runs a file;
`keras_hourglass.pose_model.load_pose_model` wraps it in the same `PoseModel`
as the other formats, so `predict.py`, `evaluate.py` and `convert.py`'s
parity table take `.onnx` and `.xml` files as they take a `.tflite`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time

import numpy as np

FORMATS = ("onnx", "openvino", "openvino-int8")
EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml", "openvino-int8": "-int8.xml"}
EXTRA_MODULES = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",),
                 "openvino-int8": ("openvino", "nncf")}
EXTRAS = {"onnx": "onnx", "openvino": "openvino", "openvino-int8": "openvino"}
METADATA_KEY = "keras_hourglass"
OUTPUTS = ("heatmaps", "keypoints", "scores")
ONNX_OPSET = 17


def format_of(path: str) -> str | None:
    """The runtime of a file by its extension: `"onnx"` (`.onnx`), `"openvino"` (`.xml`, int8 too), else None."""
    extension = os.path.splitext(str(path))[1].lower()
    return {".onnx": "onnx", ".xml": "openvino"}.get(extension)


def require(fmt: str) -> None:
    """Raises one line naming the extra to install when a module of `fmt`'s runtime is missing."""
    missing = [name for name in EXTRA_MODULES[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"{fmt} files need `pip install keras-hourglass[{EXTRAS[fmt]}]` ({', '.join(missing)} is "
                         "not installed).")


def is_input_size(size) -> bool:
    """Whether a converted file's metadata `input_size` is `[height, width]`, integers from 1 to 4096."""
    return isinstance(size, list) and len(size) == 2 and all(type(v) is int and 0 < v <= 4096 for v in size)


def convert(saved_model, output_path: str, fmt: str, calibration=None) -> str:
    """Converts the `crops` signature of a SavedModel folder (or a `PoseEstimator` in memory) to `output_path`
    (`.onnx`, or `.xml` with its `.bin` beside it), written atomically; returns `output_path`.

    `openvino-int8` quantizes the OpenVINO model with NNCF's post-training
    quantization (`nncf.quantize`, its defaults: int8 weights and
    activations, activation ranges from `calibration`, float32 crops `[N,
    height, width, 3]` in `[0, 1]` drawn from the training data, the crops
    TFLite int8 calibrates on; then its fast bias correction).
    """
    from keras_hourglass.export import crops_signature

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    require(fmt)
    if fmt == "openvino-int8" and (calibration is None or not len(calibration)):
        raise ValueError("openvino-int8 needs calibration crops (drawn from the training data).")
    function, info, _owner = crops_signature(saved_model)
    quantization = "int8" if fmt == "openvino-int8" else "float32"
    info = {**info, "quantization": quantization, "format_converted": fmt}
    if fmt == "onnx":
        return _to_onnx(function, info, output_path)
    return _to_openvino(function, info, output_path, calibration if quantization == "int8" else None)


def _to_onnx(function, info: dict, output_path: str) -> str:
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from keras_hourglass.fileio import quiet_stderr, write_bytes

    frozen = convert_variables_to_constants_v2(function)
    names = _output_names(function)
    with quiet_stderr():  # tf2onnx logs its TF1-era calls and every optimiser pass
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[frozen.inputs[0].name],
            output_names=[tensor.name for tensor in frozen.outputs], opset=ONNX_OPSET)
    graph = proto.graph
    renames = {output.name: name for output, name in zip(graph.output, names)}
    renames[graph.input[0].name] = "images"
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.checker.check_model(proto)
    return write_bytes(output_path, proto.SerializeToString())


def _to_openvino(function, info: dict, output_path: str, calibration=None) -> str:
    import openvino as ov

    from keras_hourglass.fileio import partial_directory

    if not output_path.endswith(".xml"):
        raise ValueError(f"{output_path}: an OpenVINO model is an .xml file (with its weights in a .bin beside it).")
    model = ov.convert_model(function)
    names = _output_names(function)
    for output, name in zip(model.outputs, names):
        if name not in output.get_names():
            output.get_tensor().set_names({name, *output.get_names()})
    model.inputs[0].get_tensor().set_names({"images"})
    if calibration is not None:
        import nncf

        height, width = info["input_size"]
        crops = [np.asarray(crop, np.float32).reshape(1, height, width, 3) for crop in calibration]
        model = nncf.quantize(model, nncf.Dataset(crops), subset_size=len(crops))
    model.set_rt_info(json.dumps(info), [METADATA_KEY])
    scratch = partial_directory(output_path)
    try:
        ov.save_model(model, os.path.join(scratch, "model.xml"), compress_to_fp16=False)
        # The weights first: a model.xml in place means its model.bin is complete.
        os.replace(os.path.join(scratch, "model.bin"), output_path[:-4] + ".bin")
        os.replace(os.path.join(scratch, "model.xml"), output_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return output_path


def _output_names(function) -> list[str]:
    """The signature's output names in the order of its flat outputs (`tf.nest` order: sorted keys)."""
    import tensorflow as tf

    structure = function.structured_outputs
    keys = sorted(structure)
    flat = tf.nest.flatten(structure)
    if sorted(keys) != sorted(OUTPUTS) or len(flat) != len(function.outputs):
        raise ValueError(f"the crops signature must output {', '.join(OUTPUTS)}; it outputs {', '.join(keys)}.")
    return keys


class RuntimePoseModel:
    """Runs an ONNX (ONNX Runtime) or OpenVINO (OpenVINO Runtime, CPU) file: `predict(crops)` returns
    `{"heatmaps", "keypoints", "scores"}` as arrays, as `keras_hourglass.tflite.TFLitePoseModel` does.

    `metadata` is the export metadata embedded at conversion; `num_threads`
    the runtime's threads (both runtimes default to every core).
    `openvino_precision` is OpenVINO's `INFERENCE_PRECISION_HINT`: `"f32"`
    (the default here, for parity), or None for the plugin's own choice
    (bf16 on CPUs with bf16 units: faster, and less exact; docs/numbers.md measures
    both).
    """

    def __init__(self, path: str, num_threads: int = 2, openvino_precision: str | None = "f32"):
        self.openvino_precision = openvino_precision
        self.path, self.format = path, format_of(path)
        if self.format is None:
            raise ValueError(f"{path}: not an ONNX (.onnx) or OpenVINO (.xml) file.")
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such {self.format} file.")
        require(self.format)
        loader = self._load_onnx if self.format == "onnx" else self._load_openvino
        text = loader(num_threads)
        try:
            self.metadata = json.loads(text)
        except (TypeError, ValueError):
            self.metadata = None
        if not isinstance(self.metadata, dict):
            raise ValueError(f"{path}: no keras_hourglass metadata in this file (was it converted by convert.py?).")
        if not is_input_size(self.metadata.get("input_size")):
            raise ValueError(f"{path}: its keras_hourglass metadata has a bad input_size: expected [height, width], "
                             "integers from 1 to 4096.")

    def _load_onnx(self, num_threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            raise ValueError(f"{self.path}: not an ONNX model ONNX Runtime can load "
                             f"({str(error).strip().splitlines()[0][:200]}).") from None
        names = [output.name for output in self.session.get_outputs()]
        if sorted(names) != sorted(OUTPUTS) or [i.name for i in self.session.get_inputs()] != ["images"]:
            raise ValueError(f"{self.path}: expected the input images and the outputs {', '.join(OUTPUTS)}; it has "
                             f"{', '.join(names)}.")
        self._run = lambda crops: dict(zip(names, self.session.run(names, {"images": crops})))
        return self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def _load_openvino(self, num_threads: int):
        import openvino as ov

        weights = self.path[:-4] + ".bin"
        if not os.path.isfile(weights):
            raise ValueError(f"{self.path}: its weights file {weights} is not there (an OpenVINO model is the .xml "
                             "and the .bin beside it).")
        core = ov.Core()
        try:
            model = core.read_model(self.path)
            config = {"INFERENCE_NUM_THREADS": num_threads}
            if self.openvino_precision:
                config["INFERENCE_PRECISION_HINT"] = self.openvino_precision
            compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as error:  # OpenVINO's first line names its own source file; the reason comes after
            lines = [line.strip() for line in str(error).splitlines()
                     if line.strip() and not line.strip().startswith(("Exception from", "Check "))]
            raise ValueError(f"{self.path}: not an OpenVINO model OpenVINO can load "
                             f"({(lines[-1] if lines else type(error).__name__)[:200]}).") from None
        outputs = {name: output for output in compiled.outputs for name in output.get_names() if name in OUTPUTS}
        if sorted(outputs) != sorted(OUTPUTS):
            raise ValueError(f"{self.path}: expected the outputs {', '.join(OUTPUTS)}; it has "
                             f"{', '.join(sorted(n for o in compiled.outputs for n in o.get_names()))}.")
        request = compiled.create_infer_request()
        def run(crops):
            results = request.infer({0: crops})  # one inference; its outputs by port
            return {name: np.array(results[output]) for name, output in outputs.items()}

        self._run = run
        return model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None

    def predict(self, crops) -> dict:
        crops = np.ascontiguousarray(crops, np.float32)
        height, width = self.metadata["input_size"]
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"crops must be [N, {height}, {width}, 3] float32 in [0, 1], got shape {crops.shape}.")
        return self._run(crops)

    def milliseconds_per_image(self, steps: int = 20) -> float:
        """Median time of one crop through the file on this machine (after 2 unmeasured calls)."""
        return median_milliseconds(self._run, self.metadata["input_size"], steps)


def median_milliseconds(run, input_size, steps: int = 20) -> float:
    """Median milliseconds of `run(crop)` on one random crop `[1, height, width, 3]`, after 2 unmeasured calls:
    the speed column of `convert.py`'s parity table, for every format."""
    height, width = input_size
    crop = np.random.default_rng(0).uniform(0, 1, (1, height, width, 3)).astype(np.float32)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        run(crop)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[2:]))
