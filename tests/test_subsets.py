"""Subsets by class and size: built from a manual folder that holds more, and fetched alone by the downloader;
exclusions; a user's mistake in a selection is one line."""

import csv
import functools
import hashlib
import http.server
import os
import pathlib
import random
import subprocess
import sys
import threading

import pytest
import tensorflow_datasets as tfds

from conftest import JUMPING
from conftest import SMALL_CLIP
from conftest import TINY_CONFIG
import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips
from kinetics_tfds import subsets
from kinetics_tfds.build import parallel
from kinetics_tfds.download import cvdf
from kinetics_tfds.download import errors
from kinetics_tfds.download import report as report_lib

# Seven classes in the folder (names as Kinetics spells them), five in the subset.
_ALL = {
  "abseiling": (1, 0),
  "air drumming": (-1, 0),
  "hurling (sport)": (0, 1),
  "massaging person's head": (0, -1),
  "passing American football (in game)": (1, 1),
  "yoga": (-1, -1),
  "zumba": (1, -1),
}
_SUBSET = ["zumba", "hurling (sport)", "abseiling", "massaging person's head", "passing American football (in game)"]
_PER_SPLIT = {"train": 4, "validation": 3}


def _expected(written: dict[str, list[annotations.Clip]], per_class: int) -> dict[str, set[str]]:
  """The subset computed here, independently: per split and class, the keys with the lowest SHA-256."""
  expected = {}
  for split, rows in written.items():
    expected[split] = set()
    for label in _SUBSET:
      keys = sorted((c.key for c in rows if c.label == label), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
      expected[split] |= set(keys[:per_class])
  return expected


@pytest.fixture(scope="module")
def subset_builds(tmp_path_factory):
  """The same 5-class, 2-per-class subset built with 1 and with 2 workers."""
  root = tmp_path_factory.mktemp("subsets")
  names_file = root / "classes.txt"
  names_file.write_text("# my five\n" + "\n".join(_SUBSET) + "\n")
  written = motion_clips.make_manual_dir(str(root / "manual"), classes=_ALL, clips_per_class=_PER_SPLIT, **SMALL_CLIP)
  config = kinetics_tfds.KineticsConfig(
    fps=10.0, short_side=48, num_classes=len(_ALL), classes=str(names_file), max_per_class=2
  )
  builds = {}
  for workers in (1, 2):
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv(parallel.WORKERS_ENV, str(workers))
      builder = tfds.builder("kinetics400", config=config, data_dir=str(root / f"data{workers}"))
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
    builds[workers] = builder
  return root, written, names_file, builds


def test_subset_holds_exactly_the_chosen_clips_labelled_0_to_4(subset_builds):
  _, written, _, builds = subset_builds
  builder = builds[1]
  names = builder.info.features["label"].names
  assert names == sorted(_SUBSET) and builder.info.features["label"].num_classes == 5
  assert builder.builder_config.name == "10fps_48px_q90_5classes_max2_" + builder.builder_config.name[-8:]
  stored_names = pathlib.Path(builder.data_dir, "label.labels.txt").read_text().split("\n")
  assert stored_names[:5] == sorted(_SUBSET)  # The class list travels with the dataset.
  annotated = {c.key: c for rows in written.values() for c in rows}
  for split, keys in _expected(written, 2).items():
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert {ex["key"].decode() for ex in examples} == keys and len(examples) == 10
    assert {int(ex["label"]) for ex in examples} == set(range(5))
    for ex in examples:
      assert names[ex["label"]] == annotated[ex["key"].decode()].label
  skipped = list(csv.DictReader(open(pathlib.Path(builder.data_dir) / "skipped_clips.csv")))
  for split, rows in written.items():
    reasons = {r["key"]: r["reason"] for r in skipped if r["split"] == split}
    for clip in rows:
      if clip.label not in _SUBSET:
        assert reasons[clip.key] == "outside subset: class not selected"
      elif clip.key not in _expected(written, 2)[split]:
        assert reasons[clip.key] == "outside subset: over max_per_class"
    assert len(reasons) == len(rows) - 10


def test_one_or_two_workers_write_the_same_records(subset_builds):
  _, _, _, builds = subset_builds
  files = [sorted(pathlib.Path(b.data_dir).glob("*.tfrecord*")) for b in (builds[1], builds[2])]
  assert [f.name for f in files[0]] == [f.name for f in files[1]] and files[0]
  for one, two in zip(*files):
    assert one.read_bytes() == two.read_bytes(), one.name


def test_downloader_dry_run_lists_exactly_the_subset(subset_builds, tmp_path):
  root, _, names_file, builds = subset_builds
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kinetics_tfds.__file__).parents[1])}
  for split, csv_name in (("train", "train.csv"), ("validation", "validate.csv")):
    result = subprocess.run(
      [
        sys.executable,
        "-m",
        "kinetics_tfds.download",
        "--source=youtube",
        f"--manual_dir={tmp_path / split}",
        f"--annotations={root / 'manual' / 'kinetics400' / csv_name}",
        f"--classes={names_file}",
        "--max_per_class=2",
        "--dry_run",
        "--youtube_url_template=http://127.0.0.1:9/{youtube_id}",
      ],
      capture_output=True,
      text=True,
      env=env,
      timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = set()
    for line in result.stdout.strip().splitlines()[:-1]:  # The last line is the JSON of counts.
      url, start, end = line.split("\t")
      listed.add(annotations.clip_key(url.rsplit("/", 1)[1], int(start), int(end)))
    built = {ex["key"].decode() for ex in tfds.as_numpy(builds[1].as_dataset(split=split))}
    assert listed == built
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=youtube",
      f"--manual_dir={tmp_path}",
      f"--annotations={root / 'manual' / 'kinetics400' / 'train.csv'}",
      "--classes=abseiling,not a class",
      "--dry_run",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert bad.returncode == 1 and "not a class" in bad.stderr and "Traceback" not in bad.stderr


def test_cvdf_fetches_only_the_class_archives(tmp_path, capsys):
  """K600's mirror has one archive per class: only the subset's are listed; K400's flat shards refuse."""
  site = tmp_path / "site"
  official = "https://s3.amazonaws.com/kinetics"
  (site / "600" / "train").mkdir(parents=True)
  (site / "600" / "annotations").mkdir(parents=True)
  header = "label,youtube_id,time_start,time_end,split\n"
  (site / "600" / "annotations" / "train.csv").write_text(header)
  for label in _ALL:
    (site / "600" / "train" / f"{label}.tar.gz").write_bytes(label.encode() * 3)
  lines = [f"{official}/600/train/{label}.tar.gz" for label in random.Random(0).sample(list(_ALL), len(_ALL))]
  (site / "600" / "train" / "k600_train_path.txt").write_text("\n".join(lines) + "\n")
  (site / "400" / "train").mkdir(parents=True)
  (site / "400" / "train" / "k400_train_path.txt").write_text(f"{official}/400/train/part_0.tar.gz\n")
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{httpd.server_address[1]}"
  policy = errors.RetryPolicy(attempts=2, base_delay_s=0.01)
  try:
    cvdf.run(tmp_path / "manual", "600", ["train"], base, 2, policy, True, report_lib.Report(None), tuple(_SUBSET))
    printed = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    expected = {f"{base}/600/train/{label}.tar.gz": str(3 * len(label)) for label in _SUBSET}
    assert printed == {f"{base}/600/annotations/train.csv": str(len(header)), **expected}
    with pytest.raises(subsets.SelectionError, match="per class only for K600"):
      cvdf.run(tmp_path / "manual", "400", ["train"], base, 2, policy, True, report_lib.Report(None), ("yoga",))
  finally:
    httpd.shutdown()
    httpd.server_close()


def _clips(n: int, labels=("a", "b", None)) -> list[annotations.Clip]:
  return [annotations.Clip(f"vid{i:08d}", i, i + 10, labels[i % len(labels)], "train") for i in range(n)]


def test_choice_depends_on_keys_not_file_order_and_growing_n_only_adds():
  rows = _clips(60)
  shuffled = random.Random(1).sample(rows, len(rows))
  pick = lambda clips, n: {c.key for c in subsets.select({"train": clips}, ["a", "b"], max_per_class=n).clips["train"]}  # noqa: E731
  assert pick(rows, 3) == pick(shuffled, 3) and len(pick(rows, 3)) == 9  # a, b and the unlabeled group.
  assert pick(rows, 3) < pick(rows, 5)
  with pytest.raises(subsets.SelectionError, match="not in this version's class list"):
    subsets.select({"train": rows}, ["a", "b"], keep_classes=["c"])
  with pytest.raises(subsets.SelectionError, match="not a file of class names"):
    kinetics_tfds.KineticsConfig(classes="/nonexistent/classes.txt")


def test_exclusions_by_key_file_and_version_split(tmp_path):
  rows = _clips(6)
  keys_file = tmp_path / "kinetics400-validation_on_x.txt"
  keys_file.write_text(rows[0].key + "\n")
  other = [annotations.Clip(rows[1].youtube_id, 500, 510, "a", "validation")]  # Same video, other segment.
  loaded = []
  found = subsets.exclusions(
    [str(keys_file), "kinetics400:val", rows[2].key], lambda version, split: loaded.append((version, split)) or other
  )
  assert loaded == [("kinetics400", "validation")]
  kept = subsets.select({"train": rows}, ["a", "b"], excluded=found)
  assert {r.key: r.reason for r in kept.skipped} == {
    rows[0].key: f"excluded: listed in {keys_file.name}",
    rows[1].key: "excluded: same YouTube video as kinetics400:validation",
    rows[2].key: "excluded: listed in the exclude list",
  }
  with pytest.raises(subsets.SelectionError, match="neither a clip key"):
    subsets.exclusions(["kinetics400:nosuchsplit"], lambda *_: [])


def test_a_names_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
  names = tmp_path / "names.txt"
  names.write_bytes("caf\xe9\n".encode("latin-1"))
  with pytest.raises(subsets.SelectionError, match=f"^{names}: not UTF-8 text \\(byte 0xe9 at offset 3\\)"):
    kinetics_tfds.KineticsConfig(classes=str(names))
  with pytest.raises(subsets.SelectionError, match=f"^{names}: not UTF-8"):
    subsets.exclusions([str(names)], load=None)


def test_excluding_an_unknown_version_is_one_line(tmp_path):
  manual = tmp_path / "manual"
  motion_clips.write_annotations(str(manual / "kinetics400"), "train", [JUMPING])
  config = kinetics_tfds.KineticsConfig(**{**TINY_CONFIG, "num_classes": 1, "exclude": ("kinetics4000:validation",)})
  dataset = tfds.builder("kinetics400", config=config, data_dir=str(tmp_path / "data"))
  with pytest.raises(subsets.SelectionError, match="^exclude: 'kinetics4000' is not a Kinetics version"):
    dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_a_subset_folder_counts_each_class_once():
  config = kinetics_tfds.KineticsConfig(classes=["swiping up", "swiping up", "swiping down"])
  assert "_2classes_" in config.name
