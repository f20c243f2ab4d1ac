"""keras-hourglass: Stacked Hourglass Networks for 2D human pose estimation in Keras 3.

The names below are imported on first use (PEP 562), so that `import
keras_hourglass.cli` and `keras-hourglass COMMAND --help` answer without
starting TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AssociativeEmbeddingCodec": "keras_hourglass.codec",
    "HeatmapCodec": "keras_hourglass.codec",
    "flip_keypoints": "keras_hourglass.codec",
    "FLIC": "keras_hourglass.joints",
    "MPII": "keras_hourglass.joints",
    "JointSpec": "keras_hourglass.joints",
    "get_joint_spec": "keras_hourglass.joints",
    "HeatmapMSE": "keras_hourglass.losses",
    "masked_heatmap_loss": "keras_hourglass.losses",
    "tag_losses": "keras_hourglass.losses",
    "FLIC_PCK_THRESHOLD": "keras_hourglass.metrics",
    "PCKH_THRESHOLD": "keras_hourglass.metrics",
    "PCKResult": "keras_hourglass.metrics",
    "area_under_curve": "keras_hourglass.metrics",
    "evaluate_pck": "keras_hourglass.metrics",
    "head_normalizer": "keras_hourglass.metrics",
    "pck": "keras_hourglass.metrics",
    "pck_curve": "keras_hourglass.metrics",
    "torso_normalizer": "keras_hourglass.metrics",
    "load_multi_person_model": "keras_hourglass.multiperson",
    "predict_people": "keras_hourglass.multiperson",
    "OneEuroFilter": "keras_hourglass.tracking",
    "PersonTracker": "keras_hourglass.tracking",
    "VARIANTS": "keras_hourglass.model",
    "build_stacked_hourglass": "keras_hourglass.model",
    "build_variant": "keras_hourglass.model",
    "stack_outputs": "keras_hourglass.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_hourglass' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
