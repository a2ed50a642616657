"""Whole-clip evaluation over clips of many lengths: one clip per call at its own length, against padded batches.

  KERAS_BACKEND=jax python benchmarks/whole_clip_eval.py
  KERAS_BACKEND=jax python benchmarks/whole_clip_eval.py --size=224 --full_frames=250 --clips=256  # accelerator

Kinetics' clips are 10 s (250 frames at 25 fps) but those cut short where their video ends, so whole-clip
evaluation meets many lengths, and under XLA each new length is a program to compile: on an accelerator, where a
clip runs in milliseconds, compiling can take most of an evaluation. The padded path is what `train.py` runs on
an accelerator: `InceptionI3D(padded_clips=True)` over clips padded as `eval_dataset(pad_period=i3d.PADDING_PERIOD)`
pads them, batched by padded length, a batch short of --batch filled up under XLA. Both paths run the same clips
with the same weights, twice (the second pass finds every program compiled), and one JSON line gives each path's
seconds per pass, the distinct lengths before and after padding, the speedups and the largest difference between
the two paths' logits.
"""

import collections
import json
import time

from absl import app
from absl import flags
import keras
import numpy as np

from kinetics_tfds import sampling
from kinetics_tfds.models import i3d
from kinetics_tfds.training import loop

flags.DEFINE_integer("clips", 48, "Clips evaluated.")
flags.DEFINE_integer("full_frames", 48, "Frames of a whole clip (Kinetics: 250).")
flags.DEFINE_float(
  "short_share", 0.25, "Share of clips cut short, uniform from an eighth of full_frames to full: sets how many lengths."
)
flags.DEFINE_integer("size", 64, "Crop side in pixels (I3D: 224).")
flags.DEFINE_integer("batch", 8, "Clips per padded batch.")
flags.DEFINE_string("weights", "kinetics400", "I3D weights (see InceptionI3D); real ones make padding matter.")

FLAGS = flags.FLAGS


def _lengths(rng):
  short = rng.uniform(size=FLAGS.clips) < FLAGS.short_share
  cut = rng.randint(max(FLAGS.full_frames // 8, 1), FLAGS.full_frames, FLAGS.clips)
  return np.where(short, cut, FLAGS.full_frames)


def _per_clip(model, clips):
  return np.concatenate([loop.predict_batch(model, {"video": clip[None]}, 1) for clip in clips])


def _padded_batches(model, clips):
  """Clips padded (`sampling.padded_frames`) and batched by padded length, as `train.py` evaluates them."""
  frames = [sampling.padded_frames(len(clip), i3d.PADDING_PERIOD) for clip in clips]
  groups = collections.defaultdict(list)
  for index, indices in enumerate(frames):
    groups[len(indices)].append(index)
  logits = np.zeros((len(clips), model.output.shape[-1]), np.float32)
  for indices in groups.values():
    for start in range(0, len(indices), FLAGS.batch):
      rows = indices[start : start + FLAGS.batch]
      batch = {
        "video": np.stack([clips[i][frames[i]] for i in rows]),
        "num_frames": np.array([len(clips[i]) for i in rows], np.int32),
      }
      logits[rows] = loop.predict_batch(model, batch, FLAGS.batch if i3d.compiles_by_default() else 1)
  return logits


def main(argv):
  del argv
  rng = np.random.RandomState(0)
  lengths = _lengths(rng)
  clips = [rng.randint(0, 256, (n, FLAGS.size, FLAGS.size, 3)).astype(np.uint8) for n in lengths]
  weights = None if FLAGS.weights == "none" else FLAGS.weights
  models = {
    "per_clip": i3d.InceptionI3D(weights=weights),
    "padded": i3d.InceptionI3D(weights=weights, padded_clips=True),
  }
  run = {"per_clip": _per_clip, "padded": _padded_batches}
  seconds, logits = collections.defaultdict(list), {}
  for _ in range(2):
    for name, model in models.items():
      start = time.perf_counter()
      logits[name] = run[name](model, clips)
      seconds[name].append(time.perf_counter() - start)
  padded_lengths = [len(sampling.padded_frames(n, i3d.PADDING_PERIOD)) for n in lengths]
  summary = {
    "backend": keras.backend.backend(),
    "jit_compile": i3d.compiles_by_default(),
    "clips": FLAGS.clips,
    "size": FLAGS.size,
    "batch": FLAGS.batch,
    "seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
    "lengths": len(set(lengths.tolist())),
    "padded_lengths": len(set(padded_lengths)),
    "padding_share": round(1 - sum(lengths) / sum(padded_lengths), 3),
    "speedup_first_pass": round(seconds["per_clip"][0] / seconds["padded"][0], 2),
    "speedup_compiled": round(seconds["per_clip"][1] / seconds["padded"][1], 2),
    "max_abs_logit_diff": float(np.abs(logits["per_clip"] - logits["padded"]).max()),
    "max_abs_logit": float(np.abs(logits["per_clip"]).max()),
  }
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
