"""`ClipBuilder`: a TFDS builder whose examples are built clip by clip, by `examples.build`, over workers.

A subclass declares what an example is and which clips a build holds (`_info`, `_split_generators`), and returns
`self.clip_examples(split, tasks)` from `_generate_examples`. This class runs them: over a worker pool on one
machine, whose workers also write the shards (local.py), or as a Beam pipeline when `tfds build` is given
`--beam_pipeline_options` (beam.py). Around either it holds the version's build claim (lock.py), removes what
killed builds left, and writes the skipped clips beside the dataset (skipped.py).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse

from absl import logging
import tensorflow_datasets as tfds

from kinetics_tfds import annotations
from kinetics_tfds import storage
from kinetics_tfds.build import beam
from kinetics_tfds.build import examples
from kinetics_tfds.build import local
from kinetics_tfds.build import lock
from kinetics_tfds.build import parallel
from kinetics_tfds.build import skipped as skipped_lib


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS's builder, run over worker processes or Beam workers; see the module docstring."""

  def __init__(self, *, num_workers: int | None = None, **kwargs):
    """num_workers: build processes (default: all cores, or $KINETICS_TFDS_WORKERS)."""
    super().__init__(**kwargs)
    self._num_workers = num_workers or parallel.default_workers()
    self._use_beam = False
    self._remote_manual_dir: str | None = None
    self.skipped: list[annotations.Rejected] = []  # What `_split_generators` and the workers left out, and why.

  def manual_dir(self, dl_manager) -> str:
    """The manual folder: a path, or the object-store URL TFDS's download manager cannot hold."""
    return self._remote_manual_dir or os.fspath(dl_manager.manual_dir)

  def clip_examples(self, split: str, tasks: list[examples.Task]):
    """What `_generate_examples` returns: a Beam transform of (key, example) pairs, or the tasks for the pool."""
    if self._use_beam:
      return beam.split_examples(os.fspath(self.data_dir), split, tasks)
    return local.Split(split, tasks)

  def download_and_prepare(self, **kwargs):
    """TFDS's, holding this version's build claim, so a build beside it cannot remove its folder.

    A prepared dataset that is not to be overwritten is only opened, with no claim: nothing is written, so a
    shared read-only data_dir works.
    """
    download_config = kwargs.get("download_config") or tfds.download.DownloadConfig()
    # TFDS's path parser knows a few schemes only (KeyError 'memory://'), and TensorFlow's file system, which
    # checks dl_manager.manual_dir, has no s3://: a URL goes around both, and a file:// URL becomes its path.
    manual_dir = os.fspath(download_config.manual_dir or "")
    if manual_dir.startswith("file://"):
      manual_dir = urllib.parse.unquote(urllib.parse.urlsplit(manual_dir).path)
    self._remote_manual_dir = manual_dir if storage.is_url(manual_dir) else None
    download_config = dataclasses.replace(
      download_config, manual_dir=None if self._remote_manual_dir else manual_dir or None
    )
    kwargs["download_config"] = download_config
    # TFDS's is_prepared warns of a version folder without dataset_info.json: a first build's.
    prepared = (tfds.core.Path(self.data_dir) / "dataset_info.json").exists() and self.is_prepared()
    if prepared and not download_config.download_mode.overwrite_dataset:
      super().download_and_prepare(**kwargs)
      return
    with lock.exclusive(os.fspath(self.data_dir)):
      super().download_and_prepare(**kwargs)

  def _download_and_prepare(self, dl_manager, download_config):
    """Runs TFDS's generation, then writes the skipped clips beside the dataset."""
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    self.skipped = []
    _remove_interrupted_builds(self.data_dir)
    super()._download_and_prepare(dl_manager, download_config)
    self.skipped.extend(beam.collect_skipped(os.fspath(self.data_dir)))
    skipped_lib.write(os.fspath(self.data_dir), self.skipped)

  def _generate_splits(self, dl_manager, download_config):
    """Without Beam, the pool builds and writes each split (local.py); with it, TFDS runs the transforms."""
    if self._use_beam:
      return super()._generate_splits(dl_manager, download_config)
    split_infos = []
    for split in self._split_generators(dl_manager).values():
      template = self._get_filename_template(split_name=split.name)
      info = local.write_split(
        split, os.fspath(self.data_dir), self.info, template, download_config, self._num_workers, self.skipped
      )
      if info is not None:
        split_infos.append(info)
    return split_infos

  def _example_writer(self):
    return local.ExampleWriter(file_format=self.info.file_format)


def _remove_interrupted_builds(current: str) -> None:
  """Deletes what killed builds of this version left: TFDS starts over in a new folder, and a
  K700 build's leftovers can be terabytes. Safe only under the version's build claim."""
  current = tfds.core.Path(current)
  version = current.name.split("_", 1)[1]
  for folder in current.parent.glob(f"incomplete.*_{version}"):
    if folder != current:
      logging.warning("Removing %s, left by an interrupted build.", folder)
      folder.rmtree()
