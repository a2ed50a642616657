"""Running one of the package's modules as a command: `python -m`, a console script or a checkout's script.

absl's `--help` lists the flags of the module that `sys.argv[0]` names. A console script
(`kinetics-train`) or a wrapper (`benchmarks/i3d.py`) is another file than the module that defines the
flags, whose help would then be empty.
"""

from collections.abc import Callable
import sys

from absl import app
from absl import flags


def run(main: Callable[[list[str]], None], module_name: str) -> None:
  """app.run(main), with the flags `module_name` defines shown by --help whatever file started the process."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
