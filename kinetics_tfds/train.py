r"""Trains and/or evaluates the Keras I3D on Kinetics, on CPU, all local GPUs, TF_CONFIG workers or a TPU.

  python -m kinetics_tfds.train --dataset=kinetics400 --data_dir=gs://bucket/tfds --model_dir=~/i3d_k400 \
      --tpu=local
  KERAS_BACKEND=jax kinetics-train --synthetic --mode=train --batch_size=16 --precision=mixed_bfloat16

Installed as `kinetics-train`; `python benchmarks/i3d.py` runs it from a checkout. Rerunning with the same
--model_dir resumes from the last checkpoint and trains on to its --train_steps. Prints progress lines with clips/s
and, at the end, one JSON line (also written to model_dir/summary.json). --synthetic feeds random clips kept on the
device and with the JAX backend needs no TensorFlow. Each flag is a field of `training.config.Config`, with its help
there.
"""

import dataclasses
import json
import os
import types

from absl import app
from absl import flags

from kinetics_tfds import command
from kinetics_tfds.training import config as config_lib


def _define_flags() -> None:
  for field in dataclasses.fields(config_lib.Config):
    kind = field.type
    if isinstance(kind, types.UnionType):  # `float | None` and the like: unset by default.
      kind = next(arg for arg in kind.__args__ if arg is not type(None))
    choices, help_text = field.metadata["choices"], field.metadata["help"]
    if choices:
      flags.DEFINE_enum(field.name, field.default, choices, help_text)
    elif kind is bool:
      flags.DEFINE_bool(field.name, field.default, help_text)
    elif kind is int:
      flags.DEFINE_integer(field.name, field.default, help_text)
    elif kind is float:
      flags.DEFINE_float(field.name, field.default, help_text)
    elif kind is str:
      flags.DEFINE_string(field.name, field.default, help_text)
    else:  # tuple[float, ...]
      flags.DEFINE_list(field.name, [str(value) for value in field.default], help_text)


_define_flags()


def config_from_flags() -> config_lib.Config:
  """The Config the command line describes; raises ConfigError naming a flag that cannot work."""
  values = {field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(config_lib.Config)}
  try:
    values["lr_step_fractions"] = tuple(float(f) for f in values["lr_step_fractions"])
  except ValueError:
    raise config_lib.ConfigError(
      f"--lr_step_fractions must be numbers, got {','.join(values['lr_step_fractions'])}"
    ) from None
  return config_lib.Config(**values)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = config_from_flags()
  # Keras (and with it TensorFlow or JAX) starts only once the flags are known to be good.
  tf_data = not config.synthetic and config.loader == "tfdata"
  if tf_data or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    command.import_tensorflow()
  from kinetics_tfds.training import run  # pylint: disable=g-import-not-at-top

  # A user's mistake (user_error.UserError) ends as one line (the package's exception hook); a bug, as a traceback.
  print(json.dumps(run.run(config, printer=lambda line: print(line, flush=True))))


def run_main() -> None:
  """The `kinetics-train` console script."""
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
