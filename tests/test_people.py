"""Multi-person training: synthetic scenes as COCO files, their reading, the training targets, the loss, train.py."""

import json
import os
import re

import numpy as np
import pytest

from keras_hourglass.data.people import MAX_PEOPLE, NO_PEOPLE_AUGMENTATION, load_people, people_dataset
from keras_hourglass.data.synthetic import generate_scenes
from keras_hourglass.joints import COCO_PERSON
from tests.conftest import built_once, one_line_error

SIZE = 64  # scenes of 64x64 pixels: 16x16 heatmaps


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """24 training and 4 validation scenes (COCO keypoint files), shared by the session's tests."""
    def build(folder):
        generate_scenes(str(folder), "train", 24, seed=0, image_size=(SIZE, SIZE))
        generate_scenes(str(folder), "valid", 4, seed=0, image_size=(SIZE, SIZE))

    return built_once(tmp_path_factory, "people_scenes", build)


def read(folder, split="train"):
    return json.loads(open(os.path.join(folder, f"people_{split}.json")).read())


def test_scenes_are_deterministic_coco_files_with_people_and_crowds(scenes, tmp_path):
    generate_scenes(str(tmp_path), "train", 24, seed=0, image_size=(SIZE, SIZE))
    assert read(tmp_path) == read(scenes)
    name = "people_train_000005.jpg"
    assert open(tmp_path / "images" / name, "rb").read() == open(os.path.join(scenes, "images", name), "rb").read()
    data = read(scenes)
    people = [a for a in data["annotations"] if not a["iscrowd"]]
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    per_image = np.bincount([a["image_id"] for a in people])[1:]
    assert per_image.min() >= 1 and per_image.max() <= 4 and per_image.max() > 1
    assert crowds and all(a["num_keypoints"] == 0 and len(a["segmentation"][0]) == 8 for a in crowds)
    keypoints = np.array([a["keypoints"] for a in people]).reshape(-1, 17, 3)
    assert ((keypoints[..., :2] >= 0) & (keypoints[..., :2] <= SIZE - 1)).all()
    assert set(np.unique(keypoints[..., 2])) <= {1.0, 2.0}
    # Facing the camera: each person's left eye is on the image's right of the right eye, as the shoulders are.
    names = COCO_PERSON.names
    for left, right in (("left_eye", "right_eye"), ("left_shoulder", "right_shoulder")):
        upright = keypoints[:, names.index("nose"), 1] < keypoints[:, names.index("left_hip"), 1]
        assert (keypoints[upright, names.index(left), 0] > keypoints[upright, names.index(right), 0]).mean() > 0.8
    assert data["categories"][0]["keypoints"] == list(names)


def test_load_people_and_the_crowd_masks(scenes):
    people = load_people(os.path.join(scenes, "people_train.json"), os.path.join(scenes, "images"))
    data = read(scenes)
    assert len(people) == 24 and people.first[-1] == len(people.keypoints)
    assert len(people.keypoints) == sum(not a["iscrowd"] for a in data["annotations"])
    crowd = next(a for a in data["annotations"] if a["iscrowd"])
    index = list(people.image_ids).index(crowd["image_id"])
    mask = people.crowd_mask(index)
    x, y, w, h = crowd["bbox"]
    assert mask.shape == (SIZE, SIZE) and abs(int(mask.sum()) - w * h) <= 2 * (w + h) + 4
    assert mask[int(y + h / 2), int(x + w / 2)] == 1
    assert people.crowd_mask(next(i for i in range(len(people)) if i not in people.crowds)).shape == (1, 1)


