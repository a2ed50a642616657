"""One run: build I3D where `placement` says, train and/or evaluate it, and summarise what was measured.

`python -m kinetics_tfds.train` fills a `Config` from its flags and `python -m kinetics_tfds` from its sample; both
print the summary this returns. Real data is read as `--loader` says (`inputs`): tf.data needs TensorFlow, Grain and
torch do not; nor does `synthetic=True` with the JAX backend.
"""

import dataclasses
import json
import math
import os

import keras

from kinetics_tfds.models import i3d
from kinetics_tfds.models import rewrites
from kinetics_tfds.models import weights as weights_lib
from kinetics_tfds.training import cluster
from kinetics_tfds.training import config as config_lib
from kinetics_tfds.training import inputs
from kinetics_tfds.training import loop
from kinetics_tfds.training import optimization
from kinetics_tfds.training import placement as placement_lib
from kinetics_tfds.training import synthetic


def run(config: config_lib.Config, builder=None, printer=print, placement=None) -> dict:
  """Trains and/or evaluates as `config` says; writes and returns the summary. `builder`: a prepared builder to use
  instead of `config.dataset` (a config that is not registered by name, such as the main job's sample).
  `placement`: where to run, if not where `config.tpu` and the environment say (`placement.resolve`)."""
  os.makedirs(config.model_dir, exist_ok=True)
  keras.utils.set_random_seed(config.seed)
  optimization.set_precision(config.precision)
  placement = placement or placement_lib.resolve(config.tpu)
  with cluster.failing_together(placement.process):
    return _run(config, builder, printer, placement)


def _run(config, builder, printer, placement):
  num_clips, num_crops = config_lib.parse_views(config.eval_views)
  process = placement.process
  placement.check_batch(config.batch_size)
  jit_compile = rewrites.compiles_by_default() if config.jit_compile == "auto" else config.jit_compile == "true"
  if config.mode != "eval":
    placement.check_training_precision(config.precision, jit_compile)
  data = None if config.synthetic else inputs.open_input(config, builder)
  class_names = [str(i) for i in range(config.num_classes)] if data is None else data.class_names
  total_steps = _total_steps(config, data) if config.mode != "eval" else 1
  weights = None if config.weights == "none" else config.weights
  with placement.scope():
    model = i3d.InceptionI3D(
      len(class_names),
      weights=weights,
      dropout_rate=config.dropout_rate,
      fast=jit_compile,
      batchnorm_momentum=config.batchnorm_momentum or i3d.BATCHNORM_MOMENTUM,
      batchnorm_synchronized=placement.sync_batch_norm,
    )
    lr = optimization.learning_rate(
      config.lr_schedule,
      config.learning_rate,
      total_steps,
      step_fractions=config.lr_step_fractions,
      warmup_fraction=config.warmup_fraction,
    )
    model.compile(
      optimization.optimizer(config.optimizer, lr, momentum=config.momentum, weight_decay=config.weight_decay),
      loss=optimization.SparseCrossentropy(len(class_names), config.label_smoothing),
      metrics=optimization.metrics(len(class_names)),
      # Keras' own auto would leave XLA off under any tf.distribute strategy, several GPUs too.
      jit_compile=jit_compile,
      steps_per_execution=config.steps_per_execution,
    )
    rewrites.set_fast(model, bool(model.jit_compile))  # Its rewrites pay only where XLA fuses them.
  summary = {
    "placement": placement.description,
    "backend": keras.backend.backend(),
    "jit_compile": bool(model.jit_compile),
    "rewrites": rewrites.rewrites_on(model),
    "processes": process.count,
  }
  clips = None
  if config.synthetic:
    rows = _rows(config.batch_size, process)
    # Endless: `loop.train` decides how many steps to take.
    clips = synthetic.SyntheticClips(
      config.batch_size, config.num_frames, config.image_size, len(class_names), steps=None, seed=config.seed, rows=rows
    )
  if config.mode != "eval":
    if clips is None:
      batches = data.train(placement)
    elif process.count > 1 and placement.strategy is not None:  # Keras' PyDataset does not feed workers.
      batches = inputs.per_worker(placement.strategy, config.batch_size, lambda batch: _tf_batches(clips.batch, batch))
    else:
      batches = clips
    with placement.scope():  # A checkpoint's optimizer state is built and loaded there.
      summary.update(
        loop.train(
          model,
          batches,
          total_steps=total_steps,
          checkpoint_steps=config.checkpoint_steps,
          model_dir=config.model_dir,
          global_batch=config.batch_size,
          log_every=config.log_every,
          printer=printer,
          writes=process.writes,
        )
      )
  elif weights is None:
    final = os.path.join(config.model_dir, loop.FINAL_WEIGHTS)
    if not os.path.exists(final):
      raise config_lib.ConfigError(
        f"--mode=eval needs --weights or a trained model in --model_dir ({final} is missing)"
      )
    model.optimizer.build(model.trainable_variables)  # The file holds its state and step: Keras warns if unbuilt.
    weights_lib.load(model, final)
  if config.mode != "train":
    step = loop.step(model)  # What it was trained to: its TensorBoard points line up with training's.
    if clips is not None:
      summary.update(loop.benchmark_predict(model, clips.clips, config.eval_steps))
    else:
      eval_batch = config.eval_batch_size or (1 if num_clips is None and placement.platform == "cpu" else 8)
      # Whole clips of different lengths share batches, or take a few shapes, padded: the model is told each length.
      padded = num_clips is None and (eval_batch > 1 or placement.platform != "cpu")
      if process.count > 1:
        # Each process evaluates its own videos, as many batches as they fill: its own devices, no collective.
        model = _twin(model, config, len(class_names), jit_compile, padded, local=True)
      elif padded:
        with placement.scope():
          model = _twin(model, config, len(class_names), jit_compile, padded)
      summary["eval_batch"] = eval_batch
      summary.update(
        loop.evaluate(
          model,
          data.eval(num_clips, num_crops, eval_batch, padded, process),
          class_names,
          fill_to=eval_batch if model.jit_compile else 1,  # XLA compiles each batch shape.
          predictions_out=config.predictions_out if process.writes else None,
          gather=lambda arrays: cluster.gather(arrays, process, placement.strategy),
        )
      )
    if process.writes:
      loop.write_evaluation(os.path.join(config.model_dir, loop.LOGS, "eval"), step, summary)
  summary["config"] = dataclasses.asdict(config)
  if process.writes:
    with open(os.path.join(config.model_dir, "summary.json"), "w") as f:
      json.dump(summary, f)
  return summary


