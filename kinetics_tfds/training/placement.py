"""Where a run executes: a TPU, all local GPUs, several processes (`cluster`), or the default device.

On the TensorFlow backend this is a `tf.distribute.Strategy`; on the JAX backend a `keras.distribution.DataParallel`
over all devices of all processes, set globally. TensorFlow is imported only on its own backend.
"""

import contextlib
import dataclasses

import keras

from kinetics_tfds import user_error
from kinetics_tfds.training import cluster


class PlacementError(user_error.UserError):
  """The requested devices cannot be used (an unreachable TPU, a batch that does not split over replicas)."""


@dataclasses.dataclass
class Placement:
  description: str
  num_replicas: int
  strategy: object = None  # A tf.distribute.Strategy on the TensorFlow backend.
  platform: str = "cpu"  # What computes: cpu, gpu or tpu.
  process: cluster.Process = cluster.Process()
  # Batch norm's statistics over all replicas' rows (TensorFlow's workers), as on JAX's one mesh: the model is the
  # same however many workers train it. Replicas in one process keep their own (MirroredStrategy over GPUs).
  sync_batch_norm: bool = False

  def scope(self):
    """Where variables must be created: the strategy's scope, or nothing to enter on JAX."""
    return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

  def check_batch(self, global_batch: int) -> int:
    """The per-replica batch, or a clear error where the global batch does not divide over the replicas."""
    if global_batch % self.num_replicas:
      raise PlacementError(
        f"batch size {global_batch} does not divide over the {self.num_replicas} replicas of {self.description}; "
        f"use a multiple of {self.num_replicas}"
      )
    return global_batch // self.num_replicas

  def check_training_precision(self, precision: str, xla: bool) -> None:
    """A clear error where training in `precision` here would silently compute garbage gradients.

    oneDNN, which TensorFlow's own kernels and PyTorch use on x86 CPUs, computes the bfloat16 3-D convolution's
    filter gradient wrongly for some shapes: non-finite values, different on each run, e.g. wherever a clip axis is
    shorter than the kernel, as in I3D's last layers for clips of 16 frames or fewer (README.md, I3D). XLA's CPU
    convolutions (JAX, TensorFlow with jit_compile) and GPUs are right.
    """
    backend = keras.backend.backend()
    if precision != "mixed_bfloat16" or self.platform != "cpu" or backend == "jax" or (backend == "tensorflow" and xla):
      return
    fixes = "--precision=float32, --jit_compile=true (XLA)" if backend == "tensorflow" else "--precision=float32"
    raise PlacementError(
      f"--precision=mixed_bfloat16 does not train on the {backend} backend on CPU: oneDNN's bfloat16 3-D "
      f"convolution gradient there is garbage for some clip shapes (non-finite, different on each run); use "
      f"{fixes}, KERAS_BACKEND=jax or a GPU"
    )


def resolve(tpu: str | None = None) -> Placement:
  """Resolves `tpu` (a name, or "local" on a TPU VM), else the processes the environment describes (`cluster.join`),
  GPUs or the default device."""
  backend = keras.backend.backend()
  if backend == "tensorflow":
    return _tensorflow(tpu)
  if backend == "jax":
    return _jax(tpu)
  if tpu:
    raise PlacementError(f"--tpu={tpu}: TPUs need the tensorflow or jax backend, not {backend}")
  platform = _torch() if backend == "torch" else "cpu"
  return Placement(f"the {backend} backend's default device ({platform})", 1, platform=platform)


def _torch():
  """The torch backend's platform, with cuDNN choosing each convolution's algorithm by timing it.

  XLA and TensorFlow autotune their GPU convolutions; torch does only with `cudnn.benchmark`, which Keras leaves
  off. A run's shapes repeat (one for training, a few for padded whole clips), so each is timed once.
  """
  import torch  # pylint: disable=g-import-not-at-top

  torch.backends.cudnn.benchmark = True
  return "gpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "cpu"


def _tensorflow(tpu):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if tpu:
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as e:
      raise PlacementError(f"cannot reach TPU {tpu!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    strategy = tf.distribute.TPUStrategy(resolver)
    return Placement(f"TPU {tpu!r}", strategy.num_replicas_in_sync, strategy, "tpu")
  process = cluster.join()
  if process.count > 1:  # Before listing devices: TensorFlow then starts its runtime as one of the workers.
    strategy = _multi_worker_strategy()
    platform = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    description = f"{process.count} workers (TF_CONFIG)"
    return Placement(description, strategy.num_replicas_in_sync, strategy, platform, process, sync_batch_norm=True)
  gpus = tf.config.list_logical_devices("GPU")
  platform = "gpu" if gpus else "cpu"
  if len(gpus) > 1:
    strategy = tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return Placement(f"{len(gpus)} GPUs", len(gpus), strategy, platform)
  device = gpus[0].name if gpus else "CPU"
  return Placement(device, 1, tf.distribute.get_strategy(), platform)


def _multi_worker_strategy():
  """A MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3.15's TensorFlow `fit` gives it.

  Only with several workers does `fit` call `strategy.reduce`, and the strategy refuses both calls: before training,
  on its first batch, an (x, y) nest with uint8 clips (`_maybe_symbolic_build`, also for a model already built,
  which then uses only the batch's shapes; TensorFlow: "TODO: support `value` being a nest", and collectives take
  no uint8); after each step, `reduce("MEAN", loss, axis=0)` on each scalar of the logs (`reduce_per_replica`),
  which has no axis 0. This one reduces each tensor of a nest, as MirroredStrategy does, small integers as int32,
  and a scalar across replicas alone. Building the model first leaves those calls in place, and a loop of our own
  in place of `fit` would duplicate its callbacks, metrics and steps per execution.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
    def reduce(self, reduce_op, value, axis=None):
      return tf.nest.map_structure(lambda values: self._reduce_tensor(reduce_op, values, axis), value)

    def _reduce_tensor(self, reduce_op, values, axis):
      local = self.experimental_local_results(values)[0]
      if local.dtype.is_integer and local.dtype not in (tf.int32, tf.int64):
        widened = self.run(lambda v: tf.cast(v, tf.int32), (values,))
        return tf.cast(self._reduce_tensor(reduce_op, widened, axis), local.dtype)
      return super().reduce(reduce_op, values, None if local.shape.rank == 0 else axis)

  return Strategy()


def _jax(tpu):
  import jax  # pylint: disable=g-import-not-at-top

  process = cluster.join(tpu)
  devices = jax.devices()
  platform = devices[0].platform
  if tpu and platform != "tpu":
    raise PlacementError(
      f"cannot reach TPU {tpu!r}: JAX sees {len(devices)} {platform} device(s) and no TPU (with JAX, run on the "
      "TPU VM itself)"
    )
  description = f"{len(devices)} {platform} device(s)"
  if process.count > 1:
    description += f" of {process.count} processes"
  if len(devices) > 1:
    # Each process feeds its own rows of each global batch (`run`), which Keras puts on its devices.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=process.count == 1)
    keras.distribution.set_distribution(distribution)
  return Placement(description, len(devices), platform=platform, process=process)
