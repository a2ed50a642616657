"""Video models for Kinetics: DeepMind's I3D in Keras 3, with its published weights."""
from kinetics_tfds.models.i3d import ENDPOINTS, i3d

__all__ = ["ENDPOINTS", "i3d"]
