"""A killed `tfds build` leaves no process behind, and its workers hold no TensorFlow.

Every process of the build is found by a marker in its environment, which all descendants inherit
(the forkserver, its workers and the resource tracker are re-parented to PID 1 when the build dies,
so following children from the build's PID would miss them).
"""

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from conftest import TINY_CONFIG
from conftest import tfds_build
from kinetics_tfds import motion_clips

_MARKER = "KINETICSTFDS_TEST_BUILD"


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
  folder = tmp_path_factory.mktemp("manual")
  motion_clips.make_manual_dir(str(folder), clips_per_class={"train": 6}, seconds=4.0, width=240, height=180)
  return str(folder)


def _marked(tag: str) -> dict[int, tuple[int, str]]:
  """{pid: (parent pid, command line)} of the live processes whose environment holds the marker."""
  found = {}
  needle = f"{_MARKER}={tag}".encode()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if needle not in f.read().split(b"\0"):
          continue
      with open(f"/proc/{pid}/stat") as f:
        state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode()
    except OSError:  # Gone while we looked.
      continue
    if state != "Z":
      found[int(pid)] = (int(ppid), cmdline)
  return found


def _maps(pid: int) -> str:
  with open(f"/proc/{pid}/maps") as f:
    return f.read()


def _decoding(pid: int, folder: str) -> bool:
  """Whether the process has a clip of `folder` open: a worker past its start, running tasks."""
  try:
    return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder) for fd in os.listdir(f"/proc/{pid}/fd"))
  except OSError:
    return False


def _rss_mb(pid: int) -> float:
  with open(f"/proc/{pid}/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_process_of_a_killed_build_remains(manual, tmp_path, sig):
  tag = uuid.uuid4().hex
  env = {**os.environ, _MARKER: tag, "KINETICSTFDS_WORKERS": "2"}
  run = subprocess.Popen(
    tfds_build("kinetics400", manual, tmp_path, json.dumps(TINY_CONFIG)),
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    deadline = time.monotonic() + 120
    seen = {}  # Worker pid -> its maps and RSS, taken while it decodes.
    while len(seen) < 2:
      processes = _marked(tag)
      forkservers = {p for p, (ppid, cmd) in processes.items() if "forkserver" in cmd and ppid == run.pid}
      for worker in [p for p, (ppid, _) in processes.items() if ppid in forkservers]:
        if worker not in seen and _decoding(worker, manual):
          seen[worker] = (_maps(worker), _rss_mb(worker))
      assert run.poll() is None and time.monotonic() < deadline, "the build never ran two workers"
      time.sleep(0.005)
    for maps, rss_mb in seen.values():  # TensorFlow's runtime library is mapped in the build, not in its workers.
      assert "_pywrap_tensorflow" not in maps and rss_mb < 400, rss_mb
    assert "_pywrap_tensorflow" in _maps(run.pid)
    run.send_signal(sig)
    run.wait()
  finally:
    run.kill()
  assert len(processes) >= 5  # The build, the forkserver, its resource tracker, two workers.
  deadline = time.monotonic() + 10
  while left := _marked(tag):
    assert time.monotonic() < deadline, f"left behind: {left}"
    time.sleep(0.1)
