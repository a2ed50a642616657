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

import json
import os

from absl import app

from kinetics_tfds import command
from kinetics_tfds.training import config as config_lib

command.define_flags(config_lib.Config, __name__)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = command.from_flags(config_lib.Config)
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
