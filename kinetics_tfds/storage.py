"""Manual folders on local disk or in object storage (`gs://`, `s3://`, any fsspec URL).

A cluster keeps its clips in a bucket, not on a disk every worker mounts. The clip scan lists the
bucket through fsspec, and each worker copies one clip to local scratch before OpenCV (which opens
local paths only) decodes it, and deletes the copy after. Local paths go through `os` unchanged.
`gs://` needs `gcsfs`, `s3://` needs `s3fs` (`pip install kinetics_tfds[gcs]` or `[s3]`); fsspec
reads their settings from the environment, e.g. `FSSPEC_S3_ENDPOINT_URL` for an S3-compatible store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import os
import posixpath
import tempfile
import time

from absl import logging

SCRATCH_ENV = "KINETICS_TFDS_SCRATCH"
COPY_PREFIX = "kinetics_tfds_clip_"
COPY_RETRY_DELAYS_S = (2.0, 8.0, 32.0)  # Waits before the retries of a remote clip's copy.
# Annotation files a manual folder may hold (see annotations.find_sources), relative to its root.
_ANNOTATION_GLOBS = ("*.csv", "*.json", "*.tar.gz", "*/*.csv", "*/*.json")


def is_url(path: str) -> bool:
  return "://" in path


def _filesystem(url: str):
  import fsspec  # pylint: disable=g-import-not-at-top  # Only object storage needs it.

  return fsspec.core.url_to_fs(url)[0]


def root(manual_dir: str) -> str:
  """The canonical form of a manual folder: a real local path, or the URL as its file system names what it lists
  (`memory://k400` lists `memory:///k400/...`), without a trailing /."""
  if not is_url(manual_dir):
    return os.path.realpath(manual_dir)
  fs = _filesystem(manual_dir)
  return fs.unstrip_protocol(fs._strip_protocol(manual_dir)).rstrip("/")  # pylint: disable=protected-access


def walk(manual_dir: str) -> Iterator[str]:
  """Every file below `manual_dir`, as paths or URLs, folders in code point order."""
  top = root(manual_dir)
  if not is_url(top):
    for folder, dirs, files in os.walk(top):
      dirs.sort()
      for name in sorted(files):
        yield os.path.join(folder, name)
    return
  fs = _filesystem(top)
  for path in sorted(fs.find(top)):
    yield fs.unstrip_protocol(path)


def relative_parts(path: str, manual_dir_root: str) -> list[str]:
  """The folder names and file name of `path` below a root from `root()`."""
  if is_url(manual_dir_root):
    return posixpath.relpath(path.split("://", 1)[1], manual_dir_root.split("://", 1)[1]).split("/")
  return os.path.relpath(path, manual_dir_root).split(os.sep)


def scratch_dir() -> str:
  """Where workers put their copies of remote clips: $KINETICS_TFDS_SCRATCH, else the temp folder."""
  folder = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
  os.makedirs(folder, exist_ok=True)
  return folder


class StoreError(OSError):
  """A remote clip could not be copied to local scratch: the store or the scratch disk is at fault, not the clip."""


@contextlib.contextmanager
def local_copy(path: str, folder: str | None = None) -> Iterator[str]:
  """A local path holding the file: the path itself, or a copy in `folder` (default: scratch_dir())
  deleted on exit. A process that dies mid-decode cannot delete it: give a folder its caller removes.

  A remote file that is not there raises FileNotFoundError, as a local one would. Any other failure to copy
  (an unreachable store, a full scratch disk) is retried after each of COPY_RETRY_DELAYS_S, then raised as
  StoreError: a build must stop on it rather than report clips that are not at fault as bad.
  """
  if not is_url(path):
    yield path
    return
  folder = folder or scratch_dir()
  try:
    fd, local = tempfile.mkstemp(prefix=COPY_PREFIX, suffix=posixpath.splitext(path)[1], dir=folder)
  except OSError as e:
    raise StoreError(f"{folder}: cannot hold a copy of {path} ({type(e).__name__}: {e}); set ${SCRATCH_ENV}") from e
  os.close(fd)
  try:
    _copy(path, local)
    yield local
  finally:
    os.remove(local)


def _copy(path: str, local: str) -> None:
  for attempt, delay in enumerate((*COPY_RETRY_DELAYS_S, None), 1):
    try:
      _filesystem(path).get_file(path, local)
      return
    except FileNotFoundError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # Each file system raises its own (botocore, aiohttp).
      if delay is None:
        raise StoreError(
          f"{path}: not copied to {local} in {attempt} attempts ({type(e).__name__}: {e}); the build stops "
          "rather than skip clips that are not at fault: rerun it once the store and the scratch disk work"
        ) from e
      logging.warning("%s: copy failed (%s: %s); retrying in %.0f s.", path, type(e).__name__, e, delay)
      time.sleep(delay)


def open_for_writing(path: str):
  """A binary file to write at a local path or URL (a dataset folder may be on gs://)."""
  if not is_url(path):
    return open(path, "wb")
  return _filesystem(path).open(path, "wb")


@contextlib.contextmanager
def local_annotations(manual_dir: str, wanted: Callable[[list[str]], bool]) -> Iterator[str]:
  """A local folder with the manual folder's annotation files in their layout: those whose relative path
  (folder names, then file name) is `wanted` (annotations.is_source_path).

  Annotation files are small and read whole, so they are copied rather than streamed; clips
  are not copied here. Only files a builder reads are: other keys may be anything an object store
  holds (names too long for a local disk, `a.csv` beside `a.csv/b.csv`).
  """
  if not is_url(manual_dir):
    yield manual_dir
    return
  top = root(manual_dir)
  fs = _filesystem(top)
  with tempfile.TemporaryDirectory(prefix="kinetics_tfds_annotations_", dir=scratch_dir()) as local:
    for pattern in _ANNOTATION_GLOBS:
      for path in fs.glob(f"{top}/{pattern}"):
        parts = relative_parts(fs.unstrip_protocol(path), top)
        if not wanted(parts):  # Which also keeps a key holding `..` from landing outside `local`.
          continue
        target = os.path.join(local, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(path, target)
    yield local
