"""Annotation files: the real ones in ../shared, and every form and dialect users have."""

import json
import tarfile

import pytest

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
