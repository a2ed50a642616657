"""Kinetics-700-2020: `tfds build kinetics700_2020 --imports kinetics_tfds`, or from this folder's package.

`tfds build kinetics700_2020` finds it by path inside the package too.
"""

from kinetics_tfds import builder


class Builder(builder.KineticsBuilder):
  """Kinetics-700-2020 (700 classes), built from the clips in the manual folder."""

  ANNOTATION_ARCHIVES = ("kinetics700_2020", "kinetics700_2020_delta")
  NUM_CLASSES = 700
