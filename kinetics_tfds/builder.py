"""The shared Kinetics builder and its configs; each version subclasses it in its own TFDS folder.

Heavy work lives in plain modules (annotations, clips, video, examples); this file only wires them
into TFDS: what an example is, where the inputs are, and how the per-clip function is run —
serially, over a worker pool on one machine, or as a Beam pipeline when `tfds build` is given
`--beam_pipeline_options`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import io
import itertools
import os
import shutil
import urllib.parse

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import registered
from tensorflow_datasets.core import writer as writer_lib

from kinetics_tfds import annotations
from kinetics_tfds import build_lock
from kinetics_tfds import clips
from kinetics_tfds import examples
from kinetics_tfds import parallel
from kinetics_tfds import shards
from kinetics_tfds import storage
from kinetics_tfds import subsets

ANNOTATIONS_URL_ENV = "KINETICS_TFDS_ANNOTATIONS_URL"
DEEPMIND_URL = "https://storage.googleapis.com/deepmind-media/Datasets/{name}.tar.gz"
SKIPPED_FILE = "skipped_clips.csv"
_TASK_LIST_PREFIX = ".tasks-"


@dataclasses.dataclass(eq=False)
class KineticsConfig(tfds.core.BuilderConfig):
  """How clips are stored (frame rate, size, JPEG quality) and which clips are kept.

  `tfds.builder('kinetics400', config=KineticsConfig(fps=12.5, short_side=160))` makes a config
  of one's own; its name, when not given, says what it is (`12.5fps_160px_q90`).
  fps None keeps every source frame; short_side None keeps the source size.
  num_classes None means the version's own class count (400, 600 or 700).
  exclude: clip keys, files of keys, or `version:split` pairs (`kinetics400:validation`) whose
  YouTube videos are left out: training on K700 without K400's validation videos is one config.
  classes (names, or a file of names) and max_per_class make a subset: labels are renumbered
  over the classes kept, at most N clips per class and split, chosen by key hash (subsets.py).
  """

  name: str = ""
  fps: float | None = 25.0
  short_side: int | None = 256
  jpeg_quality: int = 90
  num_classes: int | None = None
  exclude: tuple[str, ...] = ()
  classes: tuple[str, ...] | str | None = None
  max_per_class: int | None = None

  def __post_init__(self):
    self.exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
    self.classes = subsets.read_names(self.classes)
    if not self.name:
      fps = "srcfps" if self.fps is None else f"{self.fps:g}fps"
      size = "srcsize" if self.short_side is None else f"{self.short_side}px"
      self.name = f"{fps}_{size}_q{self.jpeg_quality}" + _selection_suffix(self)
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


def _selection_suffix(config: KineticsConfig) -> str:
  """`_5classes_max2_1a2b3c4d` for a subset or exclusion, so its build gets a folder of its own."""
  suffix = f"_{len(set(config.classes))}classes" if config.classes is not None else ""  # A name given twice is one.
  suffix += f"_max{config.max_per_class}" if config.max_per_class else ""
  if config.classes is not None or config.exclude:
    digest = subsets.rank(repr((config.classes, config.exclude)).replace(" ", "")).hex()[:8]
    suffix += f"_{digest}"
  return suffix


I3D_CONFIG = KineticsConfig(
  name="i3d_25fps_256",
  description=(
    "The I3D protocol: 25 fps resampled by timestamp (nearest source frame), short side "
    "256 (bilinear, aspect kept), JPEG quality 90 per frame."
  ),
)
SMALL_CONFIG = KineticsConfig(
  name="small_10fps_128",
  fps=10.0,
  short_side=128,
  jpeg_quality=85,
  description=(
    "For fast experiments: 10 fps, short side 128, JPEG quality 85; about 8x smaller and "
    "faster to read than i3d_25fps_256."
  ),
)


class KineticsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Kinetics from the clips a user has downloaded; a subclass per version sets the class attributes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [I3D_CONFIG, SMALL_CONFIG]
  DEFAULT_CONFIG_NAME = I3D_CONFIG.name
  # DeepMind annotation archives, merged in order (700-2020 adds its delta top-up).
  ANNOTATION_ARCHIVES: tuple[str, ...] = ()
  NUM_CLASSES = 0
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put the clips you have downloaded below `manual_dir` (default
  `<data_dir>/downloads/manual`, or `tfds build --manual_dir`), in any layout: CVDF tarballs
  extracted (`train/`, `val/`, `test/`, `replacement/`), per-label folders, or flat. Clips are
  found by name, `{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,mkv,webm,avi,mov}`, or as
  full-length `{youtube_id}.{ext}` videos cut to the segment. `python -m kinetics_tfds.download`
  fetches them. Annotations are read from the DeepMind archive (`<name>.tar.gz`, or extracted
  as `<name>/`) or CVDF's `annotations/` folder; when none is there, the builder downloads the
  DeepMind archive.
  """

  def __init__(self, *, num_workers: int | None = None, annotations_url: str | None = None, **kwargs):
    """num_workers: build processes (default: all cores, or $KINETICS_TFDS_WORKERS).

    annotations_url: where to fetch a missing annotation archive, `{name}` standing for its name
    (default: DeepMind's bucket, or $KINETICS_TFDS_ANNOTATIONS_URL).
    """
    super().__init__(**kwargs)
    self._num_workers = num_workers or parallel.default_workers()
    self._annotations_url = annotations_url or os.environ.get(ANNOTATIONS_URL_ENV) or DEEPMIND_URL
    self._use_beam = False
    self._remote_manual_dir: str | None = None
    self._skipped: list[annotations.Rejected] = []

  @property
  def num_classes(self) -> int:
    """Classes in the output: the subset's, else the version's (or the config's count)."""
    if self.builder_config.classes is not None:
      return len(set(self.builder_config.classes))
    return self.builder_config.num_classes or self.NUM_CLASSES

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Video(
            shape=(None, None, None, 3),
            encoding_format="jpeg",
            doc="RGB frames, JPEG-encoded one by one at the config's fps and size.",
          ),
          "label": tfds.features.ClassLabel(num_classes=self.num_classes),
          "key": tfds.features.Text(doc="{youtube_id}_{time_start:06d}_{time_end:06d}"),
          "youtube_id": tfds.features.Text(),
          "time_start": tfds.features.Scalar(dtype=np.int32, doc="Segment start, seconds."),
          "time_end": tfds.features.Scalar(dtype=np.int32, doc="Segment end, seconds."),
          "source_fps": tfds.features.Scalar(dtype=np.float32, doc="Frame rate of the file."),
          "is_cc": tfds.features.Scalar(dtype=np.int32, doc="Creative Commons: 1/0, -1 unknown."),
        }
      ),
      supervised_keys=("video", "label"),
      homepage="https://github.com/google-deepmind/kinetics-i3d",
    )

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
    with build_lock.exclusive(os.fspath(self.data_dir)):
      super().download_and_prepare(**kwargs)

  def _download_and_prepare(self, dl_manager, download_config):
    """Runs TFDS's generation, then writes the skipped clips beside the dataset."""
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    self._skipped = []
    _remove_interrupted_builds(self.data_dir)
    super()._download_and_prepare(dl_manager, download_config)
    self._skipped.extend(_collect_beam_skips(self.data_dir))
    _write_skipped(self.data_dir, self._skipped)
    _log_skipped(self._skipped)

  def _annotation_sources(self, dl_manager, manual_dir: str):
    sources = annotations.find_sources(manual_dir, self.ANNOTATION_ARCHIVES)
    if sources:
      return sources
    logging.info("No annotation files in %s: downloading them.", manual_dir)
    return self._downloaded_sources(dl_manager, self.ANNOTATION_ARCHIVES)

  def _downloaded_sources(self, dl_manager, names):
    extracted = dl_manager.download_and_extract({name: self._annotations_url.format(name=name) for name in names})
    return [s for name in names for s in annotations.find_sources(os.fspath(extracted[name]), [name])]

  def _version_clips(self, dl_manager, manual_dir: str, version: str, split: str) -> list[annotations.Clip]:
    """The clips of another version's split, for `exclude`: its archive in manual_dir, else downloaded."""
    try:
      names = tfds.builder_cls(version).ANNOTATION_ARCHIVES
    except registered.DatasetNotFoundError:
      raise subsets.SelectionError(f"exclude: {version!r} is not a Kinetics version such as kinetics400") from None
    sources = subsets.version_sources(manual_dir, names) or self._downloaded_sources(dl_manager, names)
    found = annotations.read_annotations(sources, None, [split]).clips.get(split)
    if not found:
      raise annotations.AnnotationError(f"exclude: {version} has no {split} annotations in {manual_dir} or online")
    return found

  def _select(self, found: annotations.Annotations, dl_manager, manual_dir: str) -> subsets.Selection:
    """The config's exclusions and subset applied to the annotated clips."""
    config = self.builder_config
    excluded = subsets.exclusions(config.exclude, functools.partial(self._version_clips, dl_manager, manual_dir))
    return subsets.select(
      found.clips, found.classes, keep_classes=config.classes, max_per_class=config.max_per_class, excluded=excluded
    )

  def _split_generators(self, dl_manager):
    manual_dir = self._remote_manual_dir or os.fspath(dl_manager.manual_dir)
    num_classes = self.builder_config.num_classes or self.NUM_CLASSES
    with storage.local_annotations(manual_dir, annotations.is_source_path) as annotations_dir:
      found = annotations.read_annotations(self._annotation_sources(dl_manager, annotations_dir), num_classes)
      kept = self._select(found, dl_manager, annotations_dir)
    self.info.features["label"].names = kept.classes
    label_index = {name: i for i, name in enumerate(kept.classes)}
    self._skipped.extend(found.rejected + kept.skipped)
    for split, count in sorted(found.duplicates.items()):
      logging.warning("%s: %d duplicate annotation rows dropped (first row kept).", split, count)
    by_key, by_id = clips.scan(manual_dir)
    config = self.builder_config
    generators = {}
    for split, split_clips in kept.clips.items():
      tasks = []
      for clip in split_clips:
        located = clips.locate(clip, by_key, by_id, manual_dir)
        if located is None:
          self._skipped.append(annotations.Rejected(split, clip.key, "missing file"))
        else:
          label = label_index[clip.label] if clip.label is not None else -1
          tasks.append(examples.Task(clip, located, config.fps, config.short_side, config.jpeg_quality, label))
      logging.info("%s: %d of %d annotated clips found in %s.", split, len(tasks), len(split_clips), manual_dir)
      if tasks:
        generators[split] = self._generate_examples(split, tasks)
    if not generators:
      raise FileNotFoundError(
        f"None of the annotated clips is below {manual_dir}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    return generators

  def _generate_examples(self, split: str, tasks: list[examples.Task]):
    if self._use_beam:
      task_list = tfds.core.Path(self.data_dir) / f"{_TASK_LIST_PREFIX}{split}.jsonl"
      task_list.write_text("".join(task.to_json() + "\n" for task in tasks))
      return _beam_examples(os.fspath(task_list), os.path.join(self.data_dir, f".skipped-{split}"))
    return self._pool_records(split, tasks)

  def _pool_records(self, split: str, tasks: list[examples.Task]):
    """(key, record size) in task order; the workers write the records into the split's folder."""
    folder = self._records_dir(split)
    os.makedirs(folder, exist_ok=True)
    results = parallel.bounded_map(examples.RecordWriter(folder), tasks, self._num_workers, on_crash=_crashed)
    for result in parallel.logged_progress(results, len(tasks), split):
      if result.record_size is None:
        self._skipped.append(annotations.Rejected(result.split, result.key, result.reason))
      else:
        yield result.key, result.record_size

  def _records_dir(self, split: str) -> str:
    """Where workers put a split's records until they become shards: beside them, as TFDS spills
    its shuffle buffer, or in local scratch when the dataset folder is a URL."""
    if storage.is_url(os.fspath(self.data_dir)):
      return os.path.join(storage.scratch_dir(), f"kinetics_tfds_records_{os.path.basename(self.data_dir)}_{split}")
    return os.path.join(self.data_dir, f".records-{split}")

  def _generate_splits(self, dl_manager, download_config):
    """Without Beam, the workers write the shards (shards.py): the build process encodes and copies
    nothing, so one machine is not bound by it. TFDS would encode and write every example there."""
    if self._use_beam:
      return super()._generate_splits(dl_manager, download_config)
    split_infos = []
    for split, records in self._split_generators(dl_manager).items():
      if download_config.max_examples_per_split is not None:
        records = itertools.islice(records, download_config.max_examples_per_split)
      written = list(records)
      folder = self._records_dir(split)
      if not written:  # Every clip was skipped (and is in skipped_clips.csv); TFDS cannot shard no examples.
        logging.warning("%s: none of its clips could be built (see %s); the split is left out.", split, SKIPPED_FILE)
        shutil.rmtree(folder)
        continue
      template = self._get_filename_template(split_name=split)
      if self.info.file_format == tfds.core.FileFormat.TFRECORD:
        planned = shards.plan(split, written, folder, template, download_config.get_shard_config())
        logging.info("%s: writing %d shards.", split, len(planned))
        shard_lengths = []
        for shard, length in zip(planned, parallel.bounded_map(shards.assemble, planned, self._num_workers)):
          shards.remove_records(shard)
          shard_lengths.append(length)
      else:  # Other formats through TFDS's writer, in this process.
        shard_lengths = self._write_with_tfds(split, written, folder, template, download_config)
      shutil.rmtree(folder)
      num_bytes = sum(size for _, size in written)
      split_infos.append(
        tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths, num_bytes=num_bytes, filename_template=template)
      )
    return split_infos

  def _example_writer(self) -> writer_lib.ExampleWriter:
    return _ExampleWriter(file_format=self.info.file_format)

  def _write_with_tfds(self, split, written, folder, template, download_config) -> list[int]:
    writer = writer_lib.Writer(
      serializer=_Serialized(self.info.features.get_serialized_info()),
      filename_template=template,
      hash_salt=split,
      disable_shuffling=self.info.disable_shuffling,
      shard_config=download_config.get_shard_config(),
      example_writer=self._example_writer(),
      ignore_duplicates=download_config.ignore_duplicates,
    )
    for key, _ in written:
      writer.write(key, shards.read_record(os.path.join(folder, key)))
    return writer.finalize()[0]


