"""The evaluation chain: a model on a split, keypoints back in image pixels, the standard table.

One function, `evaluate_model`, runs a `PoseModel` (any saved format, or a
Keras model in training) over a split's crops with the optional flip test,
maps the keypoints back to the original images and scores them with the data
set's standard metric (PCKh@0.5 for MPII and the synthetic set, PCK@0.2 by
torso for FLIC, PCK@0.2 of the records' own normaliser otherwise). Training,
the PCK callback and the `evaluate` and `convert` commands all use it;
`evaluate_predictions` scores keypoints that came from elsewhere (a
predictions file).

Prediction files (`read_predictions`, `write_predictions`) are in the
annotation file's own pixel convention, as `valid-preds-hg8.h5`: MATLAB's
1-based pixels for MPII and FLIC files, 0-based for COCO.
"""

from __future__ import annotations

import dataclasses
import os

import h5py
import numpy as np

from keras_hourglass.data.pipeline import build_eval_dataset
from keras_hourglass.data.records import PoseRecords
from keras_hourglass.fileio import atomic_path, write_json
from keras_hourglass.inference import predict_dataset
from keras_hourglass.metrics import CURVE_THRESHOLDS, PCKResult, area_under_curve, evaluate_pck, pck_curve, standard_metric
from keras_hourglass.pose_model import PoseModel

PLOT_SIZE = (256, 256)  # people in the predictions grid, pixels


@dataclasses.dataclass
class Evaluation:
    """What one evaluation found.

    Attributes:
        keypoints: `[N, K, 2]` predictions in the project's pixels, rows in
            the annotation's order.
        scores: `[N, K]` heatmap peaks, or None for a predictions file.
        result: the standard table (`PCKResult`).
        curve: `{"thresholds", "mean", "auc"}`: the mean PCK against the
            threshold (0 to 0.5) and its area.
    """

    keypoints: np.ndarray
    scores: np.ndarray | None
    result: PCKResult
    curve: dict

    def metrics(self) -> dict:
        """The JSON report (`metrics.json`)."""
        result = self.result
        return {"metric": result.metric, "threshold": result.threshold, "joints": result.joints,
                "groups": result.groups, "mean": result.mean, "counts": result.counts, "curve": self.curve}

    def write(self, output: str, records: PoseRecords, label: str = "model", num_plot: int = 12) -> list[str]:
        """Writes `metrics.json`, `predictions.h5` (with scores, for a model), `pck_curve.png`, `predictions.png`."""
        written = [write_json(os.path.join(output, "metrics.json"), self.metrics())]
        if self.scores is not None:
            written.append(write_predictions(os.path.join(output, "predictions.h5"), records, self.keypoints,
                                             self.scores))
        return written + write_plots(output, records, self, num_plot, label)


def predict_records(pose_model: PoseModel, records: PoseRecords, flip_test: bool = True, batch_size: int = 16,
                    progress: bool = False, check_images: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints `[N, K, 2]` in the project's pixels and scores `[N, K]` for every record.

    Args:
        pose_model: any loaded model (`keras_hourglass.pose_model`).
        records: the split; its crops are the training warp without augmentation.
        flip_test: average with the mirrored crop's heatmaps.
        batch_size: crops per batch.
        progress: show a progress bar.
        check_images: check every image file up front (named errors) first.
    """
    check_model_fits_records(pose_model, records)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}.")
    batches = build_eval_dataset(records, pose_model.codec.image_size, batch_size, check_images=check_images)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(records), unit_name="person")
    return predict_dataset(pose_model, batches, len(records), flip_test, bar)


def check_model_fits_records(pose_model: PoseModel, records: PoseRecords) -> None:
    """Raises `ValueError` unless `pose_model` predicts the joints of `records`, in their order."""
    if pose_model.num_keypoints != records.spec.num_keypoints:
        raise ValueError(f"{pose_model.source} predicts {pose_model.num_keypoints} keypoints, but {records.source} "
                         f"({records.spec.name}) has {records.spec.num_keypoints}.")
    if list(pose_model.keypoint_names) != list(records.spec.names):  # same count, other joints or order
        first = next(i for i, (a, b) in enumerate(zip(pose_model.keypoint_names, records.spec.names)) if a != b)
        raise ValueError(f"{pose_model.source} predicts other joints than {records.source} has: channel {first} is "
                         f"{pose_model.keypoint_names[first]!r} in the model and {records.spec.names[first]!r} in the "
                         "annotations.")


def evaluate_predictions(keypoints, records: PoseRecords, threshold: float | None = None,
                         scores=None) -> Evaluation:
    """Scores keypoints `[N, K, 2]` (project pixels) against `records` with the standard metric and its curve."""
    records.check_normalizers()
    metric, threshold = standard_metric(records.spec, threshold)
    result = evaluate_pck(keypoints, records.keypoints, records.annotated, records.normalizer, records.spec,
                          threshold, metric)
    curve = pck_curve(keypoints, records.keypoints, records.annotated, records.normalizer, CURVE_THRESHOLDS)
    mean_curve = np.nanmean(curve[:, records.spec.mean_index], axis=1)
    return Evaluation(np.asarray(keypoints), scores, result,
                      {"thresholds": CURVE_THRESHOLDS.tolist(), "mean": mean_curve.tolist(),
                       "auc": float(area_under_curve(CURVE_THRESHOLDS, mean_curve))})


def evaluate_model(pose_model: PoseModel, records: PoseRecords, flip_test: bool = True, batch_size: int = 16,
                   threshold: float | None = None, progress: bool = False, check_images: bool = True) -> Evaluation:
    """The whole chain: `predict_records`, then `evaluate_predictions`."""
    keypoints, scores = predict_records(pose_model, records, flip_test, batch_size, progress, check_images)
    return evaluate_predictions(keypoints, records, threshold, scores)


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


def write_predictions(path: str, records: PoseRecords, keypoints, scores=None) -> str:
    """`preds` `[N, K, 2]` in the annotation file's convention (and `scores`), rows in its order."""
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as f:
        f["preds"] = records.to_source_pixels(keypoints)
        if scores is not None:
            f["scores"] = np.asarray(scores, np.float64)
    return path


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


def write_plots(output: str, records: PoseRecords, evaluation: Evaluation, num_plot: int = 12,
                label: str = "model") -> list[str]:
    """`pck_curve.png`, and `predictions.png` (the first `num_plot` people) where the records have images."""
    from keras_hourglass.plotting import plot_pck_curves, plot_pose_grid, save_figure

    result, curve, scores = evaluation.result, evaluation.curve, evaluation.scores
    written = [save_figure(plot_pck_curves({f"{label} (AUC {curve['auc']:.1f})": (curve["thresholds"], curve["mean"])},
                                           result.metric, f"{records.spec.name}: mean {result.metric}"),
                           os.path.join(output, "pck_curve.png"))]
    rows = np.arange(min(num_plot, len(records)))
    if len(rows) and all(records.image_path[rows]):
        images, predicted, truth = person_crops(records, rows, evaluation.keypoints)
        titles = [f"{records.id[row]}"[:32] for row in rows]
        written.append(save_figure(plot_pose_grid(images, predicted, records.spec, truth, records.annotated[rows],
                                                  scores[rows] if scores is not None else None, titles),
                                   os.path.join(output, "predictions.png")))
    return written
