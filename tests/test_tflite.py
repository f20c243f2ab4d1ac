import json
import zipfile

import flatbuffers
import numpy as np
import pytest

from keras_hourglass import MPII, HeatmapCodec
from keras_hourglass.pose_model import load_pose_model
from keras_hourglass.tflite import TFLitePoseModel, convert_saved_model, int8_mac_share
from keras_hourglass.tflite_metadata import FILE_IDENTIFIER, JSON_FILE, LABELS_FILE, read_metadata
from tests.conftest import assert_close_to_scale


@pytest.fixture(scope="module")
def saved_model(tiny_saved_model):
    return tiny_saved_model


def test_float32_matches_the_keras_model(saved_model, tmp_path):
    model, codec, path = saved_model
    tflite_path = convert_saved_model(path, str(tmp_path / "model.tflite"))
    crops = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    outputs = TFLitePoseModel(tflite_path).predict(crops)
    expected = model(crops, training=False)[-1].numpy()
    assert_close_to_scale(outputs["heatmaps"], expected)
    keypoints, _ = codec.decode(expected)
    assert np.abs(outputs["keypoints"] - keypoints.numpy()).max() <= 0.5
    assert int8_mac_share(tflite_path) == 0.0


def test_the_estimator_in_memory_converts_to_the_same_model_as_its_saved_model(saved_model, tmp_path):
    """The import converts the graph it holds instead of reading the SavedModel back; same file, same answers."""
    from keras_hourglass.export import PoseEstimator

    model, codec, path = saved_model
    from_folder = TFLitePoseModel(convert_saved_model(path, str(tmp_path / "folder.tflite")))
    estimator = PoseEstimator(model, codec, MPII.names)
    in_memory_path = convert_saved_model(estimator, str(tmp_path / "memory.tflite"))
    in_memory = TFLitePoseModel(in_memory_path)
    crops = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    a, b = from_folder.predict(crops), in_memory.predict(crops)
    assert sorted(a) == sorted(b) == ["heatmaps", "keypoints", "scores"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert read_metadata(in_memory_path) == read_metadata(str(tmp_path / "folder.tflite"))


class _Table:
    """Reads a flatbuffer table by field slot, as any reader of metadata_schema.fbs does."""

    def __init__(self, buffer, position):
        self.table = flatbuffers.table.Table(buffer, position)

    def _offset(self, slot):
        return self.table.Offset(4 + 2 * slot)

    def string(self, slot):
        offset = self._offset(slot)
        return self.table.String(offset + self.table.Pos).decode() if offset else None

    def byte(self, slot):
        offset = self._offset(slot)
        return self.table.Get(flatbuffers.number_types.Uint8Flags, offset + self.table.Pos) if offset else 0

    def uint(self, slot):
        offset = self._offset(slot)
        return self.table.Get(flatbuffers.number_types.Uint32Flags, offset + self.table.Pos) if offset else 0

    def child(self, slot):
        offset = self._offset(slot)
        return _Table(self.table.Bytes, self.table.Indirect(offset + self.table.Pos)) if offset else None

    def tables(self, slot):
        offset = self._offset(slot)
        if not offset:
            return []
        start = self.table.Vector(offset)
        return [_Table(self.table.Bytes, self.table.Indirect(start + 4 * i)) for i in range(self.table.VectorLen(offset))]

    def floats(self, slot):
        offset = self._offset(slot)
        return list(self.table.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, offset)) if offset else []


def standard_metadata(path):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    entry = next(m for m in model.metadata if m.name in (b"TFLITE_METADATA", "TFLITE_METADATA"))
    data = bytes(model.buffers[entry.buffer].data)
    assert flatbuffers.util.BufferHasIdentifier(data, 0, FILE_IDENTIFIER)
    return _Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))


