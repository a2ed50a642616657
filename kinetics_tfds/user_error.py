"""A user's mistake in a file or flag: one line on stderr naming it and the fix, never a traceback.

Our commands (`command.run`) install an exception hook that prints a UserError as `program: error: message` (exit
status 1, as for any uncaught exception) and leaves every other exception to the hook it found. So does the builder
module when `tfds build --imports kinetics_tfds` loads it inside TFDS's command, whose errors would end as Python
tracebacks. A library import leaves the hook alone: a notebook's stays its own.
"""

import os
import sys


class UserError(ValueError):
  """Raised with a message that names the file or flag at fault and what to do."""


def program() -> str:
  """How the user started this process: `tfds`, `i3d.py`, `kinetics-report` or `python -m kinetics_tfds.download`."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None:
    return f"python -m {spec.name.removesuffix('.__main__')}"
  return os.path.basename(sys.argv[0]) or "python"


def _hook(previous):
  def hook(exc_type, exc, traceback):
    if issubclass(exc_type, UserError):
      print(f"{program()}: error: {exc}", file=sys.stderr, flush=True)
    else:
      previous(exc_type, exc, traceback)

  hook.kinetics_tfds = True
  return hook


def install_hook() -> None:
  """Makes uncaught UserErrors one line; idempotent."""
  if not getattr(sys.excepthook, "kinetics_tfds", False):
    sys.excepthook = _hook(sys.excepthook)


_TFDS_COMMAND = "tensorflow_datasets.scripts.cli.main"  # What the `tfds` script runs.


def install_hook_in_tfds_command() -> None:
  """install_hook(), when this process is TFDS's command (`tfds build`, or `python -m` of its module)."""
  main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if _TFDS_COMMAND in sys.modules or (main_spec is not None and main_spec.name == _TFDS_COMMAND):
    install_hook()
