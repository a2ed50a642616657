"""The installed commands as a user meets them first: `--help` says what each does, with an example, at once."""

import ast
import importlib.metadata
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

_SCRIPTS = {
  entry.name: entry.value
  for entry in importlib.metadata.entry_points(group="console_scripts")
  if entry.value.startswith("kinetics_tfds")
}


def test_every_command_is_installed():
  assert sorted(_SCRIPTS) == [
    "kinetics-demo",
    "kinetics-download",
    "kinetics-overlap",
    "kinetics-report",
    "kinetics-train",
  ]


@pytest.mark.parametrize("script", sorted(_SCRIPTS))
def test_help_describes_the_command_with_an_example(script):
  binary = pathlib.Path(sys.executable).with_name(script)
  result = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # Neither TensorFlow's start-up banner nor anything else: --help imports no TensorFlow.
  assert result.stderr == ""
  # The module's docstring (read, not imported: two commands' flags may share a name).
  source = pathlib.Path(importlib.util.find_spec(_SCRIPTS[script].partition(":")[0]).origin).read_text()
  assert result.stdout.startswith(ast.get_docstring(ast.parse(source)).splitlines()[0])
  assert re.search(r"^ +(\w+=\w+ )?(python -m kinetics_tfds|kinetics-)\S* --\w+", result.stdout, re.M), result.stdout
  # Its flags, under the name the user typed, not the virtual environment's path to the script.
  assert f"\n{script}:\n  --" in result.stdout and str(binary.parent) not in result.stdout
