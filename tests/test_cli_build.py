"""End to end: `tfds build` as a user runs it, on a manual folder mixing good clips and every bad file, and on a bad
annotation file (one line, from the exception hook that `tfds build` gets and a plain import does not)."""

import csv
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest
import tensorflow_datasets as tfds

from conftest import SHARED
from conftest import SMALL_CLIP
from conftest import TFDS
from conftest import TINY_CONFIG
from conftest import our_stderr
from conftest import run_command
from conftest import tfds_build
from conftest import write_latin1_annotations
import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips
from kinetics_tfds.build import skipped as skipped_lib

_PACKAGE = pathlib.Path(kinetics_tfds.__file__).parent
_FILLER = [f"filler class {i:03d}" for i in range(396)]  # With the 4 motions: 400 classes.


def _clip(n, label, split="train"):
  return annotations.Clip(f"clip{n:07d}", n, n + 10, label, split)


def _messy_manual_dir(root: pathlib.Path, shared_videos: pathlib.Path | None) -> dict:
  """Writes the manual folder; returns {key: expected outcome} ('ok' or a reason prefix)."""
  expect, rows = {}, {"train": [], "validation": []}

  def add(n, label, split, relative, outcome, writer=None):
    clip = _clip(n, label, split)
    rows[split].append(clip)
    expect[(split, clip.key)] = outcome
    if relative is not None:
      path = root / relative.format(key=clip.key, id=clip.youtube_id)
      path.parent.mkdir(parents=True, exist_ok=True)
      (writer or (lambda p: motion_clips.write_clip(str(p), motion=motion_clips.MOTIONS[label], **SMALL_CLIP)))(path)
    return clip

  add(1, "swiping left", "train", "train/part_0/{key}.mp4", "ok")  # CVDF shard folder.
  add(2, "swiping right", "train", "train/swiping right/{key}.mkv", "ok")  # Label verbatim.
  add(3, "swiping up", "train", "train/swiping_up/{key}.avi", "ok")  # torchvision-style folder.
  add(4, "swiping down", "train", "flat/{key}.webm", "ok")
  add(
    5,
    "swiping left",
    "train",
    "full/{id}.mp4",
    "ok",  # Full-length video, cut to 5..15 s.
    lambda p: motion_clips.write_clip(str(p), **{**SMALL_CLIP, "seconds": 16.0}),
  )
  replaced = add(6, "swiping up", "train", "replacement/{key}.mp4", "ok")
  (root / "train" / f"{replaced.key}.mp4").write_bytes(b"")  # The corrupt original: replacement wins.
  (root / "train" / f"._{replaced.key}.mp4").write_bytes(b"\0AppleDouble")  # macOS litter, ignored.
  add(7, "swiping down", "train", None, "missing file")
  add(8, "swiping left", "train", "train/{key}.mp4", "zero-byte file", lambda p: p.write_bytes(b""))
  add(9, "swiping right", "train", "train/{key}.mp4", "unreadable", lambda p: p.write_text("<html>404</html>"))
  add(10, "swiping up", "train", "train/{key}.mp4", "unreadable", _truncated)
  add(11, "swiping left", "validation", "val/{key}.mp4", "ok")
  add(12, "swiping right", "validation", "val/{key}.mp4", "ok")
  if shared_videos:
    copy = lambda name: lambda p: shutil.copy(shared_videos / name, p)  # noqa: E731
    add(13, "swiping up", "validation", "val/{key}.mov", "ok", copy("decord_video_90.mov"))
    add(14, "swiping down", "validation", "val/{key}.mp4", "ok", copy("mmaction2_demo.mp4"))  # 28 fps.
    add(15, "swiping left", "validation", "val/{key}.mp4", "truncated or corrupt", copy("decord_corrupted.mp4"))
  folder = root / "kinetics400"
  filler = [_clip(100 + i, label) for i, label in enumerate(_FILLER)]
  motion_clips.write_annotations(str(folder), "train", rows["train"] + filler)
  for clip in filler:
    expect[("train", clip.key)] = "missing file"
  motion_clips.write_annotations(str(folder), "validation", rows["validation"])
  with open(folder / "validate.csv", "a") as f:
    f.write("not a class,clip0000090,1,11,validate\n")  # Unknown label.
    f.write("swiping up,../../../etc,1,11,validate\n")  # Escaping id.
    f.write("swiping up,clip0000091,oops\n")  # Malformed row.
  expect[("validation", "clip0000090_000001_000011")] = "unknown label"
  expect[("validation", "../../../etc_000001_000011")] = "malformed row"
  expect[("validation", f"{folder / 'validate.csv'}:{len(rows['validation']) + 4}")] = "malformed row"
  return expect


