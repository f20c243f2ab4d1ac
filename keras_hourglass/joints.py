"""Joint metadata as data: names, left/right partners, limbs and metric groups.

Every data set has exactly one `JointSpec`. Flip permutations, plot colours
and PCK group tables are all derived from it, so nothing downstream hard-codes
joint indices.

Conventions used across the project (written once, here):

* keypoints are `[..., num_keypoints, 2]` arrays of `(x, y)` pixels;
* sizes are `(height, width)`;
* heatmaps are channels-last, `[..., height, width, num_keypoints]`;
* an `annotated` array `[..., num_keypoints]` says which joints carry a
  ground-truth position (this is not MPII's occlusion flag, `visible`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class JointSpec:
    """Joint metadata of one data set.

    Args:
        name: short name of the data set, e.g. `"mpii"`.
        names: joint names, in the data set's order.
        flip_partners: pairs of joint names that swap under a horizontal
            flip (left and right). Joints in no pair map to themselves.
        limbs: pairs of joint names joined by a line when plotting.
        groups: ordered mapping from a group name (e.g. `"Wrist"`) to the
            joint names whose PCK values are averaged for that group.
        mean_joints: joint names averaged into the headline mean.
        torso: optional pair of joint names whose distance is the torso size
            (the FLIC normaliser).
    """

    name: str
    names: tuple[str, ...]
    flip_partners: tuple[tuple[str, str], ...] = ()
    limbs: tuple[tuple[str, str], ...] = ()
    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    mean_joints: tuple[str, ...] = ()
    torso: tuple[str, str] | None = None

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"JointSpec {self.name!r}: joint names must be unique, got {self.names}.")
        seen = set()
        for pair in self.flip_partners:
            for joint in pair:
                self.index(joint, field="flip_partners")
                if joint in seen:
                    raise ValueError(
                        f"JointSpec {self.name!r}: joint {joint!r} appears in more than one flip pair."
                    )
                seen.add(joint)
        for pair in self.limbs:
            for joint in pair:
                self.index(joint, field="limbs")
        for group, joints in self.groups.items():
            for joint in joints:
                self.index(joint, field=f"groups[{group!r}]")
        for joint in self.mean_joints:
            self.index(joint, field="mean_joints")
        if self.torso is not None:
            for joint in self.torso:
                self.index(joint, field="torso")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, joint: str, field: str = "joint") -> int:
        """Returns the index of a joint name, with a clear error if unknown."""
        try:
            return self.names.index(joint)
        except ValueError:
            raise ValueError(
                f"JointSpec {self.name!r}: {field} names unknown joint {joint!r}; "
                f"known joints are {list(self.names)}."
            ) from None

    def indices(self, joints: Sequence[str]) -> list[int]:
        return [self.index(joint) for joint in joints]

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation `p` such that channel `p[k]` of a mirrored prediction is joint `k`."""
        permutation = np.arange(self.num_keypoints)
        for left, right in self.flip_partners:
            i, j = self.index(left), self.index(right)
            permutation[i], permutation[j] = j, i
        return permutation

    @property
    def limb_index(self) -> list[tuple[int, int]]:
        return [(self.index(a), self.index(b)) for a, b in self.limbs]

    @property
    def group_index(self) -> dict[str, list[int]]:
        return {group: self.indices(joints) for group, joints in self.groups.items()}

    @property
    def mean_index(self) -> list[int]:
        return self.indices(self.mean_joints or self.names)

    def side(self, joint: str) -> str:
        """`"left"`, `"right"` or `"centre"`, from the flip pairs (first member is left)."""
        for left, right in self.flip_partners:
            if joint == left:
                return "left"
            if joint == right:
                return "right"
        return "centre"


MPII = JointSpec(
    name="mpii",
    names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_partners=(
        ("l_ankle", "r_ankle"), ("l_knee", "r_knee"), ("l_hip", "r_hip"),
        ("l_wrist", "r_wrist"), ("l_elbow", "r_elbow"), ("l_shoulder", "r_shoulder"),
    ),
    limbs=(
        ("r_ankle", "r_knee"), ("r_knee", "r_hip"), ("r_hip", "pelvis"),
        ("l_ankle", "l_knee"), ("l_knee", "l_hip"), ("l_hip", "pelvis"),
        ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
        ("r_wrist", "r_elbow"), ("r_elbow", "r_shoulder"), ("r_shoulder", "thorax"),
        ("l_wrist", "l_elbow"), ("l_elbow", "l_shoulder"), ("l_shoulder", "thorax"),
    ),
    # The standard MPII table: Head is head-top alone, each other group is the
    # mean of its left and right joints, and the Mean is over the 14 joints
    # other than pelvis and thorax (upper neck included), unweighted.
    groups={
        "Head": ("head_top",),
        "Shoulder": ("l_shoulder", "r_shoulder"),
        "Elbow": ("l_elbow", "r_elbow"),
        "Wrist": ("l_wrist", "r_wrist"),
        "Hip": ("l_hip", "r_hip"),
        "Knee": ("l_knee", "r_knee"),
        "Ankle": ("l_ankle", "r_ankle"),
    },
    mean_joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
        "upper_neck", "head_top",
        "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
)

