"""Leakage across versions on the real annotation files, a build that excludes it, and a bad set name (one line)."""

import csv
import functools
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

from conftest import SMALL_CLIP
from conftest import our_stderr
from conftest import run_command
import kinetics_tfds
from kinetics_tfds import motion_clips
from kinetics_tfds import overlap

# The real files in ../shared/data/kinetics/annotations, by the set each holds.
_FILES = {
  "kinetics400:validation": "kinetics400_val_2017.csv",
  "kinetics400:test": "kinetics400_test_2017_unlabeled.csv",
  "kinetics600:validation": "kinetics600_val.csv",
  "kinetics600:test": "kinetics600_test_original_unlabeled.csv",
  "kinetics600:test_2018": "kinetics600_test_augmented_unlabeled.csv",
  "kinetics700:validation_head": "k700_validate_csv_head_from_blog.csv",
}


def _rows(path: pathlib.Path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _independent(path: pathlib.Path) -> tuple[set, set]:
  """(youtube ids, segments) counted here with csv alone."""
  rows = _rows(path)
  return {r["youtube_id"] for r in rows}, {(r["youtube_id"], int(r["time_start"]), int(r["time_end"])) for r in rows}


@pytest.fixture(scope="module")
def table(shared_data, tmp_path_factory):
  folder = shared_data / "kinetics" / "annotations"
  out = tmp_path_factory.mktemp("overlap")
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kinetics_tfds.__file__).parents[1])}
  args = [f"--annotations={name}={folder / file}" for name, file in _FILES.items()]
  result = subprocess.run(
    [sys.executable, "-m", "kinetics_tfds.overlap", *args, f"--out={out}"],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return folder, out, result.stdout, json.loads((out / overlap.JSON_FILE).read_text())


def test_every_pair_matches_an_independent_count(table):
  folder, _, printed, rows = table
  counted = {name: _independent(folder / file) for name, file in _FILES.items()}
  shown = {tuple(line.split()[:2]): [int(x) for x in line.split()[2:]] for line in printed.splitlines()[1:-1]}
  assert len(rows) == len(_FILES) * (len(_FILES) - 1) // 2
  for row in rows:
    (ids_a, segs_a), (ids_b, segs_b) = counted[row["a"]], counted[row["b"]]
    assert (row["a_clips"], row["b_clips"]) == (len(segs_a), len(segs_b))
    assert row["shared_videos"] == len(ids_a & ids_b), row["a"] + " " + row["b"]
    assert row["shared_segments"] == len(segs_a & segs_b), row["a"] + " " + row["b"]
    assert shown[row["a"], row["b"]] == [len(segs_a), len(segs_b), len(ids_a & ids_b), len(segs_a & segs_b)]
  k400_k600 = next(r for r in rows if (r["a"], r["b"]) == ("kinetics400:validation", "kinetics600:validation"))
  assert k400_k600["shared_segments"] == 13566  # DeepMind's lists: most of K400 val is in K600 val.


def test_key_lists_name_the_clips_on_shared_videos(table):
  folder, out, _, rows = table
  ids_400 = _independent(folder / _FILES["kinetics400:validation"])[0]
  expected = sorted(
    f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
    for r in _rows(folder / _FILES["kinetics600:validation"])
    if r["youtube_id"] in ids_400
  )
  listed = (out / "keys" / "kinetics600-validation_on_kinetics400-validation.txt").read_text().split()
  assert listed == sorted(set(expected))
  row = next(r for r in rows if (r["a"], r["b"]) == ("kinetics400:validation", "kinetics600:validation"))
  assert row["b_keys_on_shared_videos"] == listed


@pytest.fixture(scope="module")
def excluded_build(shared_data, tmp_path_factory):
  """K600 validation (the real list) built without K400 validation's videos: a few clips on disk, two of
  them on K400 validation videos."""
  folder = shared_data / "kinetics" / "annotations"
  root = tmp_path_factory.mktemp("exclude")
  manual = root / "manual"
  (manual / "kinetics600").mkdir(parents=True)
  (manual / "kinetics400").mkdir(parents=True)
  shutil.copy(folder / _FILES["kinetics600:validation"], manual / "kinetics600" / "validate.csv")
  shutil.copy(folder / _FILES["kinetics400:validation"], manual / "kinetics400" / "validate.csv")
  ids_400 = _independent(folder / _FILES["kinetics400:validation"])[0]
  rows = _rows(folder / _FILES["kinetics600:validation"])
  on_disk = [r for r in rows if r["youtube_id"] in ids_400][:2] + [r for r in rows if r["youtube_id"] not in ids_400][
    :2
  ]
  for r in on_disk:
    key = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
    motion_clips.write_clip(str(manual / "val" / f"{key}.mp4"), **SMALL_CLIP)
  config = kinetics_tfds.KineticsConfig(
    name="no_k400_val", fps=10.0, short_side=48, exclude=("kinetics400:validation",)
  )
  builder = tfds.builder("kinetics600", config=config, data_dir=str(root / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder, rows, ids_400, on_disk


def test_exclusion_drops_exactly_the_overlapping_clips_and_says_why(excluded_build):
  builder, rows, ids_400, on_disk = excluded_build
  key = lambda r: f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"  # noqa: E731
  overlapping = {key(r) for r in rows if r["youtube_id"] in ids_400}
  with open(pathlib.Path(builder.data_dir) / "skipped_clips.csv", newline="") as f:
    skipped = {r["key"]: r["reason"] for r in csv.DictReader(f)}
  reason = "excluded: same YouTube video as kinetics400:validation"
  assert {k for k, why in skipped.items() if why == reason} == overlapping
  assert len(overlapping) == 13569 + 2  # The 13,569 shared videos; two of them have two K600 val clips.
  built = {ex["key"].decode() for ex in tfds.as_numpy(builder.as_dataset(split="validation"))}
  assert built == {key(r) for r in on_disk if r["youtube_id"] not in ids_400}
  assert len(builder.info.features["label"].names) == 600


def test_versions_are_found_or_downloaded_as_the_builders_do(tmp_path, capsys):
  """--versions: one archive in the folder, the other fetched from a loopback server into it."""

  def archive(name: str, rows: list[tuple[str, str]]) -> pathlib.Path:
    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    (folder / "validate.csv").write_text(
      "label,youtube_id,time_start,time_end,split\n" + "".join(f"{label},{i},0,10,validate\n" for label, i in rows)
    )
    path = tmp_path / "site" / f"{name}.tar.gz"
    path.parent.mkdir(exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
      tar.add(folder, arcname=name)
    return path

  local = tmp_path / "annotations"
  local.mkdir()
  shutil.copy(archive("kinetics400", [("a", "aaaaaaaaaaa"), ("b", "bbbbbbbbbbb")]), local)
  archive("kinetics600", [("a", "aaaaaaaaaaa"), ("c", "ccccccccccc")])
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    sets = overlap.from_version("kinetics400", ["kinetics400"], str(local), "http://unused/{name}")
    sets += overlap.from_version(
      "kinetics600", ["kinetics600"], str(local), f"http://127.0.0.1:{httpd.server_address[1]}/{{name}}.tar.gz"
    )
  finally:
    httpd.shutdown()
    httpd.server_close()
  assert (local / "kinetics600.tar.gz").exists()
  [row] = overlap.compare(sets)
  assert (row["a"], row["b"], row["shared_videos"], row["shared_segments"]) == (
    "kinetics400:validation",
    "kinetics600:validation",
    1,
    1,
  )


def test_an_overlap_set_name_with_a_slash_is_one_line(tmp_path):
  rows = tmp_path / "val.csv"
  rows.write_text("label,youtube_id,time_start,time_end,split\nx,aaaaaaaaaaa,0,10,val\n")
  done = run_command(
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
  assert "must be a file name: no '/'" in our_stderr(done.stderr)[-1]
