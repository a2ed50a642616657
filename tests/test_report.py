"""`python -m kinetics_tfds.report` on real builds: the shared real clips, and the main job's sample."""

import collections
import csv
import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import conftest
from conftest import SMALL_CLIP
import kinetics_tfds
from kinetics_tfds import __main__ as main_job
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips
from kinetics_tfds import report

_LABELS = conftest.SHARED_LABELS
_REAL = conftest.SHARED_CLIPS
_CONFIG = kinetics_tfds.KineticsConfig(name="report_test", fps=10.0, short_side=64, num_classes=len(_LABELS))
_shared_manual_dir = conftest.shared_manual_dir


@pytest.fixture(scope="module")
def shared_build(shared_data, tmp_path_factory):
  root = tmp_path_factory.mktemp("report_shared")
  rows = _shared_manual_dir(root / "manual", shared_data / "kinetics" / "videos")
  builder = tfds.builder("kinetics400", config=_CONFIG, data_dir=str(root / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  out = root / "report"
  data = report.write(report.open_dataset("kinetics400/report_test", str(root / "data")), str(out), sheet_frames=4)
  return builder, rows, out, data


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
  """The main job's own sample (python -m kinetics_tfds), at 2 train and 1 validation clips per class."""
  work = tmp_path_factory.mktemp("report_sample")
  builder = main_job.build_sample(str(work), 2, 1)
  out = work / "report"
  data = report.write(builder, str(out))
  return builder, out, data


def _held(builder) -> dict:
  """What the dataset holds, read through TFDS's own decoding (not the report's path)."""
  held = {}
  for split in builder.info.splits:
    held[split] = {ex["key"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}
  return held


def _check_numbers(builder, data: dict, annotated: dict[str, int]) -> None:
  held = _held(builder)
  names = builder.info.features["label"].names
  skipped = list(csv.DictReader(open(pathlib.Path(builder.data_dir) / "skipped_clips.csv")))
  for split, clips in held.items():
    values = data["splits"][split]
    frames = [len(ex["video"]) for ex in clips.values()]
    disk = sum(p.stat().st_size for p in pathlib.Path(builder.data_dir).glob(f"kinetics400-{split}.tfrecord*"))
    split_skips = [r for r in skipped if r["split"] == split]
    assert values["built"] == len(clips) == builder.info.splits[split].num_examples
    assert values["annotated"] == annotated[split]
    assert values["skipped"] == len(split_skips) == annotated[split] - len(clips)
    assert sum(values["skipped_by_reason"].values()) == len(split_skips)
    assert values["bytes_on_disk"] == disk
    assert values["frames_total"] == sum(frames)
    assert (values["frames_min"], values["frames_max"]) == (min(frames), max(frames))
    assert sum(values["frames_histogram"]["counts"]) == len(clips)
    fps = collections.Counter(str(round(float(ex["source_fps"]), 3)) for ex in clips.values())
    assert {str(float(k)): v for k, v in values["source_fps"].items()} == fps
    by_class = collections.Counter(names[ex["label"]] for ex in clips.values())
    assert {n: c[split] for n, c in data["clips_per_class"].items()} == {n: by_class[n] for n in names}


class _Cells(html.parser.HTMLParser):
  """Every number shown in the page's tables, with its data-key."""

  def __init__(self):
    super().__init__()
    self.cells, self._key, self._in_td = [], None, False

  def handle_starttag(self, tag, attrs):
    if tag in ("td", "span"):
      self._in_td, self._key = True, dict(attrs).get("data-key")

  def handle_endtag(self, tag):
    if tag in ("td", "span"):
      self._in_td = False

  def handle_data(self, text):
    if self._in_td and text.strip():
      self.cells.append((self._key, text.strip()))


def _json_value(data: dict, key: str):
  if ".skipped_by_reason." in key:
    _, split, reason = key.split(".", 2)
    return data["splits"][split]["skipped_by_reason"][reason.split(".", 1)[1]]
  value = data
  for part in key.split("."):
    value = value[int(part)] if isinstance(value, list) else value[part]
  return value


def _check_page(out: pathlib.Path, data: dict) -> None:
  """Each number in the HTML is a report.json number with its key; the figures are valid PNGs."""
  page = (out / report.HTML_FILE).read_text()
  parser = _Cells()
  parser.feed(page)
  numbers = [(k, t) for k, t in parser.cells if t.replace(".", "").isdigit()]
  assert numbers and all(k is not None for k, _ in numbers), numbers
  for key, text in numbers:
    assert text == str(_json_value(data, key)), key
  assert json.loads((out / report.JSON_FILE).read_text())["splits"] == json.loads(json.dumps(data["splits"]))
  for name in data["figures"].values():
    assert cv2.imread(str(out / name)) is not None, name
  assert page.count('src="data:image/png;base64,') == len(data["figures"])


def _check_sheet(builder, out: pathlib.Path, data: dict) -> None:
  """Each contact-sheet tile is its clip's frame, as TFDS decodes it, resized to TILE_HEIGHT."""
  held = _held(builder)
  sheet = cv2.cvtColor(cv2.imread(str(out / report.SHEET_FILE)), cv2.COLOR_BGR2RGB)
  assert data["contact_sheet"]
  for tile in data["contact_sheet"]:
    split = next(s for s in held if tile["key"] in held[s])
    frame = held[split][tile["key"]]["video"][tile["frame"]]
    expected = cv2.resize(frame, (tile["width"], tile["height"]), interpolation=cv2.INTER_AREA)
    shown = sheet[tile["y"] : tile["y"] + tile["height"], tile["x"] : tile["x"] + tile["width"]]
    np.testing.assert_array_equal(shown, expected, err_msg=f"{tile['key']} frame {tile['frame']}")
    names = builder.info.features["label"].names
    assert names[held[split][tile["key"]]["label"]] == tile["label"]


def _chromium_opens(page: pathlib.Path, screenshot: pathlib.Path) -> None:
  """Headless Chromium renders the page (where it is installed) and the screenshot is not blank."""
  binary = shutil.which("chromium") or shutil.which("chromium-browser")
  if not binary:
    return  # Skipped where Chromium is not installed; the rest of the checks still ran.
  args = [
    binary,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--window-size=1000,1400",
    "--enable-logging=stderr",
    "--v=0",
  ]
  result = subprocess.run(
    args + [f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "CONSOLE" not in result.stderr and "Failed to load" not in result.stderr, result.stderr[-3000:]
  shot = cv2.imread(str(screenshot))
  assert shot is not None and shot.std() > 5
  dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
  assert '<table id="splits">' in dom and dom.count("<img") == page.read_text().count("<img")


def test_report_on_the_shared_real_clips(shared_build, tmp_path):
  builder, rows, out, data = shared_build
  _check_numbers(builder, data, {split: len(r) for split, r in rows.items()})
  reasons = data["splits"]["validation"]["skipped_by_reason"]
  assert reasons == {"missing file": 1, "truncated or corrupt": 1}
  assert len(data["splits"]["train"]["source_fps"]) >= 3  # 25, 28, 30 fps sources.
  _check_page(out, data)
  _check_sheet(builder, out, data)
  _chromium_opens(out / report.HTML_FILE, tmp_path / "shared.png")


def test_report_on_the_main_jobs_sample(sample_build, tmp_path):
  builder, out, data = sample_build
  _check_numbers(builder, data, {"train": 8, "validation": 4})
  assert [t["class"] for t in data["thinnest_classes"]] == _LABELS  # Two clips each: ties by name.
  _check_page(out, data)
  _check_sheet(builder, out, data)
  assert {t["label"] for t in data["contact_sheet"]} == set(_LABELS)
  _chromium_opens(out / report.HTML_FILE, tmp_path / "sample.png")


_PARTIAL = [f"class {i:02d}" for i in range(40)]
# Clips per class where there are any: none of these is among the 8 that an even spread over all 40 classes picks.
_WITH_CLIPS = {"class 02": 2, "class 03": 1, "class 30": 1}


@pytest.fixture(scope="module")
def partial_manual_dir(tmp_path_factory) -> pathlib.Path:
  """A partial download: 40 classes annotated, clips of 3 of them; every other row's file is missing."""
  root = tmp_path_factory.mktemp("report_partial")
  rows = []
  for i, label in enumerate(_PARTIAL):
    for n in range(_WITH_CLIPS.get(label, 1)):
      clip = annotations.Clip(f"part{i:03d}{n:04d}", 0, 1, label, "train")
      rows.append(clip)
      if label in _WITH_CLIPS:
        motion_clips.write_clip(str(root / "train" / f"{clip.key}.mp4"), seed=len(rows), **SMALL_CLIP)
  motion_clips.write_annotations(str(root / "kinetics400"), "train", rows)
  return root


@pytest.mark.parametrize(
  "config, classes",
  [
    (kinetics_tfds.KineticsConfig(name="partial", fps=10.0, short_side=48, num_classes=len(_PARTIAL)), _PARTIAL),
    # A subset whose classes mostly have no clip either.
    (
      kinetics_tfds.KineticsConfig(
        name="subset", fps=10.0, short_side=48, num_classes=len(_PARTIAL), classes=_PARTIAL[:4] + _PARTIAL[30:]
      ),
      _PARTIAL[:4] + _PARTIAL[30:],
    ),
  ],
)
def test_contact_sheet_shows_clips_of_a_partial_build(partial_manual_dir, tmp_path, config, classes):
  builder = tfds.builder("kinetics400", config=config, data_dir=str(tmp_path / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(partial_manual_dir)))
  names = builder.info.features["label"].names
  assert names == classes
  data = report.write(builder, str(tmp_path / "report"))
  assert {t["label"] for t in data["contact_sheet"]} == set(_WITH_CLIPS)
  _check_sheet(builder, tmp_path / "report", data)
  assert data["classes_without_clips"] == len(names) - len(_WITH_CLIPS)
  assert data["thinnest_classes"] == [
    {"class": "class 03", "clips": 1},
    {"class": "class 30", "clips": 1},
    {"class": "class 02", "clips": 2},
  ]
  _check_page(tmp_path / "report", data)
  # Fewer places than classes with clips: spread over those, first and last kept.
  two = report.write(builder, str(tmp_path / "two"), sheet_classes=2)
  assert list(dict.fromkeys(t["label"] for t in two["contact_sheet"])) == ["class 02", "class 30"]


def test_command_line(sample_build, tmp_path):
  builder, _, data = sample_build
  data_dir = pathlib.Path(builder.data_dir).parents[2]
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kinetics_tfds.__file__).parents[1])}
  command = [
    sys.executable,
    "-m",
    "kinetics_tfds.report",
    "--dataset=kinetics400/sample_motion",
    f"--data_dir={data_dir}",
  ]
  ok = subprocess.run(command + [f"--out={tmp_path / 'cli'}"], capture_output=True, text=True, env=env, timeout=300)
  assert ok.returncode == 0, ok.stderr[-3000:]
  printed = json.loads(ok.stdout.strip().splitlines()[-1])
  assert printed["splits"]["train"] == {k: data["splits"]["train"][k] for k in ("annotated", "built", "skipped")}
  assert (tmp_path / "cli" / report.HTML_FILE).exists()
  bad = subprocess.run(
    command[:3] + ["--dataset=kinetics400/never_built", f"--data_dir={data_dir}", f"--out={tmp_path}"],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert bad.returncode == 1 and "never_built: no prepared dataset" in bad.stderr
