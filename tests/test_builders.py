"""TFDS's own builder checks, on each version's generated dummy_data/, for every config."""

import tensorflow_datasets as tfds

from kinetics_tfds.kinetics400 import kinetics400_dataset_builder
from kinetics_tfds.kinetics600 import kinetics600_dataset_builder
from kinetics_tfds.kinetics700 import kinetics700_dataset_builder
from kinetics_tfds.kinetics700_2020 import kinetics700_2020_dataset_builder


class _KineticsTestCase(tfds.testing.DatasetBuilderTestCase):
  # The builder reads the manual folder with os/open in plain modules, as a user's machine does.
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False
  SKIP_CHECKSUMS = True
  SKIP_TF1_GRAPH_MODE = True


class Kinetics400Test(_KineticsTestCase):
  DATASET_CLASS = kinetics400_dataset_builder.Builder
  SPLITS = {"train": 3, "validation": 2, "test": 2}


class Kinetics600Test(_KineticsTestCase):
  DATASET_CLASS = kinetics600_dataset_builder.Builder
  SPLITS = {"train": 3, "validation": 2, "test": 2}


class Kinetics700Test(_KineticsTestCase):
  DATASET_CLASS = kinetics700_dataset_builder.Builder
  SPLITS = {"train": 3, "validation": 2, "test": 2}


class Kinetics7002020Test(_KineticsTestCase):
  DATASET_CLASS = kinetics700_2020_dataset_builder.Builder
  SPLITS = {"train": 4, "validation": 2, "test": 2}  # The delta top-up adds a train clip.


del _KineticsTestCase  # Not a test itself.

if __name__ == "__main__":
  tfds.testing.test_main()
