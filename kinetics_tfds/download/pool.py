"""Runs download tasks on threads under one progress bar."""

from collections.abc import Callable, Sequence
import concurrent.futures

import tqdm


def run(tasks: Sequence[Callable[[], None]], num_workers: int, unit: str) -> None:
  """Runs every task; threads suffice since downloads wait on the network and OpenCV drops the GIL.

  Tasks record their own failures in the report; an exception escaping one is a bug and is raised. On any
  exception (Ctrl-C's KeyboardInterrupt too) the queued tasks are cancelled and this returns at once, without
  waiting for the running ones, which cannot be stopped: the caller writes the report and exits.
  """
  pool = concurrent.futures.ThreadPoolExecutor(max(1, num_workers))
  try:
    futures = [pool.submit(task) for task in tasks]
    with tqdm.tqdm(total=len(futures), unit=unit) as bar:
      for future in concurrent.futures.as_completed(futures):
        future.result()
        bar.update()
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
