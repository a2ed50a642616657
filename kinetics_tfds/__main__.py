"""The main job on its built-in default: `python -m kinetics_tfds` (installed as `kinetics-demo`).

Generates a small Kinetics-format manual folder (DeepMind's CSV dialect, CVDF's clip folders,
synthetic clips whose class is their direction of motion), builds it with the real kinetics400
builder, trains I3D on it briefly from scratch and evaluates it on the held-out clips, and says in a
few lines where the dataset is, what it holds, how accurate the model is and how fast it ran
(everything in work_dir/result.json; the full log in work_dir/kinetics_tfds.log, or on the terminal with
-v 0). Nothing is downloaded. Clips are small (8 frames of 32 pixels) so that this takes minutes on
two CPU cores.

  python -m kinetics_tfds                     # build, train 150 steps, evaluate
  python -m kinetics_tfds --train_steps=0     # build the sample only
"""

import contextlib
import dataclasses
import io
import json
import logging as std_logging
import os
import shutil

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

import kinetics_tfds
from kinetics_tfds import command
from kinetics_tfds import motion_clips
from kinetics_tfds.training import config as config_lib


@dataclasses.dataclass(frozen=True)
class Settings:
  work_dir: str = command.setting(
    os.path.join("~", "kinetics_tfds", "sample"),
    "Where the manual folder (manual/), the prepared dataset (data/), the I3D run (i3d/, replaced by each run), "
    "result.json and the log go.",
  )
  train_clips_per_class: int = command.setting(12, "Training clips per class.", lower_bound=1)
  validation_clips_per_class: int = command.setting(4, "Validation clips per class.", lower_bound=1)
  train_steps: int = command.setting(150, "I3D training steps of 8 clips; 0: only build.", lower_bound=0)


command.define_flags(Settings, __name__)

RESULT_FILE, LOG_FILE = "result.json", "kinetics_tfds.log"
_CLIP_SECONDS = 2  # Each sample clip is annotated with its own length, as a real clip is: it is built whole.
# TFDS's notes on a config passed as an object and on its own use of a deprecated field: the log file keeps them.
_LOG_ONLY = ("Using custom data configuration", "`FeatureConnector.dtype` is deprecated")

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
  work_dir = os.path.expanduser(work_dir)
  manual_dir = os.path.join(work_dir, "manual")
  if not os.path.isdir(manual_dir):
    motion_clips.make_manual_dir(
      manual_dir,
      clips_per_class={"train": train_clips, "validation": validation_clips},
      seconds=_CLIP_SECONDS,
      segment_s=_CLIP_SECONDS,
    )
  # One process: the sample's 64 small clips take seconds, less than starting a pool of workers.
  builder = tfds.builder("kinetics400", config=SAMPLE_CONFIG, data_dir=os.path.join(work_dir, "data"), num_workers=1)
  with contextlib.redirect_stdout(io.StringIO()) as printed:  # TFDS prints "Downloading and preparing ...".
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  if printed.getvalue().strip():
    logging.info("%s", printed.getvalue().strip())
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


def train_and_evaluate(builder: tfds.core.DatasetBuilder, work_dir: str, train_steps: int, printer=print) -> dict:
  """Trains I3D from scratch on the sample and evaluates it on the validation split; `printer` gets progress lines.

  Its model_dir, work_dir/i3d, is emptied first: every run trains from scratch rather than resuming, and runs do not
  pile up (each leaves ~280 MB of weights and checkpoint). The input pipeline keeps its order, so with the seeded
  initialisation every run learns the same weights and prints the same accuracy; on the sample's small clips that
  costs no measurable speed."""
  from kinetics_tfds.training import run  # pylint: disable=g-import-not-at-top  (Keras: not for --help)

  model_dir = os.path.join(os.path.expanduser(work_dir), "i3d")
  shutil.rmtree(model_dir, ignore_errors=True)
  config = config_lib.from_scratch_on_small_clips(
    model_dir, train_steps, frame_stride=1, random_flip=False, deterministic=True, log_every=max(1, train_steps // 6)
  )
  summary = run.run(config, builder=builder, printer=printer)
  keys = ("top1", "top5", "videos", "steps", "final_loss", "train_clips_per_second", "eval_clips_per_second")
  return {"model_dir": model_dir, **{key: summary[key] for key in keys}}


def built_lines(built: dict) -> list[str]:
  """Where the dataset is and what it holds, in a few lines."""
  splits = ", ".join(f"{count} {split}" for split, count in built["splits"].items())
  return [
    f"Built {built['dataset']}: {splits} clips of {len(built['classes'])} classes "
    f"({', '.join(built['classes'])}), {'x'.join(map(str, built['video_shape_of_first_example']))} each",
    f"  in {built['data_dir']}",
    f"  read it with {built['load_with']}",
  ]


def i3d_lines(i3d: dict) -> list[str]:
  """How accurate and how fast the model is, in two lines."""
  return [
    f"I3D after {i3d['steps']} steps: top-1 {i3d['top1']:.3f}, top-5 {i3d['top5']:.3f} on {i3d['videos']} held-out "
    f"videos; training {i3d['train_clips_per_second']:.1f} clips/s, evaluation {i3d['eval_clips_per_second']:.1f} "
    "clips/s",
    f"  weights, summary.json and TensorBoard logs in {i3d['model_dir']}",
  ]


def _log_quietly(work_dir: str) -> None:
  """The whole log to work_dir's log file; warnings alone to the terminal, unless -v/--verbosity was given."""
  handler = std_logging.FileHandler(os.path.join(work_dir, LOG_FILE), mode="w")
  handler.setFormatter(logging.PythonFormatter())
  std_logging.getLogger().addHandler(handler)  # absl's logger hands its records to the root logger's handlers.
  if not flags.FLAGS["verbosity"].present:
    terminal = logging.get_absl_handler()
    terminal.setLevel(std_logging.WARNING)
    terminal.addFilter(lambda record: not record.getMessage().startswith(_LOG_ONLY))


def _progress(line: str) -> None:
  logging.info("%s", line)
  print(f"  {line}", flush=True)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = command.from_flags(Settings)
  work_dir = os.path.expanduser(settings.work_dir)
  os.makedirs(work_dir, exist_ok=True)
  _log_quietly(work_dir)
  command.import_tensorflow()
  builder = build_sample(work_dir, settings.train_clips_per_class, settings.validation_clips_per_class)
  result = {"built": describe(builder)}
  print("\n".join(built_lines(result["built"])), flush=True)
  if settings.train_steps:
    print(f"Training I3D from scratch on {builder.info.splits['train'].num_examples} clips:", flush=True)
    verbose = flags.FLAGS["verbosity"].present  # Then the log on the terminal has the progress lines.
    result["i3d"] = train_and_evaluate(builder, work_dir, settings.train_steps, logging.info if verbose else _progress)
    print("\n".join(i3d_lines(result["i3d"])))
  with open(os.path.join(work_dir, RESULT_FILE), "w") as f:
    json.dump(result, f, indent=1)
  print(f"Everything measured: {os.path.join(work_dir, RESULT_FILE)}; the log: {os.path.join(work_dir, LOG_FILE)}")


def run_main() -> None:
  """`python -m kinetics_tfds`, installed as `kinetics-demo`."""
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