def _rows(global_batch: int, process: cluster.Process) -> slice | None:
  """The rows of each global batch that `process` feeds; None: all of them (one process)."""
  if process.count == 1:
    return None
  per_process = global_batch // process.count
  return slice(process.index * per_process, (process.index + 1) * per_process)


def _total_steps(config, data):
  if config.train_steps:
    return config.train_steps
  if data is None:
    raise config_lib.ConfigError("--synthetic needs --train_steps")
  return config.epochs * math.ceil(data.num_examples(config.split) / config.batch_size)


def _tf_batches(arrays, batch_size: int):
  """The rows of `arrays` in batches of `batch_size`, endlessly."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.data.Dataset.from_tensor_slices(arrays).repeat().batch(batch_size)


def _twin(model, config, num_classes, jit_compile, padded_clips, local=False):
  """`model`'s twin with its weights, compiled alike, for evaluation: with `padded_clips` for whole clips batched
  padded. `local`: on JAX on this process's devices alone (call outside any TensorFlow strategy's scope)."""
  if local and keras.backend.backend() == "jax":
    import jax  # pylint: disable=g-import-not-at-top

    devices = jax.local_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices) if len(devices) > 1 else None)
  twin = i3d.InceptionI3D(num_classes, dropout_rate=config.dropout_rate, fast=jit_compile, padded_clips=padded_clips)
  for layer in twin.layers:
    if layer.weights:
      layer.set_weights(model.get_layer(layer.name).get_weights())
  twin.compile(jit_compile=jit_compile)
  rewrites.set_fast(twin, bool(twin.jit_compile))
  return twin