def _truncated(path):
  motion_clips.write_clip(str(path), **SMALL_CLIP)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _run(args, cwd=None):
  result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
  return result


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory, request):
  shared = SHARED / "data" / "kinetics" / "videos"
  root = tmp_path_factory.mktemp("cli")
  manual, data_dir = root / "manual", root / "data"
  expect = _messy_manual_dir(manual, shared if shared.is_dir() else None)
  result = _run(tfds_build("kinetics400", manual, data_dir, "small_10fps_128"))
  return expect, data_dir, result.stdout + result.stderr


def test_every_good_clip_is_in_the_output(cli_build):
  expect, data_dir, _ = cli_build
  built = tfds.builder("kinetics400/small_10fps_128", data_dir=str(data_dir))
  for split in ("train", "validation"):
    keys = {ex["key"].decode() for ex in tfds.as_numpy(built.as_dataset(split=split))}
    assert keys == {k for (s, k), outcome in expect.items() if s == split and outcome == "ok"}


def test_examples_hold_resampled_resized_frames(cli_build):
  _, data_dir, _ = cli_build
  built = tfds.builder("kinetics400/small_10fps_128", data_dir=str(data_dir))
  names = built.info.features["label"].names
  assert len(names) == 400 and names == sorted(names)
  for ex in tfds.as_numpy(built.as_dataset(split="train")):
    video, key = ex["video"], ex["key"].decode()
    assert min(video.shape[1:3]) == 128 and video.shape[3] == 3
    cut_from_full_length = key == "clip0000005_000005_000015"  # Its 10 s segment, else 1 s clips.
    assert video.shape[0] == (100 if cut_from_full_length else 10)
    assert names[ex["label"]] in motion_clips.MOTIONS
    assert key == annotations.clip_key(ex["youtube_id"].decode(), ex["time_start"], ex["time_end"])


def test_rotated_and_odd_fps_real_clips(cli_build):
  expect, data_dir, _ = cli_build
  if ("validation", "clip0000013_000013_000023") not in expect:
    pytest.skip("../shared is missing: no real clips")
  built = tfds.builder("kinetics400/small_10fps_128", data_dir=str(data_dir))
  shapes = {
    ex["key"].decode(): (ex["video"].shape, ex["source_fps"])
    for ex in tfds.as_numpy(built.as_dataset(split="validation"))
  }
  assert shapes["clip0000013_000013_000023"][0][1:3] == (227, 128)  # Portrait after rotation.
  assert shapes["clip0000014_000014_000024"][0][0] == 100  # 10 s of 28 fps at 10 fps.
  assert shapes["clip0000014_000014_000024"][1] == 28.0


def test_skipped_clips_csv_lists_every_clip_not_built(cli_build):
  expect, data_dir, log = cli_build
  version_dir = data_dir / "kinetics400" / "small_10fps_128" / "1.0.0"
  with open(version_dir / skipped_lib.FILE) as f:
    rows = list(csv.DictReader(f))
  assert {(r["split"], r["key"]) for r in rows} == {k for k, o in expect.items() if o != "ok"}
  for r in rows:
    assert r["reason"].startswith(expect[(r["split"], r["key"])]), r
  assert "Skipped train: 397 clips, missing file." in log


