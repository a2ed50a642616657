"""A bounded, ordered map over worker processes: the one-machine build path.

TFDS generates a split serially in one process; decoding and JPEG-encoding clips is CPU-bound,
so the builder maps its per-clip function over a pool and the main process only writes.
At most `max_in_flight` clips are queued or held at once, so memory does not grow with the split.
Workers are forked: spawned or forkserver workers re-run the user's `__main__` (a script without
a main guard would build recursively) and re-import TensorFlow. Forked workers run only OpenCV
and NumPy code, never TensorFlow, so TensorFlow's threads in the parent do not matter to them.
"""

from __future__ import annotations

import collections
from concurrent import futures
import multiprocessing
import os
from typing import Callable, Iterable, Iterator, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

WORKERS_ENV = "KINETICS_TFDS_WORKERS"


def default_workers() -> int:
  """$KINETICS_TFDS_WORKERS, else every core this process may use."""
  if os.environ.get(WORKERS_ENV):
    return max(1, int(os.environ[WORKERS_ENV]))
  return len(os.sched_getaffinity(0))


def bounded_map(
    fn: Callable[[_T], _R],
    items: Iterable[_T],
    num_workers: int,
    max_in_flight: int | None = None,
) -> Iterator[_R]:
  """Yields fn(item) in input order; runs in this process when num_workers is 1."""
  if num_workers <= 1:
    yield from map(fn, items)
    return
  max_in_flight = max_in_flight or 2 * num_workers
  context = multiprocessing.get_context("fork")
  with futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    pending: collections.deque = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= max_in_flight:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
