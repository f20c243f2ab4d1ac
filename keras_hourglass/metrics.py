"""PCK metrics: pure NumPy functions with a normaliser argument.

A joint prediction is correct when `||prediction - truth|| / normalizer <=
threshold`. Only annotated joints count; a joint's score is the number of
correct predictions over the number of people in whom it is annotated, in
percent. The data set's `JointSpec` says how joints form groups (Shoulder is
the mean of left and right shoulder) and which joints enter the mean.

* MPII, PCKh@0.5: normaliser `0.6 * ||head-box diagonal||`
  (`head_normalizer`). This reproduces the published tables exactly (see
  `tests/test_metrics.py`): annotated means `jnt_missing == 0`, not MPII's
  `visible` flag; Head is head-top alone; the Mean is the unweighted mean of
  the 14 joints other than pelvis and thorax.
* FLIC, PCK@0.2: normaliser the torso size `||r_shoulder - l_hip||`
  (`torso_normalizer`), with anatomical (person-centric) left and right:
  the usual FLIC files store this same value in the observer-centric
  layout too, where the labels of people facing away are mirrored and the
  formula would take the other diagonal. The mean is over elbows and wrists.

A joint annotated in nobody scores NaN and is left out of group means; a
group or mean with no scored joint is NaN. Predictions that are NaN count as
wrong.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_hourglass.joints import JointSpec

PCKH_THRESHOLD = 0.5
HEAD_SIZE_FACTOR = 0.6
FLIC_PCK_THRESHOLD = 0.2
CURVE_THRESHOLDS = np.round(np.arange(0.0, 0.51, 0.01), 2)


def _as_array(value, name: str, ndim: int, dtype=np.float64) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}.")
    return array


def head_normalizer(head_boxes) -> np.ndarray:
    """MPII's head size: `0.6 * ||(x2, y2) - (x1, y1)||`.

    Args:
        head_boxes: `[num_people, 2, 2]`, two opposite corners `(x, y)`.

    Returns:
        `[num_people]` head sizes in pixels.
    """
    boxes = _as_array(head_boxes, "head_boxes", 3)
    if boxes.shape[1:] != (2, 2):
        raise ValueError(f"head_boxes must have shape [num_people, 2, 2], got {boxes.shape}.")
    return HEAD_SIZE_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=-1)


def torso_normalizer(keypoints, spec: JointSpec) -> np.ndarray:
    """Torso size `||keypoints[torso[0]] - keypoints[torso[1]]||` of each person.

    Args:
        keypoints: `[num_people, num_keypoints, 2]` ground truth with
            anatomical (person-centric) left and right.
        spec: joint metadata whose `torso` names the two joints.

    Returns:
        `[num_people]` torso sizes in pixels.
    """
    if spec.torso is None:
        raise ValueError(f"JointSpec {spec.name!r} defines no torso joints; pass a normalizer instead.")
    keypoints = _as_array(keypoints, "keypoints", 3)
    a, b = spec.indices(spec.torso)
    return np.linalg.norm(keypoints[:, a] - keypoints[:, b], axis=-1)


def _check_inputs(predictions, ground_truth, annotated, normalizer):
    predictions = _as_array(predictions, "predictions", 3)
    ground_truth = _as_array(ground_truth, "ground_truth", 3)
    annotated = _as_array(annotated, "annotated", 2, dtype=bool)
    normalizer = _as_array(normalizer, "normalizer", 1)
    if predictions.shape != ground_truth.shape or predictions.shape[-1] != 2:
        raise ValueError(
            f"predictions and ground_truth must both have shape [num_people, num_keypoints, 2], "
            f"got {predictions.shape} and {ground_truth.shape}."
        )
    if annotated.shape != ground_truth.shape[:2]:
        raise ValueError(f"annotated must have shape {ground_truth.shape[:2]}, got {annotated.shape}.")
    if normalizer.shape != ground_truth.shape[:1]:
        raise ValueError(f"normalizer must have shape {ground_truth.shape[:1]}, got {normalizer.shape}.")
    counted = annotated.any(axis=1)
    bad = counted & ~(np.isfinite(normalizer) & (normalizer > 0))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"normalizer must be positive and finite for every person with an annotated joint; "
            f"rows {rows[:10].tolist()} have {normalizer[rows[:10]].tolist()}."
        )
    if not np.isfinite(ground_truth[annotated]).all():
        raise ValueError("ground_truth has non-finite coordinates for annotated joints.")
    return predictions, ground_truth, annotated, normalizer


def normalized_distances(predictions, ground_truth, annotated, normalizer) -> np.ndarray:
    """Distances divided by each person's normaliser; NaN where not annotated.

    Returns:
        `[num_people, num_keypoints]`.
    """
    predictions, ground_truth, annotated, normalizer = _check_inputs(
        predictions, ground_truth, annotated, normalizer
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = np.linalg.norm(predictions - ground_truth, axis=-1) / normalizer[:, None]
    distances[~annotated] = np.nan
    distances[annotated & np.isnan(distances)] = np.inf  # a NaN prediction is wrong
    return distances


def pck_curve(predictions, ground_truth, annotated, normalizer, thresholds=CURVE_THRESHOLDS) -> np.ndarray:
    """Per-joint PCK (percent) at each threshold.

    Returns:
        `[num_thresholds, num_keypoints]`; NaN for joints annotated in nobody.
    """
    distances = normalized_distances(predictions, ground_truth, annotated, normalizer)
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    annotated = ~np.isnan(distances)
    counts = annotated.sum(axis=0)
    correct = (distances[None] <= thresholds[:, None, None]) & annotated[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * correct.sum(axis=1) / counts


def pck(predictions, ground_truth, annotated, normalizer, threshold) -> np.ndarray:
    """Per-joint PCK in percent at one threshold.

    Args:
        predictions: `[num_people, num_keypoints, 2]` `(x, y)` pixels.
        ground_truth: `[num_people, num_keypoints, 2]` `(x, y)` pixels.
        annotated: `[num_people, num_keypoints]` bool.
        normalizer: `[num_people]` per-person length (head or torso size).
        threshold: fraction of the normaliser, e.g. `PCKH_THRESHOLD`.

    Returns:
        `[num_keypoints]`; NaN for joints annotated in nobody.
    """
    return pck_curve(predictions, ground_truth, annotated, normalizer, [threshold])[0]


def area_under_curve(thresholds, values) -> np.ndarray:
    """Trapezoidal area under PCK curves, divided by the threshold range (so in percent).

    Args:
        thresholds: `[num_thresholds]` increasing.
        values: `[num_thresholds, ...]` PCK values.
    """
    thresholds = np.asarray(thresholds, np.float64)
    values = np.asarray(values, np.float64)
    if thresholds.ndim != 1 or len(thresholds) < 2 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be at least two increasing values.")
    if values.shape[:1] != thresholds.shape:
        raise ValueError(f"values must start with {len(thresholds)} thresholds, got shape {values.shape}.")
    return np.trapezoid(values, thresholds, axis=0) / (thresholds[-1] - thresholds[0])


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


@dataclasses.dataclass
class PCKResult:
    """Per-joint, per-group and mean PCK of one evaluation, in percent."""

    metric: str
    threshold: float
    joints: dict[str, float]
    groups: dict[str, float]
    mean: float
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format_table(self) -> str:
        """The standard table: one column per group, then the mean."""
        names = [*self.groups, "Mean"]
        values = [*self.groups.values(), self.mean]
        width = max(8, *(len(n) + 1 for n in names))
        header = "".join(f"{n:>{width}}" for n in names)
        row = "".join(f"{v:>{width}.2f}" for v in values)
        return f"{self.metric}@{self.threshold:g}\n{header}\n{row}"


def summarize_pck(per_joint, spec: JointSpec, metric: str, threshold: float, counts=None) -> PCKResult:
    """Groups per-joint PCK values `[num_keypoints]` by the spec's table."""
    per_joint = np.asarray(per_joint, np.float64)
    if per_joint.shape != (spec.num_keypoints,):
        raise ValueError(f"per_joint must have shape ({spec.num_keypoints},) for {spec.name}, got {per_joint.shape}.")
    groups = {group: _nanmean(per_joint[index]) for group, index in spec.group_index.items()}
    counts = np.zeros(spec.num_keypoints, int) if counts is None else np.asarray(counts)
    return PCKResult(
        metric=metric,
        threshold=float(threshold),
        joints={name: float(v) for name, v in zip(spec.names, per_joint)},
        groups=groups,
        mean=_nanmean(per_joint[spec.mean_index]),
        counts={name: int(c) for name, c in zip(spec.names, counts)},
    )


