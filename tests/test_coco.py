import json

import numpy as np
import pytest

from keras_hourglass.data.coco import load_coco

NAMES = ["nose", "left_eye", "right_eye", "left_wrist", "right_wrist"]


def write_coco(path, annotations):
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]}],
        "annotations": annotations,
    }))


def annotation(id, keypoints, bbox=(10, 20, 40, 60)):
    return {"id": id, "image_id": 1, "category_id": 1, "bbox": list(bbox), "keypoints": keypoints}


def test_loads_people_names_and_partners(tmp_path):
    path = tmp_path / "labels.json"
    write_coco(path, [
        annotation(7, [30, 30, 2, 28, 25, 1, 32, 25, 2, 0, 0, 0, 50, 70, 2]),
        annotation(8, [0] * 15),  # no labelled joint: not a pose example
    ])
    records = load_coco(path, image_dir="imgs", normalizer_joints=("left_eye", "right_eye"))
    assert len(records) == 1 and list(records.id) == ["annotation 7"]
    assert records.spec.names == tuple(NAMES) and records.spec.limbs == (("nose", "left_eye"), ("nose", "right_eye"))
    np.testing.assert_array_equal(records.spec.flip_index, [0, 2, 1, 4, 3])
    np.testing.assert_array_equal(records.annotated[0], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(records.visible[0], [1, 0, 1, 0, 1])
    np.testing.assert_allclose(records.center[0], [29.5, 49.5])
    assert records.scale[0] == pytest.approx(60 / 200 * 1.25)
    assert records.normalizer[0] == pytest.approx(4.0)
    assert records.image_path[0].endswith("imgs/a.jpg")
    assert load_coco(path).normalizer[0] == 60  # bbox size by default





def test_bad_annotations_are_named(tmp_path):
    path = tmp_path / "labels.json"
    write_coco(path, [annotation(3, [1, 2, 2])])
    with pytest.raises(ValueError, match="labels.json: annotation 3: keypoints must have 15 values, got 3"):
        load_coco(path)
    write_coco(path, [annotation(4, [30, 30, 2] * 5, bbox=(0, 0, 0, 5))])
    with pytest.raises(ValueError, match="annotation 4: bbox must be"):
        load_coco(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO keypoint file"):
        load_coco(path)
