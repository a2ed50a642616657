"""Reading records into Python in many fresh processes at once, under CPU load: the report and
`tfds.as_numpy(pipeline.records(...))`, the two readers that once segfaulted in `iterator_get_next` while the
machine was loaded (issue 28). Each process checks every frame it reads; any crash fails the test."""

import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow_datasets as tfds

import conftest
import kinetics_tfds

_CONFIG = kinetics_tfds.KineticsConfig(name="stress", fps=25.0, short_side=256, num_classes=len(conftest.SHARED_LABELS))
_PROCESSES, _AT_ONCE = 4, 2
_READ = textwrap.dedent("""
  import sys
  import tensorflow_datasets as tfds
  from kinetics_tfds import pipeline

  builder = tfds.builder("kinetics400/stress", data_dir=sys.argv[1])
  frames = 0
  for _ in range(3):
    for split in builder.info.splits:
      for example in tfds.as_numpy(pipeline.records(builder, split)):
        assert all(f[:2] == b"\\xff\\xd8" and f[-2:] == b"\\xff\\xd9" for f in example["video"]), example["key"]
        frames += len(example["video"])
  print("frames", frames)
""")


@pytest.fixture(scope="module")
def build(shared_data, tmp_path_factory):
  """The real clips at the default config's settings (25 fps, short side 256): records of up to 250 frames."""
  root = tmp_path_factory.mktemp("stress")
  conftest.shared_manual_dir(root / "manual", shared_data / "kinetics" / "videos")
  builder = tfds.builder("kinetics400", config=_CONFIG, data_dir=str(root / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  return root


def test_records_and_report_in_many_processes_under_load(build, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(conftest.REPO)}
  data_dir = str(build / "data")
  hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
  try:
    commands = [
      [sys.executable, "-c", _READ, data_dir]
      if n % 2
      else [sys.executable, "-m", "kinetics_tfds.report", "--dataset=kinetics400/stress", f"--data_dir={data_dir}"]
      + [f"--out={tmp_path / f'report{n}'}"]
      for n in range(_PROCESSES)
    ]
    results = []
    for start in range(0, _PROCESSES, _AT_ONCE):
      running = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands[start : start + _AT_ONCE]
      ]
      for process in running:
        out, err = process.communicate(timeout=600)
        results.append((process.returncode, out, err))
  finally:
    for hog in hogs:
      hog.kill()
  failed = [(code, err[-2000:]) for code, _, err in results if code != 0]
  assert not failed, failed
  frame_counts = {out.split()[-1] for code, out, _ in results if out.startswith("frames")}
  assert len(frame_counts) == 1 and int(frame_counts.pop()) > 3 * 200  # Every reader read every frame.
