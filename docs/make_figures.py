"""Makes the documentation's figures from the project's own outputs; nothing in them is drawn by hand.

    python docs/make_figures.py --run runs/synthetic-small             # after make demo
    python docs/make_figures.py --run runs/synthetic-small --page      # also the web page, from the browser test

Writes into `docs/_static/` (or `--output`):

* `front.png` (README's and the site's picture): a real MPII photo with its MPII annotation drawn by
  `keras_hourglass.plotting.plot_pose_overlay`, beside the run's validation metric per epoch, read from its
  `training_log.csv` (what `PCKCallback` logged while training).
* `training_curves.png`: `plot_training_curves` of the same log (losses per stack and every metric group).
* `pixel_centres.png`: an 8x8 image's pixel grid and centres, and the 2x2 heatmap `HeatmapCodec` encodes for a
  joint at (5.5, 1.5), drawn over the area it covers.
* `centre_scale.png`: the same MPII person's centre and `200 * scale` square on the photo, and the 256x256 crop
  `build_eval_dataset` makes of it, with the annotation mapped through the crop's transform.
* `page.png` (with `--page`): the server's web page in Chromium after two boxes were dragged around people, the
  screenshot `tests/test_serving.py`'s browser test takes, run here with `KERAS_HOURGLASS_FIGURES` set.

The photo and its annotation come from the shared data (`../shared/data/mpii`, or
`KERAS_HOURGLASS_SHARED_DATA`).
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTO = "052475643.jpg"  # two men seated; MPII annotates one of them


def metric_column(columns: dict) -> str:
    """The run's mean validation metric: `val_pckh` (MPII, synthetic), `val_pck` (FLIC, COCO files) or `val_ap`."""
    for name in ("val_pckh", "val_pck", "val_ap"):
        if name in columns:
            return name
    raise ValueError(f"the training log has no val_pckh, val_pck or val_ap column (it has {', '.join(columns)[:300]}).")


def read_photo(path: str):
    """The photo as RGB pixels; a missing or undecodable file is a `ValueError` naming it."""
    import cv2

    from keras_hourglass.data.records import image_file_problem

    problem = image_file_problem(path)
    pixels = None if problem else cv2.imread(path)
    if pixels is None:
        raise ValueError(problem if problem and path in problem else f"{path}: {problem or 'not an image OpenCV can decode'}.")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def front_figure(columns: dict, log: str, title: str, person):
    """The photo with its annotation beside the log's metric; `person` is `annotated_person`'s."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from keras_hourglass.plotting import figure_pixels, plot_pose_overlay

    name = metric_column(columns)
    finite = np.isfinite(columns[name])
    if not finite.any():
        raise ValueError(f"{log}: no epoch has a {name} value (was the run evaluated?).")
    epochs = columns["epoch"][finite] + 1

    records, row, photo = person
    annotated = records.annotated[row]
    keypoints = np.where(annotated[:, None], records.keypoints[row], np.nan)
    drawn = figure_pixels(plot_pose_overlay(photo, keypoints, records.spec, scores=annotated.astype(np.float32)))

    height, width = drawn.shape[:2]
    figure = Figure(figsize=(11, 11 * height / width / 1.6))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [width / height, 0.6 * width / height]})
    left.imshow(drawn)
    left.set_axis_off()
    left.set_title("a real MPII photo, its annotation drawn by plot_pose_overlay", fontsize=9)
    right.plot(epochs, columns[name][finite], marker="o")
    right.set(xlabel="epoch", ylabel=f"{name} (%)", ylim=(0, 100))
    right.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    right.set_title(f"{title}: {name} while training", fontsize=9)
    right.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def annotated_person(shared: pathlib.Path):
    """`(records, row, photo pixels)`: the MPII validation person annotated in `PHOTO`."""
    from keras_hourglass.data import load_mpii_h5

    records = load_mpii_h5(str(shared / "mpii" / "valid.h5"), image_dir=str(shared / "mpii" / "images"))
    rows = [i for i, path in enumerate(records.image_path) if os.path.basename(path) == PHOTO]
    if not rows:
        raise ValueError(f"{shared / 'mpii' / 'valid.h5'}: no person annotated in {PHOTO}.")
    return records, rows[0], read_photo(str(records.image_path[rows[0]]))


def pixel_centres_figure():
    import numpy as np
    from matplotlib.figure import Figure

    from keras_hourglass import HeatmapCodec

    codec = HeatmapCodec((8, 8), sigma=0.5)
    joint = np.array([[[5.5, 1.5]]], np.float32)
    heatmaps, _ = codec.encode(joint, np.ones((1, 1), bool))
    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    # each heatmap pixel covers a stride x stride block of image pixels: drawn over [-0.5, 7.5]
    ax.imshow(np.asarray(heatmaps)[0, :, :, 0], cmap="Reds", extent=(-0.5, 7.5, 7.5, -0.5), vmin=0, vmax=1)
    for edge in np.arange(-0.5, 8, 1.0):
        ax.axhline(edge, color="0.6", linewidth=0.5)
        ax.axvline(edge, color="0.6", linewidth=0.5)
    for edge in (-0.5, 3.5, 7.5):
        ax.axhline(edge, color="black", linewidth=1.5)
        ax.axvline(edge, color="black", linewidth=1.5)
    grid = np.arange(8)
    ax.scatter(*np.meshgrid(grid, grid), s=6, color="0.3", label="image pixel centres (i, j)")
    centres = (np.arange(2) + 0.5) * 4 - 0.5
    ax.scatter(*np.meshgrid(centres, centres), s=60, marker="s", facecolor="none", edgecolor="black",
               label="heatmap pixel centres, (u + 0.5) * 4 - 0.5")
    ax.scatter(*joint[0, 0], s=80, marker="x", color="blue", label="joint at (5.5, 1.5): heatmap value 1")
    ax.set(xticks=grid, yticks=grid, xlim=(-0.7, 7.7), ylim=(7.7, -0.7))
    ax.set_title("8x8 image, 2x2 heatmap (stride 4)", fontsize=10)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    figure.tight_layout()
    return figure


def centre_scale_figure(person):
    """The person's centre and scale square on the photo, and the crop the pipeline makes of it."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from keras_hourglass.data import build_eval_dataset
    from keras_hourglass.plotting import draw_skeleton
    from keras_hourglass.transforms import SCALE_UNIT, apply_affine, invert_affine

    records, row, photo = person
    batch = next(iter(build_eval_dataset(records.select([row]), (256, 256), batch_size=1)))
    crop = np.asarray(batch["image"][0])
    to_crop = invert_affine(batch["transform"])[0]
    keypoints = np.asarray(apply_affine(to_crop, records.keypoints[row][None]))[0]
    visible = records.annotated[row]
    (cx, cy), side = records.center[row], SCALE_UNIT * records.scale[row]

    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [photo.shape[1] / photo.shape[0], 1]})
    left.imshow(photo)
    left.add_patch(Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False, color="yellow", linewidth=2))
    left.scatter([cx], [cy], marker="+", s=120, color="yellow")
    left.set_title(f"centre ({cx:.0f}, {cy:.0f}), scale {records.scale[row]:.2f}: a {side:.0f}-px square",
                   fontsize=9)
    left.set_axis_off()
    right.imshow(crop)
    draw_skeleton(right, keypoints, records.spec, visible=visible)
    right.set_title("the 256x256 crop, annotation mapped in", fontsize=9)
    right.set_axis_off()
    figure.tight_layout()
    return figure


