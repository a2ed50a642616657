"""The main job, `python -m kinetics_tfds`, end to end: builds the sample, trains and evaluates I3D on it."""

import json
import os
import subprocess
import sys

from kinetics_tfds import __main__ as main_job
from kinetics_tfds.training import loop


def test_main_job_prints_accuracy_and_speed(tmp_path):
  # A last run's checkpoint, unreadable: the job must start its model_dir afresh, not resume from it.
  (tmp_path / "i3d" / "backup").mkdir(parents=True)
  (tmp_path / "i3d" / loop.CHECKPOINT).write_bytes(b"not a checkpoint")
  result = subprocess.run(
    [sys.executable, "-m", "kinetics_tfds", f"--work_dir={tmp_path}", "--train_steps=10"],
    capture_output=True,
    text=True,
    timeout=900,
    # As from a fresh shell: this process's Keras has set TensorFlow's C++ log level, which the job would keep.
    env={name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # A few readable lines, warnings included: the log file has the rest.
  shown = (result.stdout + result.stderr).splitlines()
  assert len(shown) <= 25 and not result.stderr, result.stdout + result.stderr
  printed = json.loads((tmp_path / main_job.RESULT_FILE).read_text())
  assert "I3D after 10 steps: top-1" in result.stdout and printed["built"]["load_with"] in result.stdout
  assert "train: 48 of 48 annotated clips found" in (tmp_path / main_job.LOG_FILE).read_text()
  built = printed["built"]
  assert built["splits"] == {"train": 48, "validation": 16}
  assert built["classes"] == ["swiping down", "swiping left", "swiping right", "swiping up"]
  assert built["video_shape_of_first_example"] == [50, 80, 107, 3]  # 2 s at 25 fps, 160x120 to short side 80.
  i3d = printed["i3d"]
  assert i3d["steps"] == 10 and i3d["videos"] == 16
  correct = i3d["top1"] * i3d["videos"]
  assert abs(correct - round(correct)) < 1e-6  # A share of the 16 held-out videos.
  assert i3d["top5"] == 1.0  # Four classes: the true one is always among the top five.
  assert i3d["train_clips_per_second"] > 0 and i3d["eval_clips_per_second"] > 0
  model_dir = i3d["model_dir"]
  assert model_dir == str(tmp_path / "i3d") and "resumed" not in result.stderr
  assert os.path.exists(os.path.join(model_dir, loop.FINAL_WEIGHTS))
  with open(os.path.join(model_dir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["top1"] == i3d["top1"]
  assert summary["config"]["deterministic"]  # So its accuracy is the same on every run (tests/test_train.py).
