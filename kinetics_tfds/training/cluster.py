"""Several processes training one model: which process this is, what it reads, and what the others are told.

The processes come from the ecosystem's own variables: on JAX `KERAS_DISTRIBUTION_JOB_ADDRESSES`,
`KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID` (`keras.distribution.initialize`), or what JAX
detects itself (SLURM, a Cloud TPU VM with `--tpu`); on TensorFlow `TF_CONFIG`. Each reads its own contiguous share of
a split (`share`), every process sees all the others' evaluation results (`gather`), and only process 0 writes.
"""

from collections.abc import Callable, Sequence
import contextlib
import dataclasses
import io
import json
import os
import sys

from absl import logging
import keras
import numpy as np

from kinetics_tfds.training import config as config_lib

_KERAS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES")


@dataclasses.dataclass(frozen=True)
class Process:
  """Process `index` of `count`; 0 is the one that writes checkpoints, TensorBoard logs and summaries."""

  index: int = 0
  count: int = 1

  @property
  def writes(self) -> bool:
    return self.index == 0

  def __str__(self):
    return f"process {self.index} of {self.count}"


def join(tpu: str | None = None) -> Process:
  """Joins the processes the environment describes (call before any computation); one process where none does."""
  backend = keras.backend.backend()
  if backend == "tensorflow":
    return _tf_config_process()
  if backend != "jax":
    return Process()
  import jax  # pylint: disable=g-import-not-at-top

  # Collectives between CPU processes (the loopback tests, CPU clusters); GPUs and TPUs have their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if any(os.environ.get(name) for name in _KERAS_VARIABLES) or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    keras.distribution.initialize()
  elif tpu:  # A pod slice's hosts, which JAX finds; one TPU VM, or none (placement says so), is no cluster.
    with contextlib.suppress(ValueError, RuntimeError):
      keras.distribution.initialize()
  return Process(jax.process_index(), jax.process_count())


def _tf_config_process() -> Process:
  """TF_CONFIG's task among its chief and workers (MultiWorkerMirroredStrategy's cluster)."""
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  cluster = tf_config.get("cluster", {})
  tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
  tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
  task = tf_config.get("task", {})
  if len(tasks) < 2:
    return Process()
  return Process(tasks.index((task.get("type"), int(task.get("index", 0)))), len(tasks))


def share(file_lengths: Sequence[int], process: Process) -> tuple[int, int]:
  """[start, stop): the examples of a split (files of `file_lengths` examples, in order) that `process` reads.

  With at least as many files as processes each reads whole files, consecutive ones (the files split as evenly as
  they divide); with fewer files the split is shared by example, each process reading a contiguous part of one file.
  The shares are disjoint and together the split, for any reader: tf.data reads `split[start:stop]`.
  """
  bounds = np.cumsum([0, *file_lengths]).tolist()
  if len(file_lengths) >= process.count:
    files = len(file_lengths)
    return bounds[process.index * files // process.count], bounds[(process.index + 1) * files // process.count]
  return bounds[-1] * process.index // process.count, bounds[-1] * (process.index + 1) // process.count


def split_share(builder, split: str, process: Process) -> str:
  """`split` itself for one process, else this process's share of it (`share`) as a TFDS split slice."""
  if process.count == 1:
    return split
  if "[" in split:
    raise config_lib.ConfigError(f"a split shared by {process.count} processes must be a whole split, got {split!r}")
  start, stop = share(builder.info.splits[split].shard_lengths, process)
  return f"{split}[{start}:{stop}]"


def gather(arrays: dict[str, np.ndarray], process: Process, strategy=None) -> list[dict[str, np.ndarray]]:
  """Every process's `arrays`, in process order, on every process: a collective that each must call.

  The arrays travel as one .npz file's bytes, so each process may hold any number of rows.
  """
  if process.count == 1:
    return [arrays]
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  data = np.frombuffer(buffer.getvalue() + b"\0" * (-buffer.tell() % 4), np.int32)  # Collectives take int32.
  all_gather = _tf_all_gather(strategy) if strategy is not None else _jax_all_gather
  lengths = all_gather(np.array([len(data)], np.int32))[:, 0]
  padded = all_gather(np.concatenate([data, np.zeros(lengths.max() - len(data), np.int32)]))
  return [dict(np.load(io.BytesIO(row[:length].tobytes()))) for row, length in zip(padded, lengths)]


def _jax_all_gather(values: np.ndarray) -> np.ndarray:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return np.asarray(multihost_utils.process_allgather(values))


def _tf_all_gather(strategy) -> Callable[[np.ndarray], np.ndarray]:
  """[processes, ...]: `values` of each worker, gathered over the replicas (each worker's first replica's row)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function  # A replica context's collectives run in a graph.
  def replicas_gather(values):
    return strategy.run(lambda v: tf.distribute.get_replica_context().all_gather(v[None], axis=0), (values,))

  def all_gather(values):
    rows = strategy.experimental_local_results(replicas_gather(tf.constant(values)))[0].numpy()
    return rows[:: len(strategy.extended.worker_devices)]

  return all_gather


@contextlib.contextmanager
def failing_together(process: Process):
  """Ends this process at once, with one line saying why, where a collective failed (another process died).

  Exiting normally would wait in the distributed runtime's shutdown for the dead process until its heartbeat times
  out (JAX: 100 s); a process stuck in a collective with no error is ended by that timeout.
  """
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if process.count == 1 or isinstance(e, config_lib.ConfigError):
      raise
    logging.exception("%s stopped", process)
    first_line = (str(e).splitlines() or [type(e).__name__])[0]
    sys.stdout.flush()
    print(
      f"{os.path.basename(sys.argv[0])}: {process} stopped: {type(e).__name__}: {first_line}; if another process "
      "died, rerun all of them: they resume from the last checkpoint",
      file=sys.stderr,
      flush=True,
    )
    os._exit(1)  # pylint: disable=protected-access
