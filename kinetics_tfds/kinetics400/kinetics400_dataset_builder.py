"""Kinetics-400: `tfds build kinetics400 --imports kinetics_tfds` (or `tfds build kinetics400` from this package)."""

from kinetics_tfds import builder


class Builder(builder.KineticsBuilder):
  """Kinetics-400 (400 classes), built from the clips in the manual folder."""

  ANNOTATION_ARCHIVES = ("kinetics400",)
  NUM_CLASSES = 400
