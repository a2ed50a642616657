"""A prepared Kinetics builder from `--dataset` and `--data_dir`, or a clear error saying how to build it."""

import tensorflow_datasets as tfds

from kinetics_tfds import user_error

NAMES = ("kinetics400", "kinetics600", "kinetics700", "kinetics700_2020")


def prepared_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """`dataset` is a builder name (its default config, i3d_25fps_256) or `name/config`."""
  name = dataset.split("/", 1)[0]
  if name not in NAMES:
    raise DatasetError(f"--dataset must be one of {NAMES}, optionally /config; got {dataset!r}")
  builder = tfds.builder(dataset, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetError(
      f"dataset {dataset} is not prepared in {builder.data_dir}: build it first, e.g. "
      f"`tfds build --imports=kinetics_tfds {dataset} --data_dir={data_dir or '~/tensorflow_datasets'} "
      "--manual_dir=<clips>`, or pass the --data_dir it was built in"
    )
  return builder


class DatasetError(user_error.UserError):
  """--dataset names no Kinetics dataset, or one not prepared in --data_dir."""
