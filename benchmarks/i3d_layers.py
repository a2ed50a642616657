"""A training step of I3D with the plain and with the fast layers, with and without XLA, under one Keras backend.

  KERAS_BACKEND=tensorflow python benchmarks/i3d_layers.py
  KERAS_BACKEND=torch python benchmarks/i3d_layers.py

Which layers `InceptionI3D` uses by default rests on this: its rewrites pay only where XLA fuses their small ops.
Builds one model per (compile mode, layers), times `train_on_batch` on host uint8 clips in alternating rounds
(the machine is shared: compare ratios) and prints one JSON line: each one's median step milliseconds and
`fast_speedup` (plain over fast) per compile mode. By default XLA and not on TensorFlow, XLA only on JAX (without
it JAX runs op by op), no XLA on torch (with it Keras calls torch.compile).
"""

import json
import statistics
import time

from absl import app
from absl import flags
import keras
import numpy as np

from kinetics_tfds.models import i3d
from kinetics_tfds.training import optimization

_LAYERS = ("plain", "fast")
_DEFAULT_JIT = {"jax": ["true"], "tensorflow": ["true", "false"], "torch": ["false"]}

flags.DEFINE_integer("batch", 2, "Clips per step.")
flags.DEFINE_integer("frames", 16, "Frames per clip.")
flags.DEFINE_integer("size", 96, "Crop side in pixels.")
flags.DEFINE_integer("steps", 6, "Timed steps per round, after two warm-up steps.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds of every model.")
flags.DEFINE_list("jit_compile", None, "Compile modes, of true and false; unset: the backend's useful ones.")
flags.register_validator(
  "jit_compile", lambda modes: not modes or set(modes) <= {"true", "false"}, "--jit_compile takes true and false"
)
flags.DEFINE_enum("precision", "float32", optimization.PRECISIONS, "Compute dtype.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  backend = keras.backend.backend()
  modes = FLAGS.jit_compile or _DEFAULT_JIT[backend]
  optimization.set_precision(FLAGS.precision)
  rng = np.random.RandomState(0)
  clips = rng.randint(0, 256, (FLAGS.batch, FLAGS.frames, FLAGS.size, FLAGS.size, 3)).astype("uint8")
  labels = rng.randint(0, 400, FLAGS.batch)
  models = {}
  for mode in modes:
    for layers in _LAYERS:
      model = i3d.InceptionI3D(400, input_shape=clips.shape[1:], fast=layers == "fast")
      model.compile(
        optimization.optimizer("sgd", 0.01, momentum=0.9),
        loss=optimization.SparseCrossentropy(400),
        jit_compile=mode == "true",
      )
      for _ in range(2):
        model.train_on_batch(clips, labels)
      models[mode, layers] = model
  times = {key: [] for key in models}
  for _ in range(FLAGS.rounds):
    for key, model in models.items():
      for _ in range(FLAGS.steps):
        start = time.perf_counter()
        model.train_on_batch(clips, labels)  # Returns the loss as a number: waits for the step.
        times[key].append(time.perf_counter() - start)
  medians = {key: statistics.median(seconds) * 1e3 for key, seconds in times.items()}
  summary = {
    "backend": backend,
    "precision": FLAGS.precision,
    "shape": {"batch": FLAGS.batch, "frames": FLAGS.frames, "size": FLAGS.size},
    "step_ms": {f"xla_{mode}": {layers: round(medians[mode, layers], 1) for layers in _LAYERS} for mode in modes},
    "fast_speedup": {f"xla_{mode}": round(medians[mode, "plain"] / medians[mode, "fast"], 3) for mode in modes},
    "default_fast": i3d.compiles_by_default(),
  }
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
