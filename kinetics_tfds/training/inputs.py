"""What a run reads (`--loader`): tf.data over a TFRecord build, or Grain or a torch DataLoader over an ArrayRecord
build, the last two without TensorFlow. All three cut the same views for a seed (`kinetics_tfds.sampling`).

With several processes (`cluster`), each reads its own share of the split, and feeds its own rows of each global
batch; in evaluation each process takes its own videos, every view of each.
"""

from __future__ import annotations

from kinetics_tfds import array_records
from kinetics_tfds import loaders
from kinetics_tfds.models import i3d
from kinetics_tfds.training import cluster
from kinetics_tfds.training import config as config_lib


class TfData:
  """tf.data (`kinetics_tfds.pipeline`) over a prepared TFDS builder."""

  def __init__(self, config, builder=None):
    if builder is None:
      from kinetics_tfds.training import datasets  # pylint: disable=g-import-not-at-top  (needs TensorFlow)

      builder = datasets.prepared_builder(config.dataset, config.data_dir)
    self.config, self.builder = config, builder
    self.class_names = builder.info.features["label"].names

  def num_examples(self, split: str) -> int:
    return self.builder.info.splits[split].num_examples

  def train(self, placement):
    from kinetics_tfds import pipeline  # pylint: disable=g-import-not-at-top  (needs TensorFlow)

    config, process = self.config, placement.process
    kwargs = dict(
      split=cluster.split_share(self.builder, config.split, process),
      num_frames=config.num_frames,
      frame_stride=config.frame_stride,
      image_size=config.image_size,
      random_flip=config.random_flip,
      seed=config.seed + (process.index << 32),  # Each process its own random numbers.
      deterministic=config.deterministic,
    )
    builder, batch_size = self.builder, config.batch_size
    if process.count > 1 and placement.strategy is not None:
      return per_worker(
        placement.strategy, batch_size, lambda b: pipeline.train_dataset(builder, batch_size=b, **kwargs)
      )
    if process.count > 1:  # JAX: this process's rows of each global batch.
      return pipeline.train_dataset(builder, batch_size=batch_size // process.count, **kwargs)
    if placement.strategy is not None:  # TensorFlow: one pipeline per worker, a share of the batch per replica.
      return pipeline.distributed_train_dataset(placement.strategy, builder, batch_size=batch_size, **kwargs)
    return pipeline.train_dataset(builder, batch_size=batch_size, **kwargs)

  def eval(self, num_clips, num_crops, batch_size: int, padded: bool, process: cluster.Process):
    from kinetics_tfds import pipeline  # pylint: disable=g-import-not-at-top  (needs TensorFlow)

    config = self.config
    split = cluster.split_share(self.builder, config.eval_split, process)
    views = _views(config, num_clips, num_crops, padded)
    ds = pipeline.eval_dataset(self.builder, split, batch_size=batch_size, **views)
    return ds.as_numpy_iterator()


class ArrayRecords:
  """Grain (`--loader=grain`) or a torch DataLoader (`--loader=torch`) over a prepared ArrayRecord build; clips
  are decoded in `--loader_workers` processes."""

  def __init__(self, config, builder=None):
    path = builder.data_dir if builder is not None else array_records.version_dir(config.dataset, config.data_dir)
    self.config, self.info = config, array_records.Info(path)
    self.class_names = self.info.class_names

  def num_examples(self, split: str) -> int:
    return self.info.num_examples(split)

  def train(self, placement):
    if placement.strategy is not None and placement.process.count > 1:
      raise config_lib.ConfigError("--loader=grain or torch feeds JAX or torch processes, not TensorFlow's workers")
    config, process = self.config, placement.process
    source = array_records.Source(self.info, config.split)
    batch_size = config.batch_size // process.count  # This process's rows of each global batch.
    clips = loaders.TrainClips(
      source,
      loaders.Order(len(source), seed=config.seed, shard=process.index, num_shards=process.count),
      num_frames=config.num_frames,
      frame_stride=config.frame_stride,
      image_size=config.image_size,
      random_flip=config.random_flip,
    )
    if config.loader == "grain":
      return loaders.grain_train(clips, batch_size=batch_size, num_workers=config.loader_workers)
    import torch  # pylint: disable=g-import-not-at-top  (only for --loader=torch)

    # Positions for every step the run may take: Keras stops at its steps.
    positions = loaders.TorchPositions(clips, length=(1 << 40))
    return torch.utils.data.DataLoader(
      positions, batch_size=batch_size, drop_last=True, num_workers=config.loader_workers
    )

  def eval(self, num_clips, num_crops, batch_size: int, padded: bool, process: cluster.Process):
    config = self.config
    source = array_records.Source(self.info, config.eval_split)
    views = _views(config, num_clips, num_crops, padded)
    clips = loaders.EvalClips(source, shard=process.index, num_shards=process.count, **views)
    if config.loader == "grain":
      videos = loaders.grain_eval(clips, num_workers=config.loader_workers)
    else:
      import torch  # pylint: disable=g-import-not-at-top  (only for --loader=torch)

      videos = torch.utils.data.DataLoader(
        clips, batch_size=None, num_workers=config.loader_workers, collate_fn=loaders.as_is
      )
    return loaders.batches_by_shape(videos, batch_size)


def _views(config, num_clips, num_crops, padded: bool) -> dict:
  """The evaluation views every reader cuts, as their keyword arguments."""
  return dict(
    num_frames=config.num_frames,
    frame_stride=config.frame_stride,
    image_size=config.image_size,
    num_clips=num_clips,
    num_crops=num_crops,
    pad_period=i3d.PADDING_PERIOD if padded else None,
  )


def per_worker(strategy, global_batch: int, batches):
  """TensorFlow's workers: each feeds its replicas `batches(per-replica batch)` (this worker's share, already)."""
  return strategy.distribute_datasets_from_function(
    lambda context: batches(context.get_per_replica_batch_size(global_batch))
  )


def open_input(config, builder=None):
  """The reader `config.loader` names, over `builder` (a prepared one) or `config.dataset` in `config.data_dir`."""
  return (TfData if config.loader == "tfdata" else ArrayRecords)(config, builder)
