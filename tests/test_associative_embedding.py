"""`AssociativeEmbeddingCodec`: one image's heatmaps and tags to people, equal to pose-ae-train's decoding.

The fixtures in `tests/data/associative_embedding/` were written by the reference's own `test.py` decoding
(`make_fixtures.py` there says how): two people, four with two tag values per joint (the flip test's), a crowd,
nobody, and more than 30 candidates (the reference stops adding joints at 30 people).
"""

import pathlib

import numpy as np
import pytest

from keras_hourglass.codec import AE_JOINT_ORDER, AssociativeEmbeddingCodec
from tests.conftest import ROOT

FIXTURE_DIR = ROOT / "tests" / "data" / "associative_embedding"
# The decoding fixtures; not ae_* (the checkpoints, below), multiperson_* (the whole one-scale prediction) or
# loss_* (the losses, tests/test_losses.py).
FIXTURES = sorted(path for path in FIXTURE_DIR.glob("*.npz")
                  if not path.stem.startswith(("ae_", "multiperson_", "loss_")))


def test_the_fixtures_are_all_there():
    assert [path.stem for path in FIXTURES] == ["crowd", "four_people_flip_tags", "nobody", "over_thirty",
                                                 "two_people"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: pathlib.Path(path).stem)
def test_people_equal_the_reference_decoding(path):
    fixture = np.load(path)
    reference = fixture["people"]  # [P, 17, 3 + D]: x, y in pixel corners, value (1: found by the second pass)
    keypoints, scores, person_scores = AssociativeEmbeddingCodec().decode_people(fixture["heatmaps"], fixture["tags"])
    assert keypoints.shape == (len(reference), 17, 2) and scores.shape == (len(reference), 17)
    found = reference[:, :, 2] > 0
    np.testing.assert_array_equal(scores > 0, found)
    # The same people, in the same order, the same joints at the same positions (pixel centres here).
    np.testing.assert_allclose(np.where(found[..., None], keypoints, 0),
                               np.where(found[..., None], reference[:, :, :2] - 0.5, 0), rtol=0, atol=1e-6)
    first_pass = found & (reference[:, :, 2] != 1)
    np.testing.assert_allclose(scores[first_pass], reference[:, :, 2][first_pass], rtol=0, atol=1e-6)
    assert np.all(person_scores <= scores.max(axis=1, initial=0) + 1e-6)


def test_the_flip_test_and_the_way_back_to_the_image_equal_the_reference_multiperson():
    """The reference's `multiperson` after its network: the mirror's maps merged, people found, pixels mapped back."""
    from keras_hourglass.joints import COCO_PERSON
    from keras_hourglass.multiperson import merged_outputs

    fixture = np.load(FIXTURE_DIR / "multiperson_flip.npz")
    heatmaps, tags = merged_outputs(fixture["heatmaps"], fixture["tags"], COCO_PERSON.flip_index)
    assert tags.shape == (128, 128, 17, 2) and heatmaps.max() <= 1
    keypoints, scores, person_scores = AssociativeEmbeddingCodec().decode_people(heatmaps, tags)
    reference = fixture["people"]  # image pixels; value 1 marks a joint of the second pass
    assert len(reference) == len(keypoints) == 3
    # ours are heatmap pixel centres: the reference's pixel corners are half a pixel more, times 4 in its crop
    corners = (keypoints + 0.5) * 4
    in_image = corners @ fixture["mat"][:, :2].T + fixture["mat"][:, 2]
    np.testing.assert_allclose(in_image, reference[..., :2], atol=1e-3)
    np.testing.assert_allclose(person_scores, fixture["scores"], atol=1e-6)
    first_pass = reference[..., 2] < 1
    np.testing.assert_allclose(scores[first_pass], reference[..., 2][first_pass], atol=1e-6)


