"""Kinetics-700: `tfds build kinetics700 --imports kinetics_tfds` (or `tfds build kinetics700` from this package)."""

from kinetics_tfds import builder


class Builder(builder.KineticsBuilder):
  """Kinetics-700 (700 classes), built from the clips in the manual folder."""

  ANNOTATION_ARCHIVES = ("kinetics700",)
  NUM_CLASSES = 700