def evaluate_pck(
    predictions, ground_truth, annotated, normalizer, spec: JointSpec, threshold: float, metric: str = "PCK"
) -> PCKResult:
    """PCK per joint, per group and mean, as a `PCKResult`.

    Example, MPII's PCKh@0.5:
        evaluate_pck(preds, gt, annotated, head_normalizer(boxes), MPII, PCKH_THRESHOLD, "PCKh")
    """
    per_joint = pck(predictions, ground_truth, annotated, normalizer, threshold)
    counts = np.asarray(annotated, bool).sum(axis=0)
    if len(per_joint) != spec.num_keypoints:
        raise ValueError(f"predictions have {len(per_joint)} keypoints but {spec.name} has {spec.num_keypoints}.")
    return summarize_pck(per_joint, spec, metric, threshold, counts)


# The standard metric of each data set: (name, threshold). Custom data sets
# (a COCO file, say) default to PCK@0.2 of whatever normaliser their loader set.
STANDARD_METRICS = {"mpii": ("PCKh", PCKH_THRESHOLD), "flic": ("PCK", FLIC_PCK_THRESHOLD)}
DEFAULT_METRIC = ("PCK", FLIC_PCK_THRESHOLD)


def standard_metric(spec: JointSpec, threshold: float | None = None) -> tuple[str, float]:
    """`(metric name, threshold)` for a data set: PCKh@0.5 for MPII, PCK@0.2 otherwise."""
    name, default = STANDARD_METRICS.get(spec.name, DEFAULT_METRIC)
    if threshold is None:
        return name, default
    if not 0 < float(threshold) <= 10:
        raise ValueError(f"threshold must be a positive fraction of the normaliser, got {threshold!r}.")
    return name, float(threshold)


def log_entries(result: PCKResult, prefix: str = "val_") -> dict[str, float]:
    """Flat log entries for Keras: `{"val_pckh": mean, "val_pckh_wrist": ..., ...}`.

    The threshold is not in the key: `val_pckh` is PCKh at the run's threshold.
    """
    key = prefix + result.metric.lower()
    entries = {key: result.mean}
    entries.update({f"{key}_{group.lower()}": value for group, value in result.groups.items()})
    return entries
