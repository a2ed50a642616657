"""Random clips generated once on the device, so a run measures the model alone (no host input, no TensorFlow)."""

import keras
from keras import ops


class Repeated(keras.utils.PyDataset):
  """The same batch (a tuple: inputs, then labels if any) `steps` times per epoch; None: endlessly (`fit` then needs
  `steps_per_epoch`)."""

  def __init__(self, batch: tuple, steps: int | None):
    super().__init__()
    self.batch, self.steps = batch, steps

  @property
  def num_batches(self):
    return self.steps

  def __getitem__(self, index):
    return self.batch


class SyntheticClips(Repeated):
  """The same device-resident (uint8 clips, int32 labels) batch, `steps` times per epoch (None: endlessly).

  Keras passes device arrays through on JAX; on TensorFlow its PyDataset adapter goes through the host.
  """

  def __init__(
    self, batch_size: int, num_frames: int, image_size: int, num_classes: int, *, steps: int | None, seed=0, rows=None
  ):
    """`rows`: a slice, the rows of the `batch_size` batch this process feeds (every process makes the same batch)."""
    shape = (batch_size, num_frames, image_size, image_size, 3)
    self.clips = ops.cast(keras.random.randint(shape, 0, 256, seed=seed), "uint8")
    self.labels = keras.random.randint((batch_size,), 0, num_classes, seed=seed + 1)
    if rows is not None:
      self.clips, self.labels = self.clips[rows], self.labels[rows]
    super().__init__((self.clips, self.labels), steps)
