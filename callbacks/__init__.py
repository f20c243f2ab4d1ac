"""Keras callbacks for training pose models: the real metric, SavedModel checkpoints, resumable state."""

from callbacks.checkpoint import ResumeCheckpoint, SavedModelCheckpoint, latest_resume_state
from callbacks.pck import PCKCallback

__all__ = ["PCKCallback", "ResumeCheckpoint", "SavedModelCheckpoint", "latest_resume_state"]