def page_screenshot(output: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as folder:  # the test copies its screenshot here
        environment = {**os.environ, "KERAS_HOURGLASS_FIGURES": folder, "CI": "true"}
        ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_serving.py::test_the_web_page_draws_the_servers_skeleton_in_chromium"],
                             cwd=ROOT, env=environment, capture_output=True, text=True)
        if ran.returncode != 0:
            last = [line for line in ran.stdout.splitlines() if line.strip()][-1:] or ["no output"]
            raise ValueError(f"the browser test failed ({last[0][:300]}); run it alone to see why: python -m pytest "
                             "tests/test_serving.py -k chromium")
        shutil.copy(os.path.join(folder, "page.png"), output / "page.png")


def make(args: argparse.Namespace) -> None:
    """Makes every figure in a scratch folder, then puts them in `args.output`; a bad input is a `ValueError`."""
    from keras_hourglass.plotting import plot_training_curves, read_csv_log, save_figure

    run, output = pathlib.Path(args.run), pathlib.Path(args.output)
    shared = pathlib.Path(os.environ.get("KERAS_HOURGLASS_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output}: --output must be a folder, and this is a file.")
    try:
        # only when every figure is made do they replace the old ones
        with tempfile.TemporaryDirectory(prefix="make-figures-") as scratch:
            made = pathlib.Path(scratch)
            if args.page:
                page_screenshot(made)
            log = str(run / "training_log.csv")
            columns, person = read_csv_log(log), annotated_person(shared)  # each read once, for two figures
            save_figure(front_figure(columns, log, run.name, person), str(made / "front.png"), dpi=100)
            save_figure(plot_training_curves(columns, title=run.name), str(made / "training_curves.png"), dpi=80)
            save_figure(pixel_centres_figure(), str(made / "pixel_centres.png"), dpi=80)
            save_figure(centre_scale_figure(person), str(made / "centre_scale.png"), dpi=80)
            output.mkdir(parents=True, exist_ok=True)
            for figure in sorted(made.iterdir()):
                shutil.copyfile(figure, output / f".{figure.name}.partial")
                os.replace(output / f".{figure.name}.partial", output / figure.name)
    except OSError as error:
        raise ValueError(f"{error.filename or output}: {error.strerror or error}") from None
    print(f"figures written to {output}")


def main(argv=None) -> int:
    from keras_hourglass.cli import run_command

    parser = argparse.ArgumentParser(prog="make_figures.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a training run folder (its training_log.csv)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "_static"), help="where the PNGs go")
    parser.add_argument("--page", action="store_true", help="also the web page's screenshot (needs Chromium)")
    return run_command("make_figures.py", make, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