def test_tfds_load_without_importing_the_package(cli_build):
  _, data_dir, _ = cli_build
  code = (
    "import sys, tensorflow_datasets as tfds\n"
    f"ds = tfds.load('kinetics400/small_10fps_128', split='validation', data_dir={str(data_dir)!r})\n"
    "assert 'kinetics_tfds' not in sys.modules\n"
    "print(sum(1 for _ in ds))\n"
  )
  result = _run([sys.executable, "-c", code], cwd="/")
  assert result.stdout.split()[-1] == str(
    sum(1 for (s, _), o in cli_build[0].items() if s == "validation" and o == "ok")
  )


def test_path_form_inside_the_package_with_a_user_config(tmp_path):
  manual = tmp_path / "manual"
  written = motion_clips.make_manual_dir(
    str(manual), archive_name="kinetics700", clips_per_class={"train": 1}, **SMALL_CLIP
  )
  config = '{"name": "tiny", "fps": 5, "short_side": 32, "num_classes": 4}'
  result = _run(
    [
      TFDS,
      "build",
      "kinetics700",
      "--config",
      config,
      "--manual_dir",
      str(manual),
      "--data_dir",
      str(tmp_path / "data"),
    ],
    cwd=_PACKAGE,
  )
  # 1 s clips of 10 s segments: the workers' warnings, in TFDS's command's log format as the rest of its log.
  assert "WARNING[examples.py]: " in result.stderr and "WARNING:absl:" not in result.stderr, result.stderr[-3000:]
  ds = tfds.load("kinetics700/tiny", split="train", data_dir=str(tmp_path / "data"))
  videos = [ex["video"].shape for ex in ds]
  assert len(videos) == len(written["train"]) and all(s[0] == 5 and min(s[1:3]) == 32 for s in videos)


def test_annotations_are_downloaded_when_absent(tmp_path):
  """No annotations in the manual folder: the DeepMind archive is downloaded into the download folder."""
  staging = tmp_path / "staging"
  written = motion_clips.make_manual_dir(str(staging), clips_per_class={"train": 1, "validation": 1}, **SMALL_CLIP)
  archive = tmp_path / "served" / "kinetics400.tar.gz"
  archive.parent.mkdir()
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(staging / "kinetics400", arcname="kinetics400")
  shutil.rmtree(staging / "kinetics400")
  server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0),
    lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(archive.parent)),
  )
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    built = tfds.builder(
      "kinetics400",
      config=kinetics_tfds.KineticsConfig(name="dl", fps=5, short_side=32, num_classes=4),
      data_dir=str(tmp_path / "data"),
      annotations_url=f"http://127.0.0.1:{server.server_port}/{{name}}.tar.gz",
      num_workers=1,
    )
    built.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(staging)))
  finally:
    server.shutdown()
  assert {s: built.info.splits[s].num_examples for s in ("train", "validation")} == {
    s: len(c) for s, c in written.items()
  }
  assert "kinetics400.tar.gz" in os.listdir(tmp_path / "data" / "downloads")  # Kept for the next build.


def test_tfds_build_prints_one_line_for_a_bad_annotation_file(tmp_path):
  manual = tmp_path / "manual"
  write_latin1_annotations((manual / "kinetics400").mkdir(parents=True) or manual / "kinetics400/train.csv")
  done = run_command(
    tfds_build("kinetics400", manual, tmp_path / "data", json.dumps(TINY_CONFIG)),
    cwd=tmp_path,
  )
  assert done.returncode == 1
  assert "Traceback" not in done.stderr
  last = our_stderr(done.stderr)[-1]
  assert last.startswith("tfds: error: ") and str(manual / "kinetics400/train.csv") in last, done.stderr


def test_importing_the_package_leaves_the_exception_hook():
  """A library import must not change a notebook's behaviour: only commands and `tfds build` install the hook."""
  code = "import sys, kinetics_tfds; print(sys.excepthook is sys.__excepthook__)"
  done = run_command([sys.executable, "-c", code])
  assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr[-3000:]
