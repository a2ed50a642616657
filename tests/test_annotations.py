"""Annotation files: the real ones in ../shared, every form and dialect users have, and junk: a bad row spoils only
itself, a bad file is one error naming it."""

import io
import json
import pathlib
import random
import tarfile

import pytest

from conftest import write_latin1_annotations
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips


@pytest.mark.parametrize(
  "name, split, rows, num_classes",
  [
    ("kinetics400_val_2017.csv", "validation", 19_906, 400),
    ("kinetics400_test_2017_unlabeled.csv", "test", 38_685, 0),
    ("kinetics600_val.csv", "validation", 30_000, 600),
    ("kinetics600_test_augmented_unlabeled.csv", "test", 72_924, 0),
    ("kinetics600_test_original_unlabeled.csv", "test", 60_000, 0),
  ],
)
def test_real_files_parse_to_their_row_counts(shared_data, name, split, rows, num_classes):
  path = shared_data / "kinetics" / "annotations" / name
  clips, rejected = annotations.parse_split(str(path), path.read_bytes(), split)
  assert (len(clips), rejected) == (rows, [])
  labels = {c.label for c in clips} - {None}
  assert len(labels) == num_classes
  assert len({c.key for c in clips}) == rows
  if num_classes:
    label_map = shared_data / "kinetics" / "label_maps" / f"kinetics{num_classes}.txt"
    assert sorted(labels) == label_map.read_text().splitlines()
  else:
    assert all(c.label is None for c in clips)


def test_2017_dialect_keeps_quoted_labels_and_is_cc(shared_data):
  path = shared_data / "kinetics" / "annotations" / "kinetics400_val_2017.csv"
  clips, _ = annotations.parse_split(str(path), path.read_bytes(), "validation")
  by_label = {c.label: c for c in clips}
  assert "passing American football (in game)" in by_label
  assert {c.is_cc for c in clips} <= {0, 1} and any(c.is_cc == 1 for c in clips)


def test_k600_ids_with_two_clips_stay_two_clips(shared_data):
  path = shared_data / "kinetics" / "annotations" / "kinetics600_val.csv"
  clips, _ = annotations.parse_split(str(path), path.read_bytes(), "validation")
  ids = [c.youtube_id for c in clips]
  assert len(ids) - len(set(ids)) == 6


def test_json_and_csv_forms_agree(shared_data):
  folder = shared_data / "kinetics" / "annotations"
  csv_path = folder / "k700_validate_csv_head_from_blog.csv"
  json_path = folder / "k700_validate_json_layout_from_blog.json"
  from_csv, _ = annotations.parse_split(str(csv_path), csv_path.read_bytes(), "validation")
  from_json, _ = annotations.parse_split(str(json_path), json_path.read_bytes(), "validation")
  assert set(from_json) <= set(from_csv) and len(from_json) == 2


def _rows(split, labels, first=0):
  return [annotations.Clip(f"vid{first + i:08d}", i, i + 10, label, split) for i, label in enumerate(labels)]


def test_every_folder_form_is_found(tmp_path):
  classes = ["b class", "a class"]
  forms = {}
  # DeepMind extracted, DeepMind archive, CVDF annotations/, loose files.
  forms["extracted"] = tmp_path / "extracted"
  motion_clips.write_annotations(str(forms["extracted"] / "kinetics400"), "train", _rows("train", classes))
  forms["archive"] = tmp_path / "archive"
  staging = tmp_path / "staging" / "kinetics400"
  motion_clips.write_annotations(str(staging), "train", _rows("train", classes))
  forms["archive"].mkdir()
  with tarfile.open(forms["archive"] / "kinetics400.tar.gz", "w:gz") as tar:
    tar.add(staging, arcname="kinetics400")
  forms["cvdf"] = tmp_path / "cvdf"
  motion_clips.write_annotations(str(forms["cvdf"] / "annotations"), "train", _rows("train", classes))
  for name, folder in forms.items():
    found = annotations.read_annotations(annotations.find_sources(str(folder), ["kinetics400"]), 2)
    assert found.classes == ["a class", "b class"], name
    assert len(found.clips["train"]) == 2, name


