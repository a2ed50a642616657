"""A bounded, ordered map over worker processes: the one-machine build path.

TFDS generates a split serially in one process; decoding and JPEG-encoding clips is CPU-bound,
so the builder maps its per-clip function over a pool; the workers also write what they make
(shards.py), and the main process only keeps count.
At most `max_in_flight` clips are queued or held at once, so memory does not grow with the split.
Workers come from a forkserver that imports the per-clip module once. Forking the build process
itself is unsafe: once it has used OpenCV's FFmpeg (as the main job does, writing its sample
clips), forked workers hang in their first decode.

Workers live only as long as the build: each holds the read end of a pipe whose only write end is
in the build process, and exits the moment it reads EOF, which the kernel delivers however the
build ends (SIGKILL included). With the workers gone, the forkserver and multiprocessing's resource
tracker exit too: they run until the last holder of their pipes is gone, and the workers were
those holders.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
import contextlib
import datetime
import itertools
import logging as std_logging
import multiprocessing
import os
import sys
import threading
import time
import types
from typing import TypeVar

from absl import logging

_T = TypeVar("_T")
_R = TypeVar("_R")

WORKERS_ENV = "KINETICS_TFDS_WORKERS"
_lifeline = None  # (reader, writer) of this process's workers' pipe; the writer is never closed.


def default_workers() -> int:
  """$KINETICS_TFDS_WORKERS, else every core this process may use."""
  if os.environ.get(WORKERS_ENV):
    return max(1, int(os.environ[WORKERS_ENV]))
  return len(os.sched_getaffinity(0))


def _init_worker(lifeline, log_setup, worker_setup) -> None:
  """Makes a worker log as the build does, run `worker_setup`, and exit when the build does.

  PR_SET_PDEATHSIG cannot tie a worker to the build: its parent is the forkserver, which itself
  stays up while any worker holds its "alive" pipe, so after a SIGKILL of the build both would wait
  for the other forever. The lifeline pipe's EOF comes from the build itself.
  """
  if log_setup:
    formatter, level = log_setup
    std_logging.basicConfig(level=level, force=True)  # To stderr, in place of whatever an import set up.
    std_logging.getLogger().handlers[0].setFormatter(formatter)
  threading.Thread(target=_exit_at_eof, args=(lifeline,), daemon=True).start()
  if worker_setup is not None:
    worker_setup()


def _log_setup():
  """The format and level of this process's log where it logs through absl's handler (a command's, or `tfds build`'s
  own `WARNING[file.py]: ...`), for its workers to log alike; None elsewhere."""
  handler = logging.get_absl_handler()
  if handler not in std_logging.getLogger().handlers:
    return None
  return handler.python_handler.formatter, logging.get_absl_logger().getEffectiveLevel()


def _exit_at_eof(lifeline) -> None:
  try:
    lifeline.recv_bytes()  # Nothing is ever sent: this returns only by EOF.
  except (EOFError, OSError):
    pass
  os._exit(1)


def _lifeline_reader():
  """The read end every worker of this process gets; created once, in the build process."""
  global _lifeline
  if _lifeline is None:
    _lifeline = multiprocessing.Pipe(duplex=False)
  return _lifeline[0]


@contextlib.contextmanager
def _main_module_hidden(fn: Callable):
  """Starts workers without the build's `__main__`, which a spawned process re-imports.

  For `tfds build` that is TFDS's command-line module, which imports TensorFlow (measured: ~900 MB
  per worker, against ~65 MB without); the per-clip function needs none of it. Hidden only while
  processes start, and only
  when the function does not live in `__main__` itself.
  """
  main = sys.modules["__main__"]
  if fn.__module__ == "__main__":
    yield
    return
  sys.modules["__main__"] = types.ModuleType("__main__")
  try:
    yield
  finally:
    sys.modules["__main__"] = main


def _pool(num_workers: int, fn: Callable, worker_setup: Callable[[], None] | None) -> futures.ProcessPoolExecutor:
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload([fn.__module__])
  return futures.ProcessPoolExecutor(
    num_workers,
    mp_context=context,
    initializer=_init_worker,
    initargs=(_lifeline_reader(), _log_setup(), worker_setup),
  )


def bounded_map(
  fn: Callable[[_T], _R],
  items: Iterable[_T],
  num_workers: int,
  max_in_flight: int | None = None,
  on_crash: Callable[[_T], _R] | None = None,
  worker_setup: Callable[[], None] | None = None,
) -> Iterator[_R]:
  """Yields fn(item) in input order; runs in this process when num_workers is 1. Each worker process runs
  `worker_setup` (a module-level function) once, before its first item.

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
  pool = _pool(num_workers, fn, worker_setup)
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
        _rerun_lost(fn, pending, on_crash, worker_setup)
        pool = _pool(num_workers, fn, worker_setup)
        continue
      pending.popleft()
      yield result
  finally:
    pool.shutdown(cancel_futures=True)


def _submit(pool: futures.ProcessPoolExecutor, fn, item) -> futures.Future:
  """pool.submit (which starts workers as needed), or a future failed as lost when the pool broke."""
  try:
    with _main_module_hidden(fn):
      return pool.submit(fn, item)
  except BrokenProcessPool as e:
    lost = futures.Future()
    lost.set_exception(e)
    return lost


def _rerun_lost(fn, pending: collections.deque, on_crash, worker_setup) -> None:
  """Replaces, in place, each future a broken pool lost with one done in a process of its own.

  All lost items run at once (up to max_in_flight processes, briefly) so a crash costs about one
  clip's time, not one per item in flight.
  """
  lost = [i for i, (_, f) in enumerate(pending) if isinstance(f.exception(), BrokenProcessPool)]
  solos = {i: _pool(1, fn, worker_setup) for i in lost}
  try:
    reruns = {i: _submit(solos[i], fn, pending[i][0]) for i in lost}
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
