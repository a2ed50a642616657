"""Running one of the package's modules as a command: `python -m`, a console script or a checkout's script.

absl's `--help` lists the flags of the module that `sys.argv[0]` names and shows `__main__`'s docstring. A console
script (`kinetics-train`) or a wrapper (`benchmarks/i3d.py`) is another file than the module that defines the flags
and the docstring, whose help would then be empty. Commands also keep TensorFlow's start-up noise off the terminal;
importing the package as a library changes nothing of TensorFlow's logging.

Every command and benchmark says what it takes as a dataclass of settings, each field a `setting` with its help;
`define_flags` makes a flag of each field and `from_flags` gives the dataclass back once the flags are parsed. So
a run's settings are one value, documented in one place, as `training.config.Config` is for `kinetics-train`.
"""

from collections.abc import Callable
import dataclasses
import importlib.util
import os
import re
import sys
import tempfile
import types
import typing

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


def setting(default, help_text: str, choices=None, *, lower_bound=None, required: bool = False, repeated: bool = False):
  """A field of a settings dataclass: its flag's default and help, and what the flag accepts. A tuple field is a
  comma list, or with `repeated` a flag given once per item; `required` flags have no default (None)."""
  metadata = dict(help=help_text, choices=choices, lower_bound=lower_bound, required=required, repeated=repeated)
  return dataclasses.field(default=default, metadata=metadata)


def _hints(settings_type) -> dict[str, typing.Any]:
  """Each field's type, `int | None` taken as int."""
  hints = typing.get_type_hints(settings_type)
  for name, hint in hints.items():
    if isinstance(hint, types.UnionType):
      hints[name] = next(arg for arg in hint.__args__ if arg is not type(None))
  return hints


def define_flags(settings_type, module_name: str) -> None:
  """A flag per field of the dataclass `settings_type`, as the module `module_name` (its `__name__`) defines them,
  so that its `--help` lists them."""
  if module_name == "__main__":
    module_name = sys.argv[0]  # What absl keys a script's own flags by.
  hints = _hints(settings_type)
  for field in dataclasses.fields(settings_type):
    meta, name, default = field.metadata, field.name, field.default
    common = dict(required=meta["required"], module_name=module_name)
    kind = typing.get_origin(hints[name]) or hints[name]
    if meta["choices"]:
      flags.DEFINE_enum(name, default, meta["choices"], meta["help"], **common)
    elif kind is tuple:
      define = flags.DEFINE_multi_string if meta["repeated"] else flags.DEFINE_list
      define(name, None if default is None else [str(value) for value in default], meta["help"], **common)
    elif kind is bool:
      flags.DEFINE_bool(name, default, meta["help"], **common)
    elif kind in (int, float):
      define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
      define(name, default, meta["help"], lower_bound=meta["lower_bound"], **common)
    else:
      flags.DEFINE_string(name, default, meta["help"], **common)


def from_flags(settings_type):
  """The `settings_type` the parsed command line gives. A tuple's items take its item type; one that cannot is a
  UsageError naming the flag."""
  values = {}
  hints = _hints(settings_type)
  for field in dataclasses.fields(settings_type):
    value = flags.FLAGS[field.name].value
    if typing.get_origin(hints[field.name]) is tuple and value is not None:
      items = [item.strip() for item in value]
      item_type = typing.get_args(hints[field.name])[0]
      try:
        value = tuple(item_type(item) for item in items)
      except ValueError:
        raise app.UsageError(f"--{field.name} must be a list of {item_type.__name__}, got {','.join(items)}") from None
    values[field.name] = value
  return settings_type(**values)
