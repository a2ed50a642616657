"""One build at a time per dataset version: the claim that makes cleaning up after killed builds safe.

A build removes the `incomplete.*` folders that killed builds of its version left (TFDS does not,
and they can be terabytes). Without a claim it would also remove the live folder of a build
running beside it. The claim is an flock on `.{version}.lock` beside the version folders: the
kernel drops it when its holder dies, even by SIGKILL, so a claim is never stale. A second build
waits for the first (saying so), then finds the dataset prepared and reuses it.
"""

from collections.abc import Iterator
import contextlib
import fcntl
import os
import socket

from absl import logging


@contextlib.contextmanager
def exclusive(version_dir: str) -> Iterator[None]:
  """Holds the claim on a dataset version folder for the body; local file systems only."""
  if "://" in version_dir:  # Object stores have no flock: one build per version is the user's to keep.
    logging.info("%s is not on a local file system: builds of it are not serialised.", version_dir)
    yield
    return
  parent, version = os.path.split(os.path.normpath(version_dir))
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, f".{version}.lock"), "a+", encoding="utf-8") as claim:
    try:
      fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      claim.seek(0)
      logging.warning(
        "Another build of %s is running (%s); waiting for it to finish.",
        version_dir,
        claim.read().strip() or "holder unknown",
      )
      fcntl.flock(claim, fcntl.LOCK_EX)
    claim.seek(0)
    claim.truncate()
    claim.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    claim.flush()
    try:
      yield
    finally:
      fcntl.flock(claim, fcntl.LOCK_UN)