def test_metadata_is_embedded_for_an_app(saved_model, tmp_path):
    _, codec, path = saved_model
    tflite_path = convert_saved_model(path, str(tmp_path / "model.tflite"), "float16")
    info = read_metadata(tflite_path)
    assert info["keypoint_names"] == list(MPII.names) and info["input_size"] == [64, 64]
    assert info["quantization"] == "float16"
    assert list(HeatmapCodec.from_config(info["codec"]).flip_index) == list(MPII.flip_index)
    with zipfile.ZipFile(tflite_path) as archive:  # associated files, where TFLite Support looks for them
        assert archive.read(LABELS_FILE).decode().split() == list(MPII.names)
        assert json.loads(archive.read(JSON_FILE)) == info
    root = standard_metadata(tflite_path)
    assert root.string(0) == "keras-hourglass pose estimator" and root.string(7) == "1.0.0"
    subgraph = root.tables(3)[0]
    (image,) = subgraph.tables(2)
    assert image.string(0) == "images"
    content = image.child(3)
    assert content.byte(0) == 2  # ImageProperties
    size = content.child(1).child(1)
    assert (size.uint(0), size.uint(1)) == (64, 64) and content.child(1).byte(0) == 1  # RGB
    unit = image.tables(4)[0]
    assert unit.byte(0) == 1 and unit.child(1).floats(0) == [0.0] and unit.child(1).floats(1) == [255.0]
    assert image.child(5).floats(0) == [1.0] and image.child(5).floats(1) == [0.0]  # stats: max, min
    interpreter_outputs = TFLitePoseModel(tflite_path).interpreter.get_output_details()
    described = [t.string(0) for t in subgraph.tables(3)]
    assert sorted(described) == ["heatmaps", "keypoints", "scores"] and len(interpreter_outputs) == 3
    for tensor in subgraph.tables(3):
        (labels,) = tensor.tables(6)
        assert labels.string(0) == LABELS_FILE and labels.byte(2) == 2  # TENSOR_AXIS_LABELS
    assert [f.string(0) for f in root.tables(6)] == [LABELS_FILE, JSON_FILE]
    # The model with its trailing archive still loads and runs, through the shared loader too.
    pose_model = load_pose_model(tflite_path)
    assert pose_model.keypoint_names == list(MPII.names)
    crops = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    assert pose_model.heatmaps(crops).shape == (2, 16, 16, 16)


def test_conversion_names_what_is_wrong(saved_model, tmp_path):
    _, _, path = saved_model
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int4")
    with pytest.raises(ValueError, match="ranges must be one of minmax, percentile, mse, got 'p99'"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int8", ranges="p99")
    with pytest.raises(ValueError, match="representative_images"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int8")
    with pytest.raises(ValueError, match=r"representative_images\[1\] has shape \(32, 32, 3\); expected crops \(64, 64, 3\)"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int8",
                            representative_images=[np.zeros((64, 64, 3)), np.zeros((32, 32, 3))])
    with pytest.raises(ValueError, match="not a SavedModel"):
        convert_saved_model(str(tmp_path), str(tmp_path / "m.tflite"))
    with pytest.raises(ValueError, match="no such .tflite"):
        TFLitePoseModel(str(tmp_path / "missing.tflite"))
    not_ours = tmp_path / "plain.tflite"
    not_ours.write_bytes(b"TFL3")
    with pytest.raises(ValueError, match="no keras_hourglass metadata"):
        read_metadata(str(not_ours))


def test_refined_int8_ranges_are_narrower_than_min_max(saved_model, tmp_path):
    """Percentile and least-squared-error ranges clip rare extremes: never wider than min/max, often narrower."""
    from keras_hourglass.tflite import SIGNATURE, _graph

    _, _, path = saved_model
    crops = list(np.random.default_rng(0).uniform(0, 1, (6, 64, 64, 3)).astype(np.float32))
    steps = {}
    for ranges in ("minmax", "percentile", "mse"):
        tflite_path = convert_saved_model(path, str(tmp_path / f"{ranges}.tflite"), "int8", crops, ranges=ranges)
        assert read_metadata(tflite_path)["int8_ranges"] == ranges
        assert int8_mac_share(tflite_path) == 1.0
        with open(tflite_path, "rb") as f:
            subgraph, names, operators, _ = _graph(f.read(), SIGNATURE)
        steps[ranges] = {names[outputs[0]]: float(subgraph.tensors[outputs[0]].quantization.scale[0])
                         for _, outputs in operators if subgraph.tensors[outputs[0]].quantization is not None
                         and subgraph.tensors[outputs[0]].quantization.scale is not None
                         and len(subgraph.tensors[outputs[0]].quantization.scale) == 1}
    for ranges in ("percentile", "mse"):
        assert steps[ranges].keys() == steps["minmax"].keys()
        ratios = np.array([steps[ranges][name] / steps["minmax"][name] for name in steps["minmax"]])
        assert ratios.max() <= 1.0 + 1e-3 and np.mean(ratios < 0.999) > 0.3, (ranges, ratios)


def test_a_file_xnnpack_refuses_runs_with_the_builtin_kernels_and_says_so(capsys):
    """`tests/data/xnnpack_refused_int8.tflite`: the int8 file of a 2-step quantization-aware run of a tiny
    model, whose collapsed ranges XNNPACK refuses ("failed to prepare")."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tests.conftest import ROOT

    path = str(ROOT / "tests" / "data" / "xnnpack_refused_int8.tflite")
    crops = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    result = TFLitePoseModel(path).predict(crops)
    builtin = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = builtin.get_signature_runner("crops")
    expected = np.concatenate([runner(images=crop[None])["heatmaps"] for crop in crops])
    np.testing.assert_array_equal(result["heatmaps"], expected)  # the same kernels
    try:
        Interpreter(model_path=path).allocate_tensors()
    except RuntimeError:  # this XNNPACK refuses it, so the user is told
        assert f"warning: {path}: XNNPACK cannot run this file" in capsys.readouterr().err
