"""Evaluates a pose model, or a predictions file, with the data set's standard per-joint table.

A model (a SavedModel written by training, a `.tflite` file converted from one, or a `.keras` file) on a split:

    python evaluate.py --model runs/synthetic-small/checkpoints/best \
        --dataset synthetic --annotations data/synthetic/valid.h5 --image-dir data/synthetic/images \
        --output runs/synthetic-small/eval

A predictions file against ground truth (the published MPII table):

    python evaluate.py --predictions ../shared/data/mpii/valid-preds-hg8.h5 \
        --ground-truth ../shared/data/mpii/detections_our_format.mat

Prints the table (PCKh@0.5 for MPII, PCK@0.2 by torso for FLIC, PCK@0.2 of
the file's normaliser otherwise), and with `--output DIR` writes
`predictions.h5` (`preds` `[N, K, 2]` in the annotation file's own pixel
convention, rows in the annotation's order, as `valid-preds-hg8.h5`; plus
`scores`), `metrics.json`, `pck_curve.png` and `predictions.png` (a grid of
people with predicted and true skeletons). `--json FILE` writes the metrics
JSON alone.

Prediction files are read in the annotation file's convention: MATLAB's
1-based pixels for MPII and FLIC files (1 is subtracted from both sides
before comparing, which changes nothing), 0-based for COCO.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import h5py
import numpy as np

from datasets.loaders import DATASETS, load_records
from datasets.pipeline import build_eval_dataset
from datasets.records import PoseRecords
from keras_hourglass.codec import HeatmapCodec
from keras_hourglass.export import PoseModel, load_pose_model
from keras_hourglass.inference import predict_dataset
from keras_hourglass.metrics import CURVE_THRESHOLDS, PCKResult, area_under_curve, evaluate_pck, pck_curve, standard_metric

PLOT_SIZE = (256, 256)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="SavedModel directory, .tflite or .keras file to run")
    source.add_argument("--predictions", help="HDF5 file with `preds` [N, K, 2] to score")
    parser.add_argument("--dataset", choices=DATASETS, default="mpii", help="data set of the annotations (default mpii)")
    parser.add_argument("--annotations", "--ground-truth", dest="annotations", required=True,
                        help="annotation file of the split (.h5, .json, .mat)")
    parser.add_argument("--image-dir", help="folder of the images (needed with --model)")
    parser.add_argument("--split", help="split of a multi-split file (FLIC examples.mat: train/test)")
    parser.add_argument("--normalizer-joints", help="COCO: two joint names whose distance normalises PCK, 'a,b'")
    parser.add_argument("--threshold", type=float, help="PCK threshold (default: the data set's standard one)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                        help="average with the mirrored image's heatmaps (default on)")
    parser.add_argument("--refine", choices=("quarter", "taylor"),
                        help="sub-pixel decoding (default: the model's; the reference's quarter shift for .keras)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", help="folder for predictions.h5, metrics.json and plots")
    parser.add_argument("--json", help="write the metrics JSON here")
    parser.add_argument("--num-plot", type=int, default=12, help="people in the predictions grid")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run_model(pose_model: PoseModel, records: PoseRecords, flip_test: bool = True, batch_size: int = 16,
              progress: bool = True):
    """Keypoints `[N, K, 2]` in the project's pixels and scores `[N, K]` for every record."""
    if pose_model.num_keypoints != records.spec.num_keypoints:
        raise ValueError(f"{pose_model.source} predicts {pose_model.num_keypoints} keypoints, but {records.source} "
                         f"({records.spec.name}) has {records.spec.num_keypoints}.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}.")
    batches = build_eval_dataset(records, pose_model.codec.image_size, batch_size)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(records), unit_name="person")
    return predict_dataset(pose_model, batches, len(records), flip_test, bar)