def test_maps_above_ten_are_nobody_as_in_the_reference():
    from keras_hourglass.multiperson import merged_outputs

    heatmaps = np.zeros((2, 8, 8, 17), np.float32)
    heatmaps[0, 3, 3, 0] = 10.5
    assert merged_outputs(heatmaps, heatmaps, list(range(17))) is None
    assert merged_outputs(heatmaps[:1], heatmaps[:1]) is None
    heatmaps[0, 3, 3, 0] = 9.5  # kept, and capped at 1 after the mean
    merged, tags = merged_outputs(heatmaps, heatmaps, list(range(17)))
    assert merged.max() == 1 and tags.shape == (8, 8, 17, 2)


def test_two_people_told_apart_by_their_tags():
    """Two people with the same joint positions mirrored, tags 0 and 5: each gets its own seventeen joints."""
    size, joints = 32, 17
    heatmaps = np.zeros((size, size, joints), np.float32)
    tags = np.zeros((size, size, joints), np.float32)
    rng = np.random.default_rng(0)
    places = {0: rng.integers(2, 14, (joints, 2)), 5: rng.integers(18, 30, (joints, 2))}
    for tag, where in places.items():
        for joint, (x, y) in enumerate(where):
            heatmaps[y, x, joint], heatmaps[y, x + 1, joint] = 0.9, 0.5  # a peak leaning right
            tags[y - 1:y + 2, x - 1:x + 2, joint] = tag + 0.1 * rng.normal()
    keypoints, scores = AssociativeEmbeddingCodec().decode(heatmaps, tags)
    assert keypoints.shape == (2, joints, 2) and np.all(scores == np.float32(0.9))
    by_tag = sorted(range(2), key=lambda person: keypoints[person, 0, 0])
    for person, tag in zip(by_tag, (0, 5)):
        # a quarter pixel towards the higher neighbour: right in x; up in y (a tie goes to the lower index)
        np.testing.assert_allclose(keypoints[person], places[tag] + [0.25, -0.25])


def test_one_tag_value_per_joint_may_come_without_its_last_axis():
    fixture = np.load(FIXTURES[-1])
    codec = AssociativeEmbeddingCodec()
    with_axis = codec.decode(fixture["heatmaps"], fixture["tags"])
    without = codec.decode(fixture["heatmaps"], fixture["tags"][..., 0])
    for a, b in zip(with_axis, without):
        np.testing.assert_array_equal(a, b)


def test_without_the_second_pass_missing_joints_stay_missing():
    fixture = np.load(FIXTURES[-1])
    full = AssociativeEmbeddingCodec().decode(fixture["heatmaps"], fixture["tags"])[1]
    first = AssociativeEmbeddingCodec(fill_missing=False).decode(fixture["heatmaps"], fixture["tags"])[1]
    assert (first > 0).sum() < (full > 0).sum()
    np.testing.assert_array_equal(first[first > 0], full[first > 0])


@pytest.mark.parametrize("height, width", [(16, 16), (4, 30), (30, 4)])
def test_maps_smaller_than_the_joint_count_decode(height, width):
    """The second pass's step reads within the map, also below 17 rows (the reference's clamp would not)."""
    heatmaps = np.zeros((height, width, 17), np.float32)
    heatmaps[1, 1, 0] = 0.9  # one person, one joint; every other joint's best place is on the last row or column
    heatmaps[height - 1, width - 1, 1:] = 0.05
    keypoints, scores = AssociativeEmbeddingCodec().decode(heatmaps, np.zeros_like(heatmaps))
    assert keypoints.shape == (1, 17, 2) and scores[0, 0] == np.float32(0.9) and np.all(scores[0, 1:] > 0)
    assert np.all(keypoints[0] >= -0.25) and np.all(keypoints[0] <= [width - 0.75, height - 0.75])


def test_nothing_above_the_threshold_is_nobody():
    keypoints, scores = AssociativeEmbeddingCodec().decode(np.full((8, 8, 17), 0.05), np.zeros((8, 8, 17)))
    assert keypoints.shape == (0, 17, 2) and scores.shape == (0, 17)