class _ExampleWriter(writer_lib.ExampleWriter):
  """TFDS's (its documented hook for a builder's own writer), but ArrayRecord files are not compressed: JPEG frames
  do not compress (zstd saved 1.6% of the input benchmark's build), and undoing it cost a reader 23 ms of CPU per
  7 MB clip where reading took 4.5 (loaders, benchmarks/input_pipeline.py)."""

  def write(self, path, examples):
    if self.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      return super().write(path, examples)
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1,uncompressed")
    for _, serialized in examples:
      writer.write(serialized)
    writer.close()
    return None


class _Serialized(example_serializer.Serializer):
  """The records come serialised from the workers: nothing is left to do."""

  def serialize_example(self, example: bytes) -> bytes:
    return example


def _crashed(task: examples.Task) -> examples.Result:
  return examples.Result(task.clip.split, task.clip.key, reason="decoder crashed")


def _build_from_json(line: str) -> examples.Result:
  return examples.build(examples.Task.from_json(line))


def _has_example(result: examples.Result) -> bool:
  return result.example is not None


def _keyed_example(result: examples.Result):
  return result.key, result.example


def _skip_line(result: examples.Result) -> str:
  return _csv_line([result.split, result.key, result.reason])


def _csv_line(fields: list[str]) -> str:
  """One CSV line, without its end. csv quotes a field that holds a character of the line end it writes: with
  CR LF, a key holding either (a JSON file's youtube_id may) stays one field when read back."""
  out = io.StringIO()
  csv.writer(out, lineterminator="\r\n").writerow(fields)
  return out.getvalue()[:-2]