def test_targets_without_augmentation(scenes):
    """Each labelled joint: a Gaussian peak of 1 at its pixel, and its place in the tag map; crowds masked."""
    people = load_people(os.path.join(scenes, "people_train.json"), os.path.join(scenes, "images"))
    dataset = people_dataset(people, (SIZE, SIZE), (SIZE // 4, SIZE // 4), 4, 1.0, NO_PEOPLE_AUGMENTATION,
                             shuffle=False)
    images, targets = next(iter(dataset))
    heatmaps, mask, refs = (targets[k].numpy() for k in ("heatmaps", "mask", "keypoints"))
    assert images.shape == (4, SIZE, SIZE, 3) and refs.shape == (4, MAX_PEOPLE, 17, 2) and heatmaps.max() == 1
    for image in range(4):
        rows = people.keypoints[people.first[image]:people.first[image + 1]]
        # The whole 64x64 image fills the crop: heatmap pixel centres at (x + 0.5) / 4 - 0.5.
        pixel = np.floor((rows[..., :2] + 0.5) / 4 - 0.5 + 0.5).astype(int)
        for person, (points, where) in enumerate(zip(rows, pixel)):
            for joint in range(17):
                column, row = where[joint]
                assert heatmaps[image, row, column, joint] == 1
                assert tuple(refs[image, person, joint]) == ((row * 16 + column) * 17 + joint, 1)
        assert not refs[image, len(rows):].any()
        crowded = people.crowds.get(image)
        assert (mask[image] == 0).any() == bool(crowded)


def test_a_mirrored_example_swaps_left_and_right(scenes):
    people = load_people(os.path.join(scenes, "people_train.json"), os.path.join(scenes, "images"))
    import dataclasses

    plain = people_dataset(people, (SIZE, SIZE), (16, 16), 4, 1.0, NO_PEOPLE_AUGMENTATION, shuffle=False)
    mirrored = people_dataset(people, (SIZE, SIZE), (16, 16), 4, 1.0,
                              dataclasses.replace(NO_PEOPLE_AUGMENTATION, flip_probability=1.0), shuffle=False)
    (images, targets), (flipped, flipped_targets) = next(iter(plain)), next(iter(mirrored))
    np.testing.assert_allclose(flipped.numpy(), images.numpy()[:, :, ::-1], atol=1e-5)
    expected = targets["heatmaps"].numpy()[:, :, ::-1][..., COCO_PERSON.flip_index]
    actual = flipped_targets["heatmaps"].numpy()
    for image in range(4):
        # A joint exactly between two heatmap pixels goes to the right one of them, mirrored or not: leave it out.
        x = (people.keypoints[people.first[image]:people.first[image + 1], :, 0] + 0.5) / 4 - 0.5
        tied = np.isclose(x % 1, 0.5, atol=1e-4).any(axis=0)[COCO_PERSON.flip_index]
        np.testing.assert_allclose(actual[image][..., ~tied], expected[image][..., ~tied], atol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["categories"][0].update(keypoints=d["categories"][0]["keypoints"][::-1]), "17 keypoint names"),
    (lambda d: next(a for a in d["annotations"] if a["iscrowd"]).update(segmentation="x"),
     "a crowd region's segmentation must be 1 to 1000 polygons"),
    # pycocotools rasterises in int32: a far-away point would overflow it (a crash, not an error)
    (lambda d: next(a for a in d["annotations"] if a["iscrowd"]).update(segmentation=[[0, 0, 1e9, 0, 1e9, 1e9]]),
     "within 128 pixels of the image"),
    (lambda d: next(a for a in d["annotations"] if a["iscrowd"]).update(
        segmentation={"size": [SIZE, SIZE], "counts": "T3b1Zk3"}), "or an uncompressed RLE"),
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "is given twice"),
    (lambda d: d["images"][0].update(id=2**64), "must have an integer id (0 to 2^63 - 1)"),
    (lambda d: d["images"][0].pop("height") and [a.update(image_id=d["images"][0]["id"]) for a in d["annotations"]
                                                 if a["iscrowd"]], "needs its image's height and width"),
    (lambda d: [i.update(height=2**20, width=2**20) for i in d["images"]], "at most 64 M pixels together"),
    (lambda d: d["annotations"].extend(dict(d["annotations"][0], id=1000 + i) for i in range(MAX_PEOPLE)),
     f"people; at most {MAX_PEOPLE} are trained on"),
])
def test_a_bad_people_file_names_the_field(scenes, tmp_path, change, message):
    data = read(scenes)
    change(data)
    path = tmp_path / "people.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_people(str(path), str(tmp_path))


def test_the_trainer_loss_is_the_reference_sum_and_learns(scenes):
    """The loss of `AssociativeEmbeddingTrainer` is the mean over stacks of the three terms, and fitting one batch
    takes the heatmap loss well below that of heatmaps of zeros (what an untrained network's first phase finds)."""
    import keras

    from keras_hourglass.losses import TAG_LOSS_WEIGHT, masked_heatmap_loss, tag_losses
    from keras_hourglass.model import build_variant
    from keras_hourglass.multiperson_training import AssociativeEmbeddingTrainer

    people = load_people(os.path.join(scenes, "people_train.json"), os.path.join(scenes, "images"))
    images, targets = next(iter(people_dataset(people, (SIZE, SIZE), (16, 16), 8, 1.0, seed=1)))
    keras.utils.set_random_seed(0)
    network = build_variant("associative_embedding_small", 34, image_size=(SIZE, SIZE), filters=16, depth=2,
                            stem_filters=(8, 16, 16), width_increase=8)
    model = AssociativeEmbeddingTrainer(network, 17)
    model.compile(keras.optimizers.Adam(2e-3))
    outputs = network(images)
    expected = np.mean([np.mean(masked_heatmap_loss(o[..., :17], targets["heatmaps"], targets["mask"]))
                        + TAG_LOSS_WEIGHT * np.sum([np.mean(v) for v in tag_losses(o[..., 17:], targets["keypoints"])])
                        for o in outputs])
    loss = float(model.compute_loss(images, targets, outputs))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    history = model.fit(images, targets, batch_size=8, epochs=40, verbose=0).history
    zeros = float(np.mean(np.square(targets["heatmaps"]) * targets["mask"].numpy()[..., None]))
    assert history["detection_loss"][-1] < 0.9 * zeros < history["detection_loss"][0]
    assert {"loss", "push_loss", "pull_loss"} <= set(history)


