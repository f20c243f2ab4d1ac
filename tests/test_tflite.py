import numpy as np
import pytest

from keras_hourglass import MPII, HeatmapCodec, build_stacked_hourglass
from keras_hourglass.export import export_saved_model
from keras_hourglass.tflite import TFLitePoseModel, convert_saved_model
from tests.conftest import TINY


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = build_stacked_hourglass(2, MPII.num_keypoints, **TINY)
    codec = HeatmapCodec(TINY["image_size"], flip_index=MPII.flip_index)
    path = export_saved_model(model, str(tmp_path_factory.mktemp("tflite") / "model"), codec, MPII.names)
    return model, codec, path


def test_float32_matches_the_keras_model(saved_model, tmp_path):
    model, codec, path = saved_model
    tflite_path = convert_saved_model(path, str(tmp_path / "model.tflite"))
    crops = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    outputs = TFLitePoseModel(tflite_path).predict(crops)
    expected = model(crops, training=False)[-1].numpy()
    np.testing.assert_allclose(outputs["heatmaps"], expected, atol=1e-4)
    keypoints, _ = codec.decode(expected)
    assert np.abs(outputs["keypoints"] - keypoints.numpy()).max() <= 0.5


def test_conversion_names_what_is_wrong(saved_model, tmp_path):
    _, _, path = saved_model
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int4")
    with pytest.raises(ValueError, match="representative_images"):
        convert_saved_model(path, str(tmp_path / "m.tflite"), quantization="int8")
    with pytest.raises(ValueError, match="not a SavedModel"):
        convert_saved_model(str(tmp_path), str(tmp_path / "m.tflite"))
    with pytest.raises(ValueError, match="no such .tflite"):
        TFLitePoseModel(str(tmp_path / "missing.tflite"))
