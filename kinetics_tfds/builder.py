"""The shared Kinetics builder and its configs; each version subclasses it in its own TFDS folder.

TFDS's declarative face: what an example is (`_info`), where the inputs are and which clips a build holds
(`_split_generators`), and the per-clip examples (`_generate_examples`). Heavy work lives in plain modules
(annotations, clips, video, subsets); how the per-clip function runs (serially, over a worker pool on one machine,
or as a Beam pipeline when `tfds build` is given `--beam_pipeline_options`) is the base class's, in build/.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from kinetics_tfds import annotations
from kinetics_tfds import array_records
from kinetics_tfds import clips
from kinetics_tfds import storage
from kinetics_tfds import subsets
from kinetics_tfds import user_error
from kinetics_tfds.build import examples
from kinetics_tfds.build import runner
from kinetics_tfds.download import annotation_archives

# `tfds build --imports kinetics_tfds` runs us inside TFDS's command: a user's mistake there gets one line too.
user_error.install_hook_in_tfds_command()


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
  name=array_records.DEFAULT_CONFIG,  # What readers open when a name has no config.
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


class KineticsBuilder(runner.ClipBuilder, skip_registration=True):
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

  def __init__(self, *, annotations_url: str | None = None, **kwargs):
    """annotations_url: where to fetch a missing annotation archive, `{name}` standing for its name
    (default: DeepMind's bucket, or $KINETICS_TFDS_ANNOTATIONS_URL). num_workers: see runner.ClipBuilder.
    """
    super().__init__(**kwargs)
    self._annotations_url = (
      annotations_url or os.environ.get(annotations.ANNOTATIONS_URL_ENV) or annotations.DEEPMIND_URL
    )

  @property
  def _annotated_classes(self) -> int:
    """The classes the annotations are checked against: the config's count, else the version's."""
    return self.builder_config.num_classes or self.NUM_CLASSES

  @property
  def num_classes(self) -> int:
    """Classes in the output: the subset's, else the annotated ones."""
    if self.builder_config.classes is not None:
      return len(set(self.builder_config.classes))
    return self._annotated_classes

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

  def _split_generators(self, dl_manager):
    manual_dir = self.manual_dir(dl_manager)
    with storage.local_annotations(manual_dir, annotations.is_source_path) as annotations_dir:
      found = annotations.read_annotations(
        self._annotation_sources(dl_manager, annotations_dir), self._annotated_classes
      )
      kept = self._select(found, dl_manager, annotations_dir)
    self.info.features["label"].names = kept.classes
    label_index = {name: i for i, name in enumerate(kept.classes)}
    self.skipped.extend(found.rejected + kept.skipped)
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
          self.skipped.append(annotations.Rejected(split, clip.key, "missing file"))
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
    """(key, example) per clip that builds, from `examples.build(task)`; a clip that does not is skipped, with its
    reason, in skipped_clips.csv. The base class runs it over worker processes, or Beam workers."""
    return self.clip_examples(split, tasks)

  def _annotation_sources(self, dl_manager, manual_dir: str):
    """This version's annotations in the manual folder, else its DeepMind archives, downloaded when missing."""
    sources = annotations.find_sources(manual_dir, self.ANNOTATION_ARCHIVES)
    if sources:
      return sources
    logging.info("No annotation files in %s: downloading them.", manual_dir)
    return self._downloaded_sources(dl_manager, self.ANNOTATION_ARCHIVES)

  def _downloaded_sources(self, dl_manager, names):
    """The archives in the download folder (local scratch when the dataset folder is a URL), fetched if missing."""
    folder = os.fspath(dl_manager.download_dir)
    if storage.is_url(folder):
      folder = storage.scratch_dir()
    return annotation_archives.version_sources(folder, names, self._annotations_url)

  def _version_clips(self, dl_manager, manual_dir: str, version: str, split: str) -> list[annotations.Clip]:
    """The clips of another version's split, for `exclude`: its archive in manual_dir, else downloaded."""
    try:
      names = tfds.builder_cls(version).ANNOTATION_ARCHIVES
    except tfds.core.DatasetNotFoundError:
      raise subsets.SelectionError(f"exclude: {version!r} is not a Kinetics version such as kinetics400") from None
    sources = annotation_archives.version_sources(manual_dir, names) or self._downloaded_sources(dl_manager, names)
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
