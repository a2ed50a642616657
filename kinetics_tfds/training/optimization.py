"""Optimizer, learning-rate schedule, loss and numeric precision of a run.

DeepMind trained I3D with SGD (momentum 0.9), the learning rate divided by 10 twice, weight decay 1e-7 and dropout
0.5; cosine decay with a linear warmup is the usual alternative today.
"""

import keras
from keras import ops

from kinetics_tfds.training.config import PRECISIONS
from kinetics_tfds.training.config import SCHEDULES


def set_precision(precision: str) -> None:
  """Sets the global dtype policy; build the model after this. Keras' compile wraps the optimizer in a
  LossScaleOptimizer under mixed_float16, so float16 gradients do not underflow."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  keras.mixed_precision.set_global_policy(precision)


def learning_rate(schedule: str, base: float, total_steps: int, *, step_fractions=(0.5, 0.8), warmup_fraction=0.05):
  """`steps`: base, base/10, base/100 from the given fractions of training on; `cosine`: linear warmup from 0 over
  `warmup_fraction` of training, then cosine decay to 0; `constant`: base throughout."""
  if schedule == "steps":
    boundaries = [max(1, int(f * total_steps)) for f in step_fractions]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries, [base / 10**i for i in range(len(boundaries) + 1)]
    )
  if schedule == "cosine":
    warmup = int(warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
      0.0 if warmup else base, max(1, total_steps - warmup), warmup_target=base if warmup else None, warmup_steps=warmup
    )
  if schedule == "constant":
    return base
  raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


def optimizer(name: str, lr, *, momentum=0.9, weight_decay=0.0):
  """SGD with momentum (DeepMind's) or Adam; weight decay spares batch-norm offsets and biases."""
  if name == "sgd":
    opt = keras.optimizers.SGD(lr, momentum=momentum, weight_decay=weight_decay or None)
  elif name == "adam":
    opt = keras.optimizers.AdamW(lr, weight_decay=weight_decay) if weight_decay else keras.optimizers.Adam(lr)
  else:
    raise ValueError(f"optimizer must be sgd or adam, got {name!r}")
  if weight_decay:
    opt.exclude_from_weight_decay(var_names=["beta", "bias"])
  return opt


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class SparseCrossentropy(keras.losses.Loss):
  """Cross-entropy of integer labels against logits with label smoothing, which Keras' sparse loss lacks."""

  def __init__(self, num_classes: int, label_smoothing: float = 0.0, name="sparse_crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.label_smoothing = label_smoothing

  def call(self, y_true, y_pred):
    one_hot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes, dtype=y_pred.dtype)
    return keras.losses.categorical_crossentropy(
      one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing
    )

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}


def metrics(num_classes: int):
  """Top-1 and top-5 accuracy; with fewer than 5 classes "top5" is over all of them (torch's top-k refuses k > n)."""
  return [
    keras.metrics.SparseCategoricalAccuracy("top1"),
    keras.metrics.SparseTopKCategoricalAccuracy(min(5, num_classes), "top5"),
  ]