def test_val_and_validate_file_names_are_the_validation_split(tmp_path):
  for name in ("val", "validate"):
    folder = tmp_path / name / "annotations"
    folder.mkdir(parents=True)
    (folder / f"{name}.csv").write_text("label,youtube_id,time_start,time_end,split\nx,abcdefghijk,1,11,val\n")
    found = annotations.read_annotations(annotations.find_sources(str(tmp_path / name), ["k"]), 1)
    assert [c.key for c in found.clips["validation"]] == ["abcdefghijk_000001_000011"]


def test_delta_top_up_is_merged_and_duplicates_counted(tmp_path):
  motion_clips.write_annotations(str(tmp_path / "kinetics700_2020"), "train", _rows("train", ["x", "y"]))
  delta = _rows("train", ["x"], first=100) + _rows("train", ["y"])  # One new, one repeat.
  motion_clips.write_annotations(str(tmp_path / "kinetics700_2020_delta"), "train", delta)
  sources = annotations.find_sources(str(tmp_path), ["kinetics700_2020", "kinetics700_2020_delta"])
  found = annotations.read_annotations(sources, 2)
  assert len(found.clips["train"]) == 3
  assert found.duplicates["train"] == 1


def test_bad_rows_are_rejected_with_reasons(tmp_path):
  (tmp_path / "annotations").mkdir()
  (tmp_path / "annotations" / "train.csv").write_text(
    "label,youtube_id,time_start,time_end,split\n"
    "good,abcdefghijk,1,11,train\n"
    "good,../../etc/pw,1,11,train\n"
    "../escape,abcdefghijl,1,11,train\n"
    "good,abcdefghijm,x,11,train\n"
    "good,abcdefghijn,20,11,train\n"
    "good,abcdefghijo,1\n"
  )
  (tmp_path / "annotations" / "val.csv").write_text(
    "label,youtube_id,time_start,time_end,split\nnot a train class,abcdefghijp,1,11,val\n"
  )
  found = annotations.read_annotations(annotations.find_sources(str(tmp_path), ["k"]), 1)
  assert [c.key for c in found.clips["train"]] == ["abcdefghijk_000001_000011"]
  reasons = sorted(r.reason.split(":")[0] + ":" + r.split for r in found.rejected)
  assert reasons == ["malformed row:train"] * 5 + ["unknown label 'not a train class':validation"]
  assert any("invalid youtube_id '../../etc/pw'" in r.reason for r in found.rejected)
  assert any("invalid label '../escape'" in r.reason for r in found.rejected)


def test_wrong_class_count_is_a_clear_error(tmp_path):
  motion_clips.write_annotations(str(tmp_path / "kinetics400"), "train", _rows("train", ["a", "b", "c"]))
  with pytest.raises(annotations.AnnotationError, match="expected 400 classes.*name 3"):
    annotations.read_annotations(annotations.find_sources(str(tmp_path), ["kinetics400"]), 400)


def test_no_annotations_is_a_clear_error(tmp_path):
  with pytest.raises(annotations.AnnotationError, match="no annotation files"):
    annotations.read_annotations(annotations.find_sources(str(tmp_path), ["kinetics400"]), 400)


def test_unlabeled_json_test_list(tmp_path):
  folder = tmp_path / "kinetics700"
  folder.mkdir()
  (folder / "test.json").write_text(json.dumps({"abcdefghijk": {"annotations": {"segment": [3.0, 13.0]}}}))
  motion_clips.write_annotations(str(folder), "train", _rows("train", ["a"]))
  found = annotations.read_annotations(annotations.find_sources(str(tmp_path), ["kinetics700"]), 1)
  assert [(c.key, c.label) for c in found.clips["test"]] == [("abcdefghijk_000003_000013", None)]


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
  "latin1": ("kinetics400/train.csv", write_latin1_annotations, "not UTF-8 text (byte 0xe9"),
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
