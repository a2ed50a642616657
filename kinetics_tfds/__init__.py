"""kinetics_tfds: DeepMind's Kinetics datasets for TensorFlow Datasets and Keras.

Importing it registers the builders `kinetics400`, `kinetics600`, `kinetics700` and
`kinetics700_2020`. Where TensorFlow Datasets is not installed at all (an accelerator machine with
only Keras and JAX, running the model on synthetic clips), there is nothing to register and the
model modules still import.
"""

import importlib.util

if importlib.util.find_spec("tensorflow_datasets") is not None:
  from kinetics_tfds.builder import KineticsConfig
  from kinetics_tfds.kinetics400.kinetics400_dataset_builder import Builder as Kinetics400
  from kinetics_tfds.kinetics600.kinetics600_dataset_builder import Builder as Kinetics600
  from kinetics_tfds.kinetics700.kinetics700_dataset_builder import Builder as Kinetics700
  from kinetics_tfds.kinetics700_2020.kinetics700_2020_dataset_builder import Builder as Kinetics700_2020

  __all__ = ["KineticsConfig", "Kinetics400", "Kinetics600", "Kinetics700", "Kinetics700_2020"]
