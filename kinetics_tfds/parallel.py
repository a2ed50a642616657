"""A bounded, ordered map over worker processes: the one-machine build path.

TFDS generates a split serially in one process; decoding and JPEG-encoding clips is CPU-bound,
so the builder maps its per-clip function over a pool and the main process only writes.
At most `max_in_flight` clips are queued or held at once, so memory does not grow with the split.
Workers come from a forkserver that imports the per-clip module once. Forking the build process
itself is unsafe: once it has used OpenCV's FFmpeg (as the main job does, writing its sample
clips), forked workers hang in their first decode. Like any spawned process, a worker re-imports
the `__main__` module, so a script that builds must keep its work under `if __name__ == "__main__"`.
"""

from __future__ import annotations

import collections
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
import ctypes
import datetime
import itertools
import multiprocessing
import os
import signal
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

from absl import logging
import cv2

_T = TypeVar("_T")
_R = TypeVar("_R")

WORKERS_ENV = "KINETICS_TFDS_WORKERS"
_PR_SET_PDEATHSIG = 1  # From <sys/prctl.h>.


def default_workers() -> int:
  """$KINETICS_TFDS_WORKERS, else every core this process may use."""
  if os.environ.get(WORKERS_ENV):
    return max(1, int(os.environ[WORKERS_ENV]))
  return len(os.sched_getaffinity(0))


def _init_worker() -> None:
  """Makes a worker one core's worth of OpenCV, and makes it die with the build.

  OpenCV decodes with about one FFmpeg thread per core and resizes in parallel: in N workers on
  N cores that is N-fold oversubscription, which costs CPU time (measured: ~10-20% per clip).
  A worker holds its task queue's write end itself, so without PR_SET_PDEATHSIG it would linger
  forever, blocked on that queue, after the build is SIGKILLed.
  """
  os.environ["OPENCV_FFMPEG_THREADS"] = "1"  # Read by every VideoCapture open.
  cv2.setNumThreads(1)
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() == 1:  # The forkserver (which exits with the build) died before prctl took effect.
    os._exit(1)


def _pool(num_workers: int, fn: Callable) -> futures.ProcessPoolExecutor:
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload([fn.__module__])
  return futures.ProcessPoolExecutor(num_workers, mp_context=context, initializer=_init_worker)


def bounded_map(
    fn: Callable[[_T], _R],
    items: Iterable[_T],
    num_workers: int,
    max_in_flight: int | None = None,
    on_crash: Callable[[_T], _R] | None = None,
) -> Iterator[_R]:
  """Yields fn(item) in input order; runs in this process when num_workers is 1.

  A worker that dies (a decoder segfaulting on a bad file) breaks the whole pool and every item in
  flight with it. Those items are then rerun, each in a process of its own, so that only the item
  that kills its process is lost: it yields on_crash(item), or BrokenProcessPool is raised when
  on_crash is None. The build goes on with a fresh pool.
  """
  if num_workers <= 1:
    yield from map(fn, items)
    return
  max_in_flight = max_in_flight or 2 * num_workers
  items = iter(items)
  pending: collections.deque = collections.deque()  # (item, future), in input order.
  pool = _pool(num_workers, fn)
  try:
    while True:
      for item in itertools.islice(items, max_in_flight - len(pending)):
        pending.append((item, _submit(pool, fn, item)))
      if not pending:
        return
      try:
        result = pending[0][1].result()
      except BrokenProcessPool:
        pool.shutdown()
        _rerun_lost(fn, pending, on_crash)
        pool = _pool(num_workers, fn)
        continue
      pending.popleft()
      yield result
  finally:
    pool.shutdown(cancel_futures=True)


def _submit(pool: futures.ProcessPoolExecutor, fn, item) -> futures.Future:
  """pool.submit, or a future failed as lost when the pool broke since the last look."""
  try:
    return pool.submit(fn, item)
  except BrokenProcessPool as e:
    lost = futures.Future()
    lost.set_exception(e)
    return lost


def _rerun_lost(fn, pending: collections.deque, on_crash) -> None:
  """Replaces, in place, each future a broken pool lost with one done in a process of its own.

  All lost items run at once (up to max_in_flight processes, briefly) so a crash costs about one
  clip's time, not one per item in flight.
  """
  lost = [i for i, (_, f) in enumerate(pending) if isinstance(f.exception(), BrokenProcessPool)]
  solos = {i: _pool(1, fn) for i in lost}
  try:
    reruns = {i: solos[i].submit(fn, pending[i][0]) for i in lost}
    for i, rerun in reruns.items():
      item = pending[i][0]
      done = futures.Future()
      try:
        done.set_result(rerun.result())
      except BrokenProcessPool:
        if on_crash is None:
          raise
        done.set_result(on_crash(item))
      pending[i] = (item, done)
  finally:
    for solo in solos.values():
      solo.shutdown()


def logged_progress(results: Iterable[_R], total: int, what: str, every_s: float = 60.0) -> Iterator[_R]:
  """Passes `results` through, logging how many of `total` are done, per second, and time left.

  TFDS's own bar counts written examples at their rate, but knows no total (so shows no time
  left) and does not count skipped clips; a build of weeks needs both, in its log.
  """
  start = last = time.monotonic()
  done = 0
  for done, result in enumerate(results, 1):
    yield result
    now = time.monotonic()
    if now - last >= every_s:
      last = now
      rate = done / (now - start)
      left = datetime.timedelta(seconds=round((total - done) / rate))
      logging.info("%s: %d of %d clips done, %.1f clips/s, %s left.", what, done, total, rate, left)
  elapsed = time.monotonic() - start
  logging.info("%s: %d clips done in %.0f s, %.1f clips/s.", what, done, elapsed, done / max(elapsed, 1e-9))
