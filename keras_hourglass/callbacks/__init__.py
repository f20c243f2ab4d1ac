"""Keras callbacks for training pose models: the real metric, SavedModel checkpoints, resumable state."""

from keras_hourglass.callbacks.checkpoint import ResumeCheckpoint, SavedModelCheckpoint, latest_resume_state
from keras_hourglass.callbacks.pck import PCKCallback

__all__ = ["PCKCallback", "ResumeCheckpoint", "SavedModelCheckpoint", "latest_resume_state"]