FLIC = JointSpec(
    name="flic",
    names=(
        "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
        "l_hip", "r_hip", "l_eye", "r_eye", "nose",
    ),
    flip_partners=(
        ("l_shoulder", "r_shoulder"), ("l_elbow", "r_elbow"), ("l_wrist", "r_wrist"),
        ("l_hip", "r_hip"), ("l_eye", "r_eye"),
    ),
    limbs=(
        ("l_wrist", "l_elbow"), ("l_elbow", "l_shoulder"), ("l_shoulder", "r_shoulder"),
        ("r_wrist", "r_elbow"), ("r_elbow", "r_shoulder"),
        ("l_shoulder", "l_hip"), ("r_shoulder", "r_hip"), ("l_hip", "r_hip"),
        ("l_eye", "nose"), ("r_eye", "nose"), ("l_eye", "r_eye"),
    ),
    # FLIC's standard figures are PCK@0.2 (torso) for elbows and wrists; the
    # other groups are reported for information and stay out of the mean.
    groups={
        "Elbow": ("l_elbow", "r_elbow"),
        "Wrist": ("l_wrist", "r_wrist"),
        "Shoulder": ("l_shoulder", "r_shoulder"),
        "Hip": ("l_hip", "r_hip"),
        "Head": ("l_eye", "r_eye", "nose"),
    },
    mean_joints=("l_elbow", "r_elbow", "l_wrist", "r_wrist"),
    # The torso size of the usual FLIC files: ||r_shoulder - l_hip||.
    torso=("r_shoulder", "l_hip"),
)

# The 17 person keypoints of the COCO keypoint benchmark, in its order (what pose-ae-train's model predicts).
COCO_PERSON = JointSpec(
    name="coco_person",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_partners=(
        ("left_eye", "right_eye"), ("left_ear", "right_ear"), ("left_shoulder", "right_shoulder"),
        ("left_elbow", "right_elbow"), ("left_wrist", "right_wrist"), ("left_hip", "right_hip"),
        ("left_knee", "right_knee"), ("left_ankle", "right_ankle"),
    ),
    # The benchmark's `skeleton` (person_keypoints_*.json), 1-based there.
    limbs=(
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
        ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
        ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
        ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ),
    groups={
        "Head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
        "Shoulder": ("left_shoulder", "right_shoulder"),
        "Elbow": ("left_elbow", "right_elbow"),
        "Wrist": ("left_wrist", "right_wrist"),
        "Hip": ("left_hip", "right_hip"),
        "Knee": ("left_knee", "right_knee"),
        "Ankle": ("left_ankle", "right_ankle"),
    },
    mean_joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
)

JOINT_SPECS = {spec.name: spec for spec in (MPII, FLIC, COCO_PERSON)}
# The data sets the loaders read (`keras_hourglass.data.loaders`); synthetic people have MPII's joints,
# COCO files bring their own.
DATASETS = ("mpii", "flic", "coco", "synthetic")
# Whole images with several people, for a multi-person model (`keras_hourglass.data.people`): COCO keypoint
# files, and the synthetic scenes of `keras_hourglass.data.synthetic.generate_scenes`.
PEOPLE_DATASETS = ("coco-people", "synthetic-people")


def get_joint_spec(name: str) -> JointSpec:
    """Returns the `JointSpec` registered under `name` (`"mpii"` or `"flic"`)."""
    try:
        return JOINT_SPECS[name]
    except KeyError:
        raise ValueError(f"Unknown joint spec {name!r}; expected one of {sorted(JOINT_SPECS)}.") from None


# Name prefixes of the two sides, for skeletons that name their joints but not their flip partners.
SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"))


def infer_flip_partners(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Pairs `left_x`/`right_x` (or `l_x`/`r_x`) among joint names."""
    pairs = []
    for name in names:
        for left, right in SIDE_PREFIXES:
            if name.startswith(left) and right + name[len(left):] in names:
                pairs.append((name, right + name[len(left):]))
    return tuple(pairs)
