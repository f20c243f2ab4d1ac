"""People across video frames: an id per person, and keypoints smoothed over time.

`PersonTracker` gives each person of a frame an id, matching the people of
one frame to those of the frames before by keypoint similarity: for two
people, the mean over the joints both have of `exp(-d^2 / (2 (k s)^2))`,
where `d` is the distance between the joints, `s` the earlier person's box
size (the square root of its area) and `k` `SIMILARITY_FALLOFF`: COCO's
object keypoint similarity with one fall-off for every joint (one that
works for any skeleton, MPII's and custom ones included). People are
matched by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`)
on that similarity; a pair below `min_similarity` is no match. A person
matched to nobody gets a new id; a track that finds nobody is kept for
`max_missed` frames, so that a person hidden for a moment keeps its id.

`OneEuroFilter` smooths each tracked person's keypoints: the 1-euro filter
(Casiez, Roussel and Vogel, CHI 2012), a low-pass filter whose cut-off
frequency rises with the speed, so that a still joint stops jittering and a
fast one does not lag. One filter per track, over all its joints at once.
"""

from __future__ import annotations

import math

import numpy as np

SIMILARITY_FALLOFF = 0.1  # k: a joint one tenth of the person's size away counts exp(-1/2)


def keypoint_similarity(a, found_a, b, found_b, size: float) -> float:
    """The similarity of two people's keypoints `[K, 2]` (see the module); 0 when they share no joint."""
    both = np.asarray(found_a, bool) & np.asarray(found_b, bool)
    if not both.any() or not size > 0:
        return 0.0
    squared = ((np.asarray(a, np.float64)[both] - np.asarray(b, np.float64)[both]) ** 2).sum(axis=-1)
    return float(np.exp(-squared / (2 * (SIMILARITY_FALLOFF * size) ** 2)).mean())


def box_size(box) -> float:
    """The square root of an `(x1, y1, x2, y2)` box's area."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    return math.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))


class PersonTracker:
    """Ids for the people of consecutive frames (see the module).

    Args:
        min_similarity: the least keypoint similarity of a match.
        max_missed: frames a track is kept without a match.
    """

    def __init__(self, min_similarity: float = 0.3, max_missed: int = 10):
        if not 0 < min_similarity <= 1:
            raise ValueError(f"min_similarity must be in (0, 1], got {min_similarity}.")
        if max_missed < 0:
            raise ValueError(f"max_missed must not be negative, got {max_missed}.")
        self.min_similarity, self.max_missed = float(min_similarity), int(max_missed)
        self.tracks: dict[int, dict] = {}  # id -> keypoints, found, size, missed
        self.next_id = 1

    def update(self, keypoints, found, boxes) -> list[int]:
        """The ids of one frame's people: `keypoints [P, K, 2]`, `found [P, K]` (bool), `boxes [P, 4]`."""
        from scipy.optimize import linear_sum_assignment

        keypoints, found = np.asarray(keypoints, np.float64), np.asarray(found, bool)
        ids = list(self.tracks)
        similarity = np.zeros((len(keypoints), len(ids)))
        for row in range(len(keypoints)):
            for column, track_id in enumerate(ids):
                track = self.tracks[track_id]
                similarity[row, column] = keypoint_similarity(keypoints[row], found[row], track["keypoints"],
                                                              track["found"], track["size"])
        assigned = [None] * len(keypoints)
        if similarity.size:
            for row, column in zip(*linear_sum_assignment(-similarity)):
                if similarity[row, column] >= self.min_similarity:
                    assigned[row] = ids[column]
        for track_id in set(ids) - set(assigned):
            self.tracks[track_id]["missed"] += 1
            if self.tracks[track_id]["missed"] > self.max_missed:
                del self.tracks[track_id]
        for row, track_id in enumerate(assigned):
            if track_id is None:
                track_id = assigned[row] = self.next_id
                self.next_id += 1
            self.tracks[track_id] = {"keypoints": keypoints[row], "found": found[row],
                                     "size": box_size(boxes[row]), "missed": 0}
        return assigned


class OneEuroFilter:
    """The 1-euro filter over arrays (one track's keypoints `[K, 2]`): `filter(values, seconds)`.

    Args:
        min_cutoff: the cut-off frequency (Hz) of a still signal: lower
            smooths more.
        beta: how fast the cut-off rises with the speed (per pixel per
            second): higher lags less.
        derivative_cutoff: the cut-off frequency of the speed's own filter.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, derivative_cutoff: float = 1.0):
        if not (min_cutoff > 0 and beta >= 0 and derivative_cutoff > 0):
            raise ValueError(f"min_cutoff and derivative_cutoff must be positive and beta not negative; got "
                             f"{min_cutoff}, {derivative_cutoff}, {beta}.")
        self.min_cutoff, self.beta, self.derivative_cutoff = float(min_cutoff), float(beta), float(derivative_cutoff)
        self.values = self.speed = self.seconds = None

    @staticmethod
    def _alpha(cutoff, elapsed: float):
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * elapsed))

    def filter(self, values, seconds: float) -> np.ndarray:
        """The smoothed `values` at time `seconds` (later than the last call's); NaN values pass unfiltered."""
        values = np.asarray(values, np.float64)
        if self.values is None or not seconds > self.seconds:
            self.values, self.speed, self.seconds = values.copy(), np.zeros_like(values), float(seconds)
            return values.copy()
        elapsed = seconds - self.seconds
        known = np.isfinite(values) & np.isfinite(self.values)
        speed = np.where(known, (values - self.values) / elapsed, 0.0)
        a = self._alpha(self.derivative_cutoff, elapsed)
        self.speed = a * speed + (1 - a) * self.speed
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.speed), elapsed)
        smoothed = np.where(known, a * values + (1 - a) * self.values, values)
        self.values, self.seconds = smoothed, float(seconds)
        return smoothed.copy()