@pytest.mark.parametrize("heatmaps, tags, message", [
    (np.zeros((8, 8, 17)), np.zeros((8, 9, 17)), r"heatmaps \[H, W, J\] and tags .* got heatmaps \(8, 8, 17\)"),
    (np.zeros((8, 8)), np.zeros((8, 8)), "expected heatmaps"),
    (np.zeros((8, 8, 16)), np.zeros((8, 8, 16)), "16 joints; joint_order has 17"),
    (np.full((8, 8, 17), np.nan), np.zeros((8, 8, 17)), "must be finite"),
    (np.zeros((0, 0, 17)), np.zeros((0, 0, 17)), r"at least 1x1; got \(0, 0, 17\)"),
])
def test_bad_inputs_are_named(heatmaps, tags, message):
    with pytest.raises(ValueError, match=message):
        AssociativeEmbeddingCodec().decode(heatmaps, tags)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="joint_order must list each joint index once"):
        AssociativeEmbeddingCodec(joint_order=(0, 0, *AE_JOINT_ORDER[2:]))
    with pytest.raises(ValueError, match="max_people must be a positive integer"):
        AssociativeEmbeddingCodec(max_people=0)


# --- pose-ae-train checkpoints -------------------------------------------------------------------------------------

CHECKPOINTS = ROOT / "tests" / "data" / "associative_embedding"


def reference_layout(outputs) -> np.ndarray:
    """Our list of per-stack `[N, H, W, C]` outputs in the reference's `[N, stacks, C, H, W]`."""
    from keras_hourglass.model import stack_outputs

    return np.stack([np.asarray(o) for o in stack_outputs(outputs)], 1).transpose(0, 1, 4, 2, 3)


@pytest.mark.parametrize("name", ["ae_s2_w8.pt", "ae_s2_w8_legacy.pt"])
def test_both_torch_formats_build_the_reference_network(name):
    from tests.conftest import assert_close_to_scale

    from keras_hourglass.reference_weights import POSE_AE, read_checkpoint

    checkpoint = read_checkpoint(CHECKPOINTS / name)
    assert (checkpoint.format, checkpoint.num_stacks, checkpoint.num_keypoints, checkpoint.filters,
            checkpoint.depth, checkpoint.width_increase, checkpoint.info) == (POSE_AE, 2, 68, 8, 4, 8, {"epoch": 12})
    expected = np.load(CHECKPOINTS / "ae_s2_w8.npz")
    for images, outputs in (("images", "outputs"), ("wide_images", "wide_outputs")):
        model = checkpoint.build(expected[images].shape[1:3])
        assert_close_to_scale(reference_layout(model(expected[images])), expected[outputs])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The import command's folder for the legacy-format fixture (the format the published model has)."""
    from keras_hourglass.cli import import_weights

    output = tmp_path_factory.mktemp("ae") / "imported"
    assert import_weights.main([str(CHECKPOINTS / "ae_s2_w8_legacy.pt"), "--output", str(output),
                                "--image-size", "64"]) == 0
    return output


