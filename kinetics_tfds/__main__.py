"""The main job on its built-in default: `python -m kinetics_tfds`.

Generates a small Kinetics-format manual folder (DeepMind's CSV dialect, CVDF's clip folders,
synthetic clips whose class is their direction of motion), builds it with the real kinetics400
builder, trains I3D on it briefly from scratch and evaluates it on the held-out clips, and prints
one JSON line: where the dataset is and what it holds, accuracy and clips/s. Nothing is downloaded.
Clips are small (8 frames of 32 pixels) so that this takes minutes on two CPU cores.
"""

import json
import os
import shutil
import tempfile

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

import kinetics_tfds
from kinetics_tfds import command
from kinetics_tfds import motion_clips
from kinetics_tfds.training import run

_WORK_DIR = flags.DEFINE_string(
  "work_dir",
  os.path.join(tempfile.gettempdir(), "kinetics_tfds_sample"),
  "Where the manual folder (manual/), the prepared dataset (data/) and the I3D run (i3d/, replaced by each run) go.",
)
_TRAIN_CLIPS = flags.DEFINE_integer("train_clips_per_class", 12, "Training clips per class.")
_VALIDATION_CLIPS = flags.DEFINE_integer("validation_clips_per_class", 4, "Validation clips per class.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 150, "I3D training steps of 8 clips; 0: only build.")

SAMPLE_CONFIG = kinetics_tfds.KineticsConfig(
  name="sample_motion",
  fps=25.0,
  short_side=80,
  jpeg_quality=90,
  num_classes=len(motion_clips.MOTIONS),
  description="The built-in sample: 4 classes of synthetic motion, 2 s clips, short side 80.",
)


def build_sample(work_dir: str, train_clips: int, validation_clips: int) -> tfds.core.DatasetBuilder:
  """Writes the sample manual folder once and builds it with the kinetics400 builder."""
  manual_dir = os.path.join(work_dir, "manual")
  if not os.path.isdir(manual_dir):
    motion_clips.make_manual_dir(manual_dir, clips_per_class={"train": train_clips, "validation": validation_clips})
  # One process: the sample's 64 small clips take seconds, less than starting a pool of workers.
  builder = tfds.builder("kinetics400", config=SAMPLE_CONFIG, data_dir=os.path.join(work_dir, "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def describe(builder: tfds.core.DatasetBuilder) -> dict:
  """Where the dataset is and what it holds, as a JSON-able dict."""
  first = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
  return {
    "dataset": f"{builder.name}/{builder.builder_config.name}",
    "data_dir": os.fspath(builder.data_dir),
    "splits": {name: split.num_examples for name, split in builder.info.splits.items()},
    "classes": builder.info.features["label"].names,
    "video_shape_of_first_example": list(first["video"].shape),
    "load_with": f"tfds.load('{builder.name}/{builder.builder_config.name}', "
    f"data_dir='{os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))}')",
  }


def train_and_evaluate(builder: tfds.core.DatasetBuilder, work_dir: str, train_steps: int) -> dict:
  """Trains I3D from scratch on the sample and evaluates it on the validation split.

  Its model_dir, work_dir/i3d, is emptied first: every run trains from scratch rather than resuming, and runs do not
  pile up (each leaves ~280 MB of weights and checkpoint). The input pipeline keeps its order, so with the seeded
  initialisation every run learns the same weights and prints the same accuracy; on the sample's small clips that
  costs no measurable speed."""
  model_dir = os.path.join(work_dir, "i3d")
  shutil.rmtree(model_dir, ignore_errors=True)
  config = motion_clips.training_config(model_dir, train_steps, frame_stride=1, random_flip=False, deterministic=True)
  summary = run.run(config, builder=builder, printer=logging.info)
  keys = ("top1", "top5", "videos", "steps", "train_clips_per_second", "eval_clips_per_second")
  return {"model_dir": model_dir, **{key: summary[key] for key in keys}}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  builder = build_sample(_WORK_DIR.value, _TRAIN_CLIPS.value, _VALIDATION_CLIPS.value)
  result = {"built": describe(builder)}
  if _TRAIN_STEPS.value:
    result["i3d"] = train_and_evaluate(builder, _WORK_DIR.value, _TRAIN_STEPS.value)
  print(json.dumps(result))


def run_main() -> None:
  """`python -m kinetics_tfds`, installed as `kinetics-demo`."""
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
