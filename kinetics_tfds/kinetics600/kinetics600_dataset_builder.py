"""Kinetics-600: `tfds build kinetics600 --imports kinetics_tfds` (or `tfds build kinetics600` from this package)."""

from kinetics_tfds import builder


class Builder(builder.KineticsBuilder):
  """Kinetics-600 (600 classes), built from the clips in the manual folder."""

  ANNOTATION_ARCHIVES = ("kinetics600",)
  NUM_CLASSES = 600
