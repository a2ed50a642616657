"""One build at a time per dataset version (build/lock.py): two `tfds build` processes started together on one
manual folder leave one complete dataset, and a second build waits for the first's claim, naming its holder. The
concurrent build also holds a clip whose timestamps jump, which the build bounds by its segment."""

import json
import logging as pylogging
import os
import subprocess
import threading
import time

from absl import logging
import pytest
import tensorflow_datasets as tfds

from conftest import JUMPING
from conftest import SMALL_CLIP
from conftest import TINY_CONFIG
from conftest import tfds_build
from conftest import write_jumping_clip
from kinetics_tfds import motion_clips
from kinetics_tfds.build import lock


@pytest.fixture(scope="module")
def concurrent_builds(tmp_path_factory):
  """Two `tfds build` processes of one dataset started together on one manual folder."""
  root = tmp_path_factory.mktemp("concurrent")
  manual, data_dir = root / "manual", root / "data"
  written = motion_clips.make_manual_dir(str(manual), clips_per_class={"train": 2, "validation": 1}, **SMALL_CLIP)
  write_jumping_clip(manual / "train" / f"{JUMPING.key}.mp4")
  motion_clips.write_annotations(str(manual / "kinetics400"), "train", written["train"] + [JUMPING])
  command = tfds_build("kinetics400", manual, data_dir, json.dumps(TINY_CONFIG))
  builds = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
  logs = [build.communicate(timeout=600)[0] for build in builds]
  return written, data_dir, [build.returncode for build in builds], logs


def test_two_builds_at_once_leave_one_complete_dataset(concurrent_builds):
  written, data_dir, returncodes, logs = concurrent_builds
  assert returncodes == [0, 0], logs
  assert any("waiting for it to finish" in log or "Reusing dataset" in log for log in logs), logs
  assert not any("Removing" in log for log in logs), logs  # Neither deleted the other's live folder.
  config_dir = data_dir / "kinetics400" / "tiny"
  assert sorted(p.name for p in config_dir.iterdir() if not p.name.startswith(".")) == ["1.0.0"]
  built = tfds.builder_from_directory(str(config_dir / "1.0.0"))
  for split, clips in written.items():
    keys = {ex["key"].decode() for ex in tfds.as_numpy(built.as_dataset(split=split))}
    assert keys == {c.key for c in clips} | ({JUMPING.key} if split == "train" else set())


def test_a_clip_with_jumping_timestamps_is_bounded_by_its_segment(concurrent_builds):
  _, data_dir, _, logs = concurrent_builds
  built = tfds.builder_from_directory(str(data_dir / "kinetics400" / "tiny" / "1.0.0"))
  ds = built.as_dataset(split="train", decoders={"video": tfds.decode.SkipDecoding()})
  frames = {ex["key"].decode(): len(ex["video"]) for ex in tfds.as_numpy(ds)}
  assert frames[JUMPING.key] == 10  # Not 90,000: the hour after the jump lies beyond the 10 s segment.
  assert any(f"{JUMPING.key}: 0.4 s of video for its 10 s segment" in log for log in logs)


def test_a_second_build_waits_for_the_claim(tmp_path):
  folder = tmp_path / "kinetics400" / "tiny" / "1.0.0"
  entered, messages = threading.Event(), []

  class Recorder(pylogging.Handler):
    def emit(self, record):
      messages.append(record.getMessage())

  recorder = Recorder()
  logging.get_absl_logger().addHandler(recorder)

  def second():
    with lock.exclusive(str(folder)):
      entered.set()

  try:
    with lock.exclusive(str(folder)):
      thread = threading.Thread(target=second)
      thread.start()
      deadline = time.monotonic() + 10
      while not any("waiting for it to finish" in m for m in messages) and time.monotonic() < deadline:
        time.sleep(0.01)
      assert any(f"(pid {os.getpid()} on" in m for m in messages), messages  # It names the holder.
      assert not entered.is_set()
    thread.join(10)
    assert entered.is_set()
  finally:
    logging.get_absl_logger().removeHandler(recorder)
