"""Running one of the package's modules as a command: `python -m`, a console script or a checkout's script.

absl's `--help` lists the flags of the module that `sys.argv[0]` names and shows `__main__`'s docstring. A console
script (`kinetics-train`) or a wrapper (`benchmarks/i3d.py`) is another file than the module that defines the flags
and the docstring, whose help would then be empty. Commands also keep TensorFlow's start-up noise off the terminal;
importing the package as a library changes nothing of TensorFlow's logging.
"""

from collections.abc import Callable
import importlib.util
import os
import re
import sys
import tempfile

from absl import app
from absl import flags

from kinetics_tfds import user_error

_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")
# What importing TensorFlow writes before its logging starts (each library it loads prints its own copy), and the
# cuInit failure of a machine with CUDA libraries but no GPU: none of it is news to a user, none of it is filtered by
# TF_CPP_MIN_LOG_LEVEL.
_TENSORFLOW_BANNER = re.compile(
  r"WARNING: All log messages before absl::InitializeLog|I0000 \S+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc"
  r"|To enable the following instructions: |E0000 \S+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
)


def run(main: Callable[[list[str]], None], module_name: str) -> None:
  """app.run(main), as a command: `--help` shows the module's docstring (what it does, an example) and its flags under
  the name the user typed (`kinetics-report`, `python -m kinetics_tfds.report`) and exits with status 0; a
  user_error.UserError ends it with one line."""
  user_error.install_hook()
  defining = sys.argv[0] if module_name == "__main__" else module_name  # absl keys __main__'s flags by its path.
  key_flags = flags.FLAGS.get_key_flags_for_module(defining)
  sys.argv[0] = user_error.program()
  for flag in key_flags:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  main_module = sys.modules["__main__"]
  main_module.__doc__ = main_module.__doc__ or sys.modules[module_name].__doc__  # A wrapper script may have its own.
  # C++ INFO and WARNING lines (tf.data's notes on caches and buffer sizes) stay off; a user's own setting wins.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, except that asking for help exits with status 0: it is no error."""
  try:
    return app.parse_flags_with_usage(argv)
  except SystemExit as exit_:
    if exit_.code == 1 and any(arg.lstrip("-").partition("=")[0] in _HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)
    raise


def import_tensorflow() -> None:
  """Imports TensorFlow and finds its devices, leaving out its start-up banner and cuInit failure (see above);
  whatever else it writes to stderr meanwhile is shown. A no-op where TensorFlow is not installed."""
  if importlib.util.find_spec("tensorflow") is None:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)  # The banner comes from C++, below sys.stderr.
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top

      tf.config.list_physical_devices()
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode(errors="replace").splitlines(keepends=True)
      sys.stderr.write("".join(line for line in lines if not _TENSORFLOW_BANNER.match(line)))