PEOPLE_ARGS = ["--preset", "synthetic-people", "--dataset", "coco-people", "--variant", "associative_embedding_small", "--image-size", str(SIZE),
               "--filters", "16", "--depth", "2", "--stem-filters", "8,16,16", "--batch-size", "8", "--epochs", "2",
               "--eval-every", "1", "--no-augment"]


def test_train_a_multi_person_model_and_score_it_with_coco_ap(scenes, tmp_path, capsys):
    from keras_hourglass.cli import evaluate, train
    from keras_hourglass.multiperson import is_multi_person

    run = str(tmp_path / "run")
    argv = [*PEOPLE_ARGS, "--train-annotations", os.path.join(scenes, "people_train.json"), "--valid-annotations",
            os.path.join(scenes, "people_valid.json"), "--image-dir", os.path.join(scenes, "images"),
            "--output", run]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "COCO keypoint AP" in printed and "val_ap" in printed
    with open(os.path.join(run, "training_log.csv")) as f:
        header = f.readline().strip().split(",")
    assert {"val_ap", "val_ap50", "detection_loss", "push_loss", "pull_loss"} <= set(header)
    best = os.path.join(run, "checkpoints", "best")
    assert is_multi_person(best)
    metrics = json.loads(open(os.path.join(run, "eval", "metrics.json")).read())
    assert metrics["metric"] == "COCO keypoint AP" and metrics["images"] == 4 and 0 <= metrics["AP"] <= 1
    summary = json.loads(open(os.path.join(run, "summary.json")).read())
    assert summary["ap"] == round(metrics["AP"], 4)
    # evaluate.py on the best SavedModel gives the figure the run wrote.
    report_path = str(tmp_path / "ap.json")
    assert evaluate.main(["--model", best, "--annotations", os.path.join(scenes, "people_valid.json"),
                          "--image-dir", os.path.join(scenes, "images"), "--json", report_path, "--quiet"]) == 0
    assert json.loads(open(report_path).read())["AP"] == pytest.approx(metrics["AP"], abs=1e-9)
    # The same command again finds every epoch done, and keeps the training time.
    assert train.main(argv) == 0
    assert "has finished all 2 epochs" in capsys.readouterr().out
    assert json.loads(open(os.path.join(run, "summary.json")).read())["train_seconds"] >= summary["train_seconds"]


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "multiworker"], "--strategy multiworker is for single-person data sets"),
    (["--qat-from", "x.keras"], "--qat-from is for single-person data sets"),
])
def test_settings_a_multi_person_run_does_not_take_are_one_line(scenes, tmp_path, capsys, extra, message):
    from keras_hourglass.cli import train

    argv = [*PEOPLE_ARGS, "--train-annotations", os.path.join(scenes, "people_train.json"), "--valid-annotations",
            os.path.join(scenes, "people_valid.json"), "--image-dir", os.path.join(scenes, "images"),
            "--output", str(tmp_path / "run"), *extra]
    assert message in one_line_error(train.main, argv, capsys)
    assert not os.path.exists(tmp_path / "run")


def test_a_damaged_image_is_named_before_training(scenes, tmp_path, capsys):
    import shutil

    from keras_hourglass.cli import train
    from tests.conftest import corrupt_jpeg

    copy = tmp_path / "scenes"
    shutil.copytree(scenes, copy)
    corrupt_jpeg(copy / "images" / "people_valid_000002.jpg")
    argv = [*PEOPLE_ARGS, "--train-annotations", str(copy / "people_train.json"), "--valid-annotations",
            str(copy / "people_valid.json"), "--image-dir", str(copy / "images"), "--output", str(tmp_path / "run")]
    line = one_line_error(train.main, argv, capsys)
    assert "people_valid.json: image id 3:" in line and "people_valid_000002.jpg" in line
    assert not os.path.exists(tmp_path / "run")
    # An image whose size in the file is not its own: its crowd would be masked in the wrong place.
    shutil.copy(os.path.join(scenes, "images", "people_valid_000002.jpg"), copy / "images" / "people_valid_000002.jpg")
    data = read(copy)
    crowded = next(a["image_id"] for a in data["annotations"] if a["iscrowd"])
    next(i for i in data["images"] if i["id"] == crowded).update(width=SIZE + 1)
    (copy / "people_train.json").write_text(json.dumps(data))
    line = one_line_error(train.main, argv, capsys)
    assert f"image id {crowded}: images gives {SIZE + 1}x{SIZE} pixels" in line
    assert not os.path.exists(tmp_path / "run")


def test_image_files_that_cannot_end_or_would_not_fit_are_named(scenes, tmp_path):
    """A device or a pipe is never read (it would not end, or block); a small PNG that declares a huge picture is
    refused from its header."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = read(scenes)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    for name, message in (("/dev/zero", "is not a regular file"), (str(fifo), "is not a regular file"),
                          (str(bomb), "declares 20000x20000 pixels")):
        data["images"][0]["file_name"] = name
        path = tmp_path / "people.json"
        path.write_text(json.dumps(data))
        people = load_people(str(path), os.path.join(scenes, "images"))
        with pytest.raises(ValueError, match=message):
            people.check_images()
