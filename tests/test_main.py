"""The main job, `python -m kinetics_tfds`, end to end: builds the sample, trains and evaluates I3D on it."""

import json
import subprocess
import sys


def test_main_job_prints_accuracy_and_speed(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "kinetics_tfds", f"--work_dir={tmp_path}", "--train_steps=10"],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout.splitlines()[-1])
  assert printed["built"]["splits"] == {"train": 48, "validation": 16}
  i3d = printed["i3d"]
  assert i3d["steps"] == 10 and i3d["videos"] == 16
  assert 0 <= i3d["top1"] <= i3d["top5"] <= 1
  assert i3d["train_clips_per_second"] > 0 and i3d["eval_clips_per_second"] > 0