def read_predictions(path: str, records: PoseRecords) -> np.ndarray:
    """`preds` of an HDF5 file, converted from the annotation file's convention to the project's pixels."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: predictions file not found.")
    try:
        with h5py.File(path, "r") as f:
            if "preds" not in f:
                raise ValueError(f"{path}: no 'preds' dataset; expected preds [N, K, 2] as in valid-preds-hg8.h5.")
            predictions = np.asarray(f["preds"][()], np.float64)
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}).") from None
    expected = (len(records), records.spec.num_keypoints, 2)
    if predictions.shape != expected:
        raise ValueError(f"{path}: 'preds' has shape {predictions.shape}, but {records.source} needs {expected} "
                         "(one row per person, in the annotation's order).")
    return predictions - records.coordinate_offset


def score(keypoints, records: PoseRecords, threshold: float | None = None) -> tuple[PCKResult, dict]:
    """The standard table and the mean PCK-versus-threshold curve with its area."""
    metric, threshold = standard_metric(records.spec, threshold)
    result = evaluate_pck(keypoints, records.keypoints, records.annotated, records.normalizer, records.spec,
                          threshold, metric)
    curve = pck_curve(keypoints, records.keypoints, records.annotated, records.normalizer, CURVE_THRESHOLDS)
    mean_curve = np.nanmean(curve[:, records.spec.mean_index], axis=1)
    return result, {"thresholds": CURVE_THRESHOLDS.tolist(), "mean": mean_curve.tolist(),
                    "auc": float(area_under_curve(CURVE_THRESHOLDS, mean_curve))}


def metrics_json(result: PCKResult, curve: dict | None = None) -> dict:
    report = {"metric": result.metric, "threshold": result.threshold, "joints": result.joints,
              "groups": result.groups, "mean": result.mean, "counts": result.counts}
    if curve is not None:
        report["curve"] = curve
    return report


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".partial"
    with open(temporary, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)


def write_predictions(path: str, records: PoseRecords, keypoints, scores=None) -> None:
    """`preds` `[N, K, 2]` in the annotation file's convention (and `scores`), rows in its order."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".partial"
    with h5py.File(temporary, "w") as f:
        f["preds"] = records.to_source_pixels(keypoints)
        if scores is not None:
            f["scores"] = np.asarray(scores, np.float64)
    os.replace(temporary, path)


def person_crops(records: PoseRecords, rows, keypoints, size=PLOT_SIZE):
    """Crops around people for display, with predicted and true keypoints moved into them."""
    import tensorflow as tf

    from keras_hourglass.transforms import apply_affine, crop_matrix, warp_image

    images, predicted, truth = [], [], []
    for row in rows:
        pixels = tf.io.decode_image(tf.io.read_file(records.image_path[row]), channels=3, expand_animations=False)
        matrix = crop_matrix(records.center[row], records.scale[row], size)
        images.append(warp_image(pixels, matrix, size).numpy().astype(np.uint8))
        predicted.append(apply_affine(matrix, keypoints[row]).numpy())
        truth.append(apply_affine(matrix, records.keypoints[row]).numpy())
    return images, np.asarray(predicted), np.asarray(truth)


def write_plots(output: str, records: PoseRecords, keypoints, scores, result: PCKResult, curve: dict,
                num_plot: int = 12, label: str = "model") -> list[str]:
    from keras_hourglass.plotting import plot_pck_curves, plot_pose_grid, save_figure

    written = [save_figure(plot_pck_curves({f"{label} (AUC {curve['auc']:.1f})": (curve["thresholds"], curve["mean"])},
                                           result.metric, f"{records.spec.name}: mean {result.metric}"),
                           os.path.join(output, "pck_curve.png"))]
    rows = np.arange(min(num_plot, len(records)))
    if len(rows) and all(records.image_path[rows]):
        images, predicted, truth = person_crops(records, rows, keypoints)
        titles = [f"{records.id[row]}"[:32] for row in rows]
        written.append(save_figure(plot_pose_grid(images, predicted, records.spec, truth, records.annotated[rows],
                                                  scores[rows] if scores is not None else None, titles),
                                   os.path.join(output, "predictions.png")))
    return written


def evaluate(args: argparse.Namespace) -> dict:
    normalizer_joints = args.normalizer_joints.split(",") if args.normalizer_joints else None
    records = load_records(args.dataset, args.annotations, args.image_dir, args.split, normalizer_joints)
    scores = None
    if args.model:
        pose_model = load_pose_model(args.model, records.spec.names, records.spec.flip_index)
        if args.refine:
            pose_model.codec = HeatmapCodec.from_config({**pose_model.codec.get_config(), "refine": args.refine})
        keypoints, scores = run_model(pose_model, records, args.flip_test, args.batch_size, not args.quiet)
        label = os.path.basename(os.path.normpath(args.model))
    else:
        keypoints = read_predictions(args.predictions, records)
        label = os.path.basename(args.predictions)
    result, curve = score(keypoints, records, args.threshold)
    print(f"{records.source}: {len(records)} people, {label}")
    print(result.format_table())
    print(f"AUC of the mean {result.metric}, thresholds 0-{CURVE_THRESHOLDS[-1]:g}: {curve['auc']:.2f}")
    report = metrics_json(result, curve)
    if args.json:
        write_json(args.json, report)
    if args.output:
        write_json(os.path.join(args.output, "metrics.json"), report)
        if args.model:
            write_predictions(os.path.join(args.output, "predictions.h5"), records, keypoints, scores)
        write_plots(args.output, records, keypoints, scores, result, curve, args.num_plot, label)
        print(f"wrote {args.output}")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        evaluate(args)
    except ValueError as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
