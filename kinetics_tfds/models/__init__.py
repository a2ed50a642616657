"""Video models for Kinetics: DeepMind's I3D in Keras 3 (`i3d.InceptionI3D`), with its published weights."""

from kinetics_tfds.models.i3d import ENDPOINTS
from kinetics_tfds.models.i3d import InceptionI3D

__all__ = ["ENDPOINTS", "InceptionI3D"]
