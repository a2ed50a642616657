"""Fills a TFDS manual folder with Kinetics clips from the CVDF mirror or YouTube.

Run as `python -m kinetics_tfds.download --help`. Every run is resumable and writes
`download_report.csv` into the manual folder, so a rerun only fetches what is missing.
"""

import os
import pathlib
import re

# Below the manual folder: partial downloads, cached lists and done-markers. Its files never match
# the clip name pattern, so builders scanning the folder do not see them.
STATE_DIR = ".download_state"
_UNSAFE_CHARS = re.compile(r"[\\\x00-\x1f]")


class UnsafeName(ValueError):
  """A remote file name that would map outside the state folder."""


def state_path(manual_dir: pathlib.Path, name: str) -> pathlib.Path:
  """Where the state of a remote file named `name` (a URL path below the mirror's root) lives.

  The one mapping from what a server sends to a local path: empty and `.` segments are dropped
  (`//abs/path` stays below the state folder), and a name with a `..` segment, a backslash or a
  control character is refused, so no list line, however spelt, reaches outside the folder.
  """
  segments = [s for s in name.split("/") if s not in ("", ".")]
  if not segments or any(s == ".." or _UNSAFE_CHARS.search(s) for s in segments):
    raise UnsafeName(f"unsafe remote name {name!r}")
  root = manual_dir / STATE_DIR
  path = root.joinpath(*segments)
  real_root = os.path.realpath(root)
  if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:  # A link on the way.
    raise UnsafeName(f"unsafe remote name {name!r}: leaves {root}")
  return path
