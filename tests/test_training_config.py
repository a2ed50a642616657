"""The training settings (training/config.py): every flag is checked before anything is built, a bad one is the
command's first line, and --help shows each setting from a wrapper script."""

import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import our_stderr
from conftest import run_command
from kinetics_tfds.training import config as config_lib


@pytest.mark.parametrize(
  "name, value",
  [("batch_size", 0), ("eval_views", "0x3"), ("eval_views", "2x5"), ("eval_views", "-1x3"), ("num_frames", 0)],
)
def test_training_flags_are_checked_before_anything_is_built(name, value):
  with pytest.raises(config_lib.ConfigError, match=f"^--{name}"):
    config_lib.Config(**{name: value})


def test_training_command_error_is_its_first_line(tmp_path):
  done = run_command(
    [sys.executable, "benchmarks/i3d.py", "--synthetic", "--batch_size=0", f"--model_dir={tmp_path / 'model'}"]
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert our_stderr(done.stderr)[0] == "i3d.py: error: --batch_size must be at least 1, got 0", done.stderr
  assert not (tmp_path / "model").exists()  # Nothing was built.


def test_eval_views():
  assert config_lib.parse_views("whole") == (None, 1)
  assert config_lib.parse_views("10x3") == (10, 3)
  with pytest.raises(ValueError, match="KxN"):
    config_lib.parse_views("ten")


def test_help_lists_every_setting_from_a_wrapper_script():
  """benchmarks/i3d.py defines no flag itself: --help still shows each Config field's flag and its help."""
  result = subprocess.run([sys.executable, "benchmarks/i3d.py", "--help"], capture_output=True, text=True, cwd=REPO)
  assert result.stdout.lstrip().startswith("The training command from a checkout"), result.stderr[-2000:]
  shown = " ".join(result.stdout.split())
  for field in dataclasses.fields(config_lib.Config):
    flag = f"--[no]{field.name}: " if field.type is bool else f"--{field.name}: "
    assert flag in shown and field.metadata["help"][:30] in shown, field.name
