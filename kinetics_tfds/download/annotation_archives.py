"""DeepMind's annotation archives of a Kinetics version, found in a folder or downloaded into it: what the builder
reads for its exclusions across versions and what `overlap` compares."""

from collections.abc import Sequence
import os
import pathlib

from kinetics_tfds import annotations
from kinetics_tfds.download import errors
from kinetics_tfds.download import http


def version_sources(folder: str, archive_names: Sequence[str], url: str | None = None) -> list:
  """Annotation sources of a version in `folder`: its DeepMind archives, extracted or not. With `url` (`{name}`
  standing for an archive's name), each archive missing there is downloaded into `folder` first.

  Unlike the builder's own search, never falls back to `annotations/` or loose files, which hold
  the version being built.
  """
  sources = []
  for name in archive_names:
    if url is not None and not _archive_sources(folder, name):
      http.fetch(url.format(name=name), pathlib.Path(folder) / f"{name}.tar.gz", errors.RetryPolicy(5, 2.0))
    sources += _archive_sources(folder, name)
  return sources


def _archive_sources(folder: str, name: str) -> list:
  prefixes = (os.path.join(folder, name) + os.sep, os.path.join(folder, f"{name}.tar.gz:"))
  return [
    source
    for source in annotations.find_sources(folder, [name])
    if all(origin.startswith(prefixes) for origin, _ in source.values())
  ]
