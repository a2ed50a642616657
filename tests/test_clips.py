"""Finding each clip's file below a manual folder, and the documented choice between copies."""

from kinetics_tfds import annotations
from kinetics_tfds import clips

_CLIP = annotations.Clip("-abc_def123", 5, 15, "massaging person's head", "train")


def _touch(root, *relative):
  for r in relative:
    path = root / r
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def _locate(root, clip=_CLIP):
  by_key, by_id = clips.scan(str(root))
  return clips.locate(clip, by_key, by_id, str(root))


def test_replacement_copy_wins(tmp_path):
  _touch(tmp_path, f"train/{_CLIP.key}.mp4", f"replacement/deep/{_CLIP.key}.mkv")
  assert _locate(tmp_path).path.endswith(f"replacement/deep/{_CLIP.key}.mkv")


def test_label_folder_then_extension_then_shortest_path(tmp_path):
  _touch(tmp_path, f"a/{_CLIP.key}.mp4", f"train/massaging_persons_head/{_CLIP.key}.webm")
  assert "massaging_persons_head" in _locate(tmp_path).path
  _touch(tmp_path, f"train/massaging person's head/{_CLIP.key}.mp4")
  assert _locate(tmp_path).path.endswith(f"massaging person's head/{_CLIP.key}.mp4")
  other = annotations.Clip(_CLIP.youtube_id, 5, 15, "another label", "train")
  assert _locate(tmp_path, other).path.endswith(f"a/{_CLIP.key}.mp4")


def test_full_length_video_is_cut_to_the_segment(tmp_path):
  _touch(tmp_path, "videos/-abc_def123.mkv")
  located = _locate(tmp_path)
  assert located.path.endswith("videos/-abc_def123.mkv") and located.segment == (5, 15)


def test_appledouble_and_other_files_are_ignored(tmp_path):
  _touch(tmp_path, f"train/._{_CLIP.key}.mp4", f"train/{_CLIP.key}.mp4.part", f"train/{_CLIP.key}.txt")
  assert _locate(tmp_path) is None


def test_label_folder_names():
  assert clips.label_folder_names("hurling (sport)") == {"hurling (sport)", "hurling_sport"}
