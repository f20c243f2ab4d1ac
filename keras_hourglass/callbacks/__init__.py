"""Keras callbacks for training pose models: the real metric (PCK, COCO keypoint AP), SavedModel checkpoints, resumable state, throughput."""

from keras_hourglass.callbacks.ap import KeypointAPCallback
from keras_hourglass.callbacks.checkpoint import ResumeCheckpoint, SavedModelCheckpoint, latest_resume_state
from keras_hourglass.callbacks.pck import PCKCallback
from keras_hourglass.callbacks.throughput import Throughput

__all__ = ["KeypointAPCallback", "PCKCallback", "ResumeCheckpoint", "SavedModelCheckpoint", "Throughput", "latest_resume_state"]
