"""What the tests share: the read-only ../shared folder beside the repo (real Kinetics files), and the
size of the clips they write, small enough to build in milliseconds."""

import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
SMALL_CLIP = {"seconds": 1.0, "fps": 10.0, "width": 64, "height": 48}  # motion_clips.write_clip's settings.


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data, or a clear skip where this checkout has no ../shared beside it."""
  data = SHARED / "data"
  if not data.is_dir():
    pytest.skip(f"{data} is missing: the real Kinetics files live in ../shared beside the repo")
  return data