def test_the_import_writes_keras_saved_model_and_tflite_equal_to_the_reference(imported):
    import json

    import keras
    import tensorflow as tf

    from keras_hourglass.joints import COCO_PERSON
    from tests.conftest import assert_close_to_scale

    expected = np.load(CHECKPOINTS / "ae_s2_w8.npz")
    images, outputs = expected["images"], expected["outputs"]
    report = json.loads((imported / "import.json").read_text())
    assert report["multi_person"] and report["keypoint_names"] == list(COCO_PERSON.names)
    assert_close_to_scale(reference_layout(keras.models.load_model(imported / "model.keras")(images)), outputs)
    last = outputs[:, -1].transpose(0, 2, 3, 1)  # the last stack, [N, H, W, 68]
    saved = tf.saved_model.load(str(imported / "saved_model")).signatures["crops"](images=tf.constant(images))
    interpreter = tf.lite.Interpreter(model_path=str(imported / "model.tflite"))
    converted = interpreter.get_signature_runner("crops")(images=images)
    codec = AssociativeEmbeddingCodec()
    for answer in ({k: v.numpy() for k, v in saved.items()}, converted):
        assert_close_to_scale(answer["heatmaps"], last[..., :17])
        assert_close_to_scale(answer["tags"], last[..., 17:34])
        # The in-graph suppression and top-k are the codec's, on the same heatmaps.
        values, indices = codec.candidates(answer["heatmaps"][0].transpose(2, 0, 1))
        np.testing.assert_allclose(answer["candidate_values"][0], values, atol=1e-6)
        strong = values > codec.detection_threshold  # below it, equal values may come in any order
        np.testing.assert_array_equal(answer["candidate_indices"][0][strong], indices[strong])
        keypoints, scores = codec.decode(answer["heatmaps"][0], answer["tags"][0])  # 16x16: fewer rows than joints
        assert keypoints.shape == (len(scores), 17, 2)


def test_a_pose_ae_network_with_too_few_channels_is_one_line(tmp_path, capsys):
    """A pose-ae-train file whose outputs cannot hold 17 heatmaps and 17 tags is refused before anything is built."""
    from safetensors.numpy import save_file

    from keras_hourglass.cli import import_weights
    from keras_hourglass.torch_files import load_torch_file
    from tests.conftest import one_line_error

    state = load_torch_file(str(CHECKPOINTS / "ae_s2_w8.pt"))["state_dict"]
    for key in [k for k in state if k.startswith("model.module.outs.")]:
        state[key] = np.ascontiguousarray(state[key][:20])
    path = tmp_path / "narrow.safetensors"
    save_file(state, str(path))
    line = one_line_error(import_weights.main, [str(path), "--output", str(tmp_path / "out"), "--image-size", "64"],
                          capsys)
    assert "a pose-ae-train network with 20 output channels" in line and "need 34" in line
    assert not (tmp_path / "out").exists()


def test_single_person_commands_refuse_a_multi_person_model_in_one_line(imported, tiny_synthetic, tmp_path, capsys):
    from keras_hourglass.cli import convert, evaluate, predict, serve
    from tests.conftest import free_port, one_line_error

    image = str(tmp_path / "photo.png")
    import cv2

    cv2.imwrite(image, np.zeros((40, 40, 3), np.uint8))
    line = one_line_error(predict.main, ["--model", str(imported / "model.keras"), "--input", image, "--output",
                                         str(tmp_path / "out")], capsys)
    assert "may be a multi-person (pose-ae-train) network" in line and "saved_model/" in line
    model = imported / "model.tflite"  # predict takes the SavedModel (below), not yet the multi-person .tflite
    line = one_line_error(predict.main, ["--model", str(model), "--input", image, "--output", str(tmp_path / "out")],
                          capsys)
    assert f"{model}: a multi-person model" in line and "AssociativeEmbeddingCodec" in line
    line = one_line_error(predict.main, ["--model", str(imported / "saved_model"), "--input", image, "--output",
                                         str(tmp_path / "out"), "--box", "1,1,9,9"], capsys)
    assert "finds every person itself" in line
    # evaluate.py scores it by COCO keypoint AP (tests/test_coco_ap.py); a PCK file is not COCO keypoint JSON
    line = one_line_error(evaluate.main, ["--model", str(imported / "saved_model"), "--dataset", "synthetic",
                                          "--annotations", str(tiny_synthetic + "/valid.h5"), "--image-dir",
                                          str(tiny_synthetic + "/images")], capsys)
    assert "is scored by COCO keypoint AP on a COCO keypoint file (.json); got --dataset synthetic" in line
    line = one_line_error(convert.main, ["--model", str(imported / "saved_model"), "--output",
                                         str(tmp_path / "converted")], capsys)  # before int8's own checks
    assert "a multi-person model" in line
    line = one_line_error(serve.main, [str(imported / "model.tflite"), "--port", str(free_port())], capsys)
    assert "not a SavedModel folder" in line  # the server takes the multi-person SavedModel (tests/test_serving.py)


