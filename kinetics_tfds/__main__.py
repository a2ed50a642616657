"""The main job on its built-in default: `python -m kinetics_tfds`.

Generates a small Kinetics-format manual folder (DeepMind's CSV dialect, CVDF's clip folders,
synthetic clips whose class is their direction of motion), builds it with the real kinetics400
builder, and prints where the dataset is and what it holds. Nothing is downloaded.
"""

import json
import os
import tempfile

from absl import app
from absl import flags
import tensorflow_datasets as tfds

import kinetics_tfds
from kinetics_tfds import sample

_WORK_DIR = flags.DEFINE_string(
    "work_dir",
    os.path.join(tempfile.gettempdir(), "kinetics_tfds_sample"),
    "Where the manual folder (manual/) and the prepared dataset (data/) go.",
)
_TRAIN_CLIPS = flags.DEFINE_integer("train_clips_per_class", 12, "Training clips per class.")
_VALIDATION_CLIPS = flags.DEFINE_integer("validation_clips_per_class", 4, "Validation clips per class.")

SAMPLE_CONFIG = kinetics_tfds.KineticsConfig(
    name="sample_motion",
    fps=25.0,
    short_side=80,
    jpeg_quality=90,
    num_classes=len(sample.MOTIONS),
    description="The built-in sample: 4 classes of synthetic motion, 2 s clips, short side 80.",
)


def build_sample(work_dir: str, train_clips: int, validation_clips: int) -> tfds.core.DatasetBuilder:
  """Writes the sample manual folder once and builds it with the kinetics400 builder."""
  manual_dir = os.path.join(work_dir, "manual")
  if not os.path.isdir(manual_dir):
    sample.make_manual_dir(
        manual_dir, clips_per_class={"train": train_clips, "validation": validation_clips}
    )
  builder = tfds.builder("kinetics400", config=SAMPLE_CONFIG, data_dir=os.path.join(work_dir, "data"))
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


def main(argv):
  del argv
  builder = build_sample(_WORK_DIR.value, _TRAIN_CLIPS.value, _VALIDATION_CLIPS.value)
  print(json.dumps({"built": describe(builder)}))


if __name__ == "__main__":
  app.run(main)
