import numpy as np
import pytest

from keras_hourglass import FLIC, MPII
from keras_hourglass.plotting import (
    draw_skeleton,
    limb_side,
    plot_heatmaps,
    plot_pck_curves,
    plot_pose,
    plot_pose_grid,
    plot_pose_overlay,
    plot_training_curves,
    read_csv_log,
    save_figure,
)


def test_limb_sides_come_from_the_spec():
    assert limb_side(MPII, "l_wrist", "l_elbow") == "left"
    assert limb_side(MPII, "r_shoulder", "thorax") == "right"
    assert limb_side(MPII, "upper_neck", "head_top") == "centre"
    assert limb_side(FLIC, "l_eye", "nose") == "left"


@pytest.mark.parametrize("spec", [MPII, FLIC])
def test_pose_figures_are_written(spec, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    keypoints = rng.uniform(5, 35, (spec.num_keypoints, 2))
    scores = rng.uniform(0, 1, spec.num_keypoints)
    for name, figure in {
        "pose": plot_pose(image, keypoints, spec, scores, keypoints + 1, np.ones(spec.num_keypoints, bool)),
        "grid": plot_pose_grid([image] * 3, [keypoints] * 3, spec, [keypoints] * 3, scores=[scores] * 3, titles="abc"),
        "heatmaps": plot_heatmaps(image / 255.0, rng.uniform(0, 1, (10, 12, spec.num_keypoints)), spec),
    }.items():
        path = save_figure(figure, str(tmp_path / f"{name}.png"))
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial*"))


def test_draw_skeleton_checks_the_joint_count():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    with pytest.raises(ValueError, match=r"\(16, 2\)"):
        draw_skeleton(ax, np.zeros((3, 2)), MPII)


def test_training_curves_from_a_csv_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,heatmaps_stack0_loss,loss,val_pckh,val_pckh_wrist\n0,0.2,0.3,10.0,5.0\n1,0.1,0.2,NA,\n2,0.05,0.1,30.0,20.0\n")
    columns = read_csv_log(str(log))
    assert np.isnan(columns["val_pckh"][1]) and columns["loss"][2] == 0.1
    save_figure(plot_training_curves(str(log)), str(tmp_path / "curves.png"))
    with pytest.raises(ValueError, match="not found"):
        read_csv_log(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("content, expected", [
    ("loss\n0.1\n", "no 'epoch' column"),
    ("epoch,loss\n0,abc\n", "could not convert"),
    ("epoch,loss\n0,0.1,7\n", "more cells than the header"),
    ("epoch,loss\nnan,0.1\n", "not a number"),
    (b"epoch,loss\n\x87\xff\n", "can't decode"),
])
def test_a_bad_training_log_is_one_error_naming_it(tmp_path, content, expected):
    log = tmp_path / "log.csv"
    log.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=expected) as error:
        read_csv_log(str(log))
    assert str(log) in str(error.value)
    with open(log, "wb") as f:  # sparse: nothing read before it is refused
        f.truncate(10 * 2**30)
    with pytest.raises(ValueError, match="is not a training log"):
        read_csv_log(str(log))


def test_pck_curves_compare_runs(tmp_path):
    thresholds = np.linspace(0, 0.5, 11)
    figure = plot_pck_curves({"a": (thresholds, 100 * thresholds * 2), "b": (thresholds, 50 * thresholds * 2)}, "PCKh")
    assert len(figure.axes[0].lines) == 2
    save_figure(figure, str(tmp_path / "pck.png"))
    with pytest.raises(ValueError):
        plot_pck_curves({})


def test_an_overlay_is_the_image_at_its_own_resolution_wherever_the_keypoints_fall(tmp_path):
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3)).astype(np.uint8)
    keypoints = np.stack([np.linspace(-500, 700, 16), np.linspace(-300, 400, 16)], axis=-1)  # mostly outside
    path = save_figure(plot_pose_overlay(image, keypoints, MPII, np.ones(16)), str(tmp_path / "overlay.png"))
    drawn = cv2.imread(path)[..., ::-1]
    assert drawn.shape == image.shape
    # Pixel for pixel the image (the skeleton covers a few of them), not the image shrunk inside white margins.
    assert np.median(np.abs(drawn.astype(int) - image)) <= 2