def test_predict_finds_people_bottom_up_on_a_real_photo(imported, shared_data, tmp_path):
    """predict.py with the imported multi-person SavedModel: the whole photo, its mirror, the people mapped back."""
    import json

    import cv2
    import tensorflow as tf

    from keras_hourglass.cli import predict
    from keras_hourglass.inference import whole_image_crop
    from keras_hourglass.joints import COCO_PERSON
    from keras_hourglass.multiperson import merged_outputs

    photo = shared_data / "mpii" / "images" / "052475643.jpg"
    # the fixture network's weights are the reference's initial ones: its heatmaps peak near 0.14
    assert predict.main(["--model", str(imported / "saved_model"), "--input", str(photo), "--output",
                         str(tmp_path), "--detection-threshold", "0.05"]) == 0
    report = json.loads((tmp_path / "keypoints.json").read_text())
    assert report["keypoint_names"] == list(COCO_PERSON.names) and report["input_size"] == [64, 64]
    people = report["results"][0]["people"]
    # the same steps by hand: the crop and its mirror through the signature, merged, decoded, mapped back
    image = cv2.imread(str(photo))[..., ::-1].copy()
    crop, transform = whole_image_crop(image, (64, 64))
    transform = np.asarray(transform)
    outputs = tf.saved_model.load(str(imported / "saved_model")).signatures["crops"](
        images=tf.constant(np.concatenate([crop, crop[:, :, ::-1]])))
    merged = merged_outputs(outputs["heatmaps"].numpy(), outputs["tags"].numpy(), COCO_PERSON.flip_index)
    keypoints, scores, person_scores = AssociativeEmbeddingCodec(detection_threshold=0.05).decode_people(*merged)
    assert len(people) == len(keypoints) > 1
    in_image = ((keypoints + 0.5) * 4 - 0.5) @ transform[0][:, :2].T + transform[0][:, 2]
    written = np.array([[[np.nan] * 2 if xy is None else xy for xy in p["keypoints"]] for p in people], float)
    np.testing.assert_array_equal(np.isnan(written[..., 0]), scores <= 0)  # a joint a person lacks: null
    np.testing.assert_allclose(written[scores > 0], in_image[scores > 0], atol=0.01)
    np.testing.assert_allclose([p["score"] for p in people], person_scores, atol=1e-4)
    for person, points, found in zip(people, in_image, scores > 0):
        np.testing.assert_allclose(person["box"], [*points[found].min(0), *points[found].max(0)], atol=0.01)
    overlay = cv2.imread(report["results"][0]["overlay"])
    assert overlay.shape == image.shape


def test_a_tampered_multi_person_metadata_file_is_one_line(imported, tmp_path, capsys):
    import json
    import shutil

    from keras_hourglass.cli import predict
    from tests.conftest import one_line_error

    image = str(tmp_path / "photo.png")
    import cv2

    cv2.imwrite(image, np.zeros((40, 40, 3), np.uint8))
    for change, message in ((lambda m: m.update(keypoint_names=m["keypoint_names"][:5]), "must be 17 names"),
                            (lambda m: m.update(flip_partners="left"), "lists of joint-name pairs"),
                            (lambda m: [1, 2], "must hold a JSON object")):
        model = tmp_path / "model"
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(imported / "saved_model", model)
        path = model / "assets.extra" / "keras_hourglass.json"
        metadata = json.loads(path.read_text())
        changed = change(metadata)
        path.write_text(json.dumps(changed if changed is not None else metadata))
        line = one_line_error(predict.main, ["--model", str(model), "--input", image, "--output", str(tmp_path / "o")],
                              capsys)
        assert str(model) in line and message in line