def _beam_examples(task_list: str, skipped_prefix: str):
  """The per-clip function as a Beam transform; skipped clips go to text files merged after the run.

  The workers read the tasks from `task_list` (one JSON line each, written beside the output):
  embedded in the pipeline with beam.Create they would be ~400 bytes per clip of job graph, over
  Dataflow's request limit for K700.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top  # Only Beam builds need it.

  @beam.ptransform_fn
  def generate(root):
    results = (
      root
      | "ReadTasks" >> beam.io.ReadFromText(task_list)
      | "Spread" >> beam.Reshuffle()  # One file is read by one worker; clips go to all.
      | "Build" >> beam.Map(_build_from_json)
    )
    _ = (
      results
      | "Skipped" >> beam.Filter(lambda r: not _has_example(r))
      | "SkipLines" >> beam.Map(_skip_line)
      | "WriteSkips" >> beam.io.WriteToText(skipped_prefix)
    )
    return results | "Built" >> beam.Filter(_has_example) | "Keyed" >> beam.Map(_keyed_example)

  return generate()  # pylint: disable=no-value-for-parameter


def _remove_interrupted_builds(current: str) -> None:
  """Deletes what killed builds of this version left: TFDS starts over in a new folder, and a
  K700 build's leftovers can be terabytes. Safe only under the version's build claim."""
  current = tfds.core.Path(current)
  version = current.name.split("_", 1)[1]
  for folder in current.parent.glob(f"incomplete.*_{version}"):
    if folder != current:
      logging.warning("Removing %s, left by an interrupted build.", folder)
      folder.rmtree()


def _collect_beam_skips(data_dir: str) -> list[annotations.Rejected]:
  """The skipped clips Beam workers wrote; removes those files and the task lists."""
  for path in tfds.core.Path(data_dir).glob(f"{_TASK_LIST_PREFIX}*"):
    path.unlink()
  rows = []
  for path in tfds.core.Path(data_dir).glob(".skipped-*"):
    rows += _csv_rows(path)
    path.unlink()
  return rows


def _write_skipped(data_dir: str, skipped: list[annotations.Rejected]) -> None:
  rows = [[row.split, row.key, row.reason] for row in sorted(skipped, key=lambda r: (r.split, r.key, r.reason))]
  text = "".join(_csv_line(fields) + "\n" for fields in [["split", "key", "reason"], *rows])
  (tfds.core.Path(data_dir) / SKIPPED_FILE).write_bytes(text.encode())


def _log_skipped(skipped: list[annotations.Rejected]) -> None:
  counts = collections.Counter((r.split, r.reason.split(":")[0]) for r in skipped)
  for (split, reason), count in sorted(counts.items()):
    logging.info("Skipped %s: %d clips, %s.", split, count, reason)
  logging.info("%d clips skipped in all; see %s.", len(skipped), SKIPPED_FILE)


def read_skipped(data_dir: str) -> list[annotations.Rejected]:
  """The skipped clips a build recorded in its version folder."""
  return _csv_rows(tfds.core.Path(data_dir) / SKIPPED_FILE)[1:]


def _csv_rows(path: tfds.core.Path) -> list[annotations.Rejected]:
  """The (split, key, reason) rows of a CSV file. Lines end at LF only (csv's newline=""): str.splitlines would
  also split a malformed row's key at U+001C-U+001E, U+0085 or U+2028."""
  return [annotations.Rejected(*row) for row in csv.reader(io.StringIO(path.read_bytes().decode(), newline=""))]
