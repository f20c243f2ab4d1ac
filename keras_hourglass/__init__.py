"""keras-hourglass: Stacked Hourglass Networks for 2D human pose estimation in Keras 3."""

from keras_hourglass.codec import HeatmapCodec, flip_keypoints
from keras_hourglass.joints import FLIC, MPII, JointSpec, get_joint_spec
from keras_hourglass.losses import HeatmapMSE
from keras_hourglass.metrics import (
    FLIC_PCK_THRESHOLD,
    PCKH_THRESHOLD,
    PCKResult,
    area_under_curve,
    evaluate_pck,
    head_normalizer,
    pck,
    pck_curve,
    torso_normalizer,
)
from keras_hourglass.model import VARIANTS, build_stacked_hourglass, build_variant, stack_outputs

__version__ = "0.1.0"

__all__ = [
    "FLIC",
    "FLIC_PCK_THRESHOLD",
    "MPII",
    "PCKH_THRESHOLD",
    "VARIANTS",
    "HeatmapCodec",
    "HeatmapMSE",
    "JointSpec",
    "PCKResult",
    "area_under_curve",
    "build_stacked_hourglass",
    "build_variant",
    "evaluate_pck",
    "flip_keypoints",
    "get_joint_spec",
    "head_normalizer",
    "pck",
    "pck_curve",
    "stack_outputs",
    "torso_normalizer",
]
