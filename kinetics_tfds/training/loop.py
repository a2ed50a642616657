"""Training with checkpoints that resume after a kill, and evaluation aggregated per video.

A run is `epochs` of `steps_per_epoch` steps, where an "epoch" is only the checkpoint interval: at each one's end
the weights and optimizer state are saved. A rerun with the same model_dir starts from the last checkpoint and
trains to its own total: the step it resumes at is the optimizer's iteration counter (which the learning-rate
schedule reads too), not an epoch count, so a rerun may ask for more steps or another interval.
"""

import json
import math
import os
import tempfile
import time

from absl import logging
import keras
import numpy as np

from kinetics_tfds import sampling
from kinetics_tfds import user_error
from kinetics_tfds.training import synthetic

FINAL_WEIGHTS = "model.weights.h5"
# In model_dir. Where Keras' BackupAndRestore, which this project used before, kept it: older runs resume too.
CHECKPOINT = os.path.join("backup", "latest.weights.h5")
LOGS = "logs"  # In model_dir: TensorBoard's train/ and eval/ runs.


class Progress(keras.callbacks.Callback):
  """Every `every` steps and at a run's last: a progress line (step, loss, accuracy, clips/s) and the same numbers as
  TensorBoard scalars in `log_dir`, where TensorFlow is installed. Speed is steady-state, as in the run's summary: from
  the end of its first step (which traces and compiles) on. `initial_step`: where the run resumed."""

  def __init__(self, global_batch: int, every: int, printer=print, initial_step: int = 0, log_dir: str | None = None):
    super().__init__()
    self.global_batch, self.every, self.printer = global_batch, every, printer
    self.initial_step = initial_step
    self.log_dir, self._writer = log_dir, None  # The writer is made at the first point: a run may take no step.
    self._first = self._last = None  # (step, time) at the end of the first and of the latest step
    self._logs = {}  # Keras' running means of loss and metrics over the interval's epoch

  # Steps are counted from epoch and batch, not read from the optimizer: on JAX its variables are stale mid-epoch.
  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self.initial_step + epoch * self.params["steps"]
    if self._last is None:
      self._logged = (self._epoch_start, time.perf_counter())  # (step, time) of the latest line

  def on_train_batch_end(self, batch, logs=None):
    self._last = (self._epoch_start + batch + 1, time.perf_counter())
    self._first = self._first or self._last
    self._logs = logs or {}
    if self._last[0] - self._logged[0] >= self.every:
      self._log()

  def on_train_end(self, logs=None):
    if self._last and self._last[0] > self._logged[0]:
      self._log()
    if self._writer:
      self._writer.close()

  def _log(self):
    step, now = self._last
    start = max(self._first, self._logged)  # Not the first step's compile.
    clips_per_second = (step - start[0]) * self.global_batch / (now - start[1]) if step > start[0] else None
    loss, top1 = self._logs.get("loss", float("nan")), self._logs.get("top1", float("nan"))
    speed = f"{clips_per_second:.1f} clips/s" if clips_per_second else "first step (compiles)"
    self.printer(f"step {step}: loss {loss:.4f} top1 {top1:.3f} {speed}")
    if self.log_dir:  # Once: None where TensorFlow is missing.
      self._writer, self.log_dir = summary_writer(self.log_dir), None
    if self._writer:
      scalars = {**self._logs, "clips_per_second": clips_per_second}
      write_scalars(self._writer, step, {name: value for name, value in scalars.items() if value is not None})
    self._logged = self._last

  @property
  def step_time_s(self):
    steps = self._last[0] - self._first[0] if self._first else 0
    return (self._last[1] - self._first[1]) / steps if steps else None

  @property
  def clips_per_second(self):
    return self.global_batch / self.step_time_s if self.step_time_s else None


def summary_writer(log_dir: str):
  """A TensorBoard summary writer (TensorFlow's); None, logged, where TensorFlow is missing."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (not on the JAX-only path)
  except ImportError:
    logging.warning("tensorflow is not installed: no TensorBoard logs")
    return None
  return tf.summary.create_file_writer(log_dir)


def write_scalars(writer, step: int, scalars: dict) -> None:
  """`scalars` at `step`, flushed: a point shows in TensorBoard as soon as it is logged."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with writer.as_default():
    for name, value in scalars.items():
      tf.summary.scalar(name, float(value), step=step)
  writer.flush()


def write_evaluation(log_dir: str, step: int, results: dict) -> None:
  """An evaluation's top-1, top-5 and clips/s as TensorBoard scalars at the training step of the weights evaluated."""
  writer = summary_writer(log_dir)
  if writer:
    names = ("top1", "top5", "eval_clips_per_second")
    write_scalars(writer, step, {name: results[name] for name in names if results.get(name) is not None})
    writer.close()


def train(
  model,
  data,
  *,
  total_steps: int,
  checkpoint_steps: int,
  model_dir: str,
  global_batch: int,
  log_every: int = 10,
  printer=print,
  writes: bool = True,
) -> dict:
  """Fits `model` from model_dir's last checkpoint, if any, to about `total_steps` (the remaining steps rounded up to
  whole checkpoint intervals of whole executions) and saves its final weights. Build the model in the scope of the
  run's distribution strategy and call this there too: a checkpoint is loaded before `fit`. `writes` False: one of
  several processes that is not process 0, which reads model_dir's checkpoint (all resume from one step) but
  leaves checkpoints, TensorBoard logs and the final weights to process 0.

  Returns steps (where the run ended), initial_step (where it started), train clips/s, step time and the last loss.
  """
  checkpoint = os.path.join(model_dir, CHECKPOINT)
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  initial_step = _restore(model, checkpoint)
  remaining = total_steps - initial_step
  if initial_step:
    printer(f"resumed at step {initial_step}" + ("" if remaining > 0 else f", of {total_steps}: nothing to train"))
  epochs = math.ceil(remaining / checkpoint_steps) if remaining > 0 else 0
  # Keras runs whole executions of `steps_per_execution` steps, also at an epoch's end: plan what it will run.
  per_execution = model.steps_per_execution
  steps_per_epoch = per_execution * math.ceil(remaining / epochs / per_execution) if epochs else 0
  logs = os.path.join(model_dir, LOGS, "train") if writes else None
  progress = Progress(global_batch, log_every, printer, initial_step, logs)
  losses = [None]
  if epochs:
    history = model.fit(
      data,
      epochs=epochs,
      steps_per_epoch=steps_per_epoch,
      callbacks=[Checkpoint(checkpoint, initial_step, writes), progress],
      shuffle=False,  # Every reader shuffles as it reads; Keras would warn that it cannot.
      verbose=0,
    )
    losses = history.history.get("loss") or losses
  if writes:
    save_weights(model, os.path.join(model_dir, FINAL_WEIGHTS))
  else:
    _save_unwritten(model)
  return {
    "steps": step(model),  # Fewer than planned where the data ran out.
    "initial_step": initial_step,
    "train_clips_per_second": progress.clips_per_second,
    "step_time_s": progress.step_time_s,
    "final_loss": losses[-1],
  }


class Diverged(user_error.UserError):
  """The loss became NaN or infinite: training stopped, its last finite checkpoint kept."""


class Checkpoint(keras.callbacks.Callback):
  """Saves weights and optimizer state at each epoch's end (`save_weights`), and stops a run whose loss is no
  longer finite before it saves: non-finite weights would replace the last good state that a rerun resumes from.
  `writes` False: see `_save_unwritten`.
  """

  def __init__(self, path: str, initial_step: int = 0, writes: bool = True):
    super().__init__()
    self.path, self.initial_step, self.writes = path, initial_step, writes

  def on_epoch_begin(self, epoch, logs=None):  # Steps counted as Progress counts them.
    self._epoch_start = self.initial_step + epoch * self.params["steps"]

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      kept = f"{self.path} is the last finite checkpoint" if os.path.exists(self.path) else "no checkpoint was saved"
      raise Diverged(
        f"training diverged: loss {float(loss)} at step {self._epoch_start + batch + 1}; {kept}; lower "
        "--learning_rate (or raise --warmup_fraction) and rerun"
      )

  def on_epoch_end(self, epoch, logs=None):
    if self.writes:
      save_weights(self.model, self.path)
    else:
      _save_unwritten(self.model)


def save_weights(model, path: str) -> None:
  """model.save_weights to a new file that then replaces `path`, so a kill while saving leaves the last whole."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  partial = path.replace(".weights.h5", ".partial.weights.h5")  # Keras wants the suffix.
  model.save_weights(partial, overwrite=True)
  os.replace(partial, path)


def _save_unwritten(model) -> None:
  """Where process 0 saves, another process saves too, into a file it deletes: saving takes part in collectives
  (on JAX it creates a variable, and JAX checks that every process gives it the same value)."""
  with tempfile.TemporaryDirectory() as folder:
    model.save_weights(os.path.join(folder, FINAL_WEIGHTS))


def _restore(model, checkpoint: str) -> int:
  """Loads `checkpoint`'s weights and optimizer state into `model` if it exists; the step it was saved at."""
  if not os.path.exists(checkpoint):
    return 0
  try:
    model.load_weights(checkpoint)
  except ValueError as e:  # Keras' message goes on to print whole arrays: its first line names the layer.
    raise _another_model(checkpoint, str(e).splitlines()[0].rstrip(":")) from None
  reached = step(model)
  if not reached:  # Keras skips another optimizer's state with a warning; a checkpoint is saved after a step.
    raise _another_model(checkpoint, "its optimizer state does not fit this optimizer")
  return reached


def _another_model(checkpoint: str, why: str) -> user_error.UserError:
  return user_error.UserError(
    f"{checkpoint} is a checkpoint of another model or optimizer (another --num_classes or --optimizer?): {why}; "
    "use a new --model_dir, or delete this one to start over"
  )


def step(model) -> int:
  """The optimizer's step: where training reached (0 for weights loaded without optimizer state)."""
  return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def predict_batch(model, batch: dict, fill_to: int = 1) -> np.ndarray:
  """Logits of an eval batch ({'video'}, and 'num_frames' for a model that takes {'clips', 'num_frames'}).

  A batch smaller than `fill_to` (the last of a split, or of a padded length) is filled up with copies of its
  first view, whose logits are dropped: under XLA every batch then has one of a few shapes, each compiled once.
  """
  inputs = {"clips": batch["video"], "num_frames": batch["num_frames"]} if "num_frames" in batch else batch["video"]
  rows = len(batch["video"])
  if rows < fill_to:
    inputs = keras.tree.map_structure(lambda x: np.concatenate([x, np.repeat(x[:1], fill_to - rows, 0)]), inputs)
  return model.predict_on_batch(inputs)[:rows]


def evaluate(model, batches, class_names, *, fill_to: int = 1, predictions_out: str | None = None, gather=None) -> dict:
  """Runs `model` over eval batches (`predict_batch`, filled up to `fill_to`), averages each video's views'
  softmax scores (`sampling.aggregate`), and reports top-1/top-5 per video and views/s. The first call of each shape,
  which compiles, is not timed; `eval_shapes` counts them. With `predictions_out`, writes one JSON line per video:
  key, label and the top-5 names and scores.

  `gather` (`cluster.gather`): each of several processes evaluated its own videos, all views of each (shares of
  whole examples); every process then reports on all videos, each counted once, and views/s of all together.
  """
  keys, labels, scores = [], {}, []
  shapes = set()
  views_timed, seconds = 0, 0.0
  for batch in batches:
    shape = (max(len(batch["video"]), fill_to), *batch["video"].shape[1:])
    start = time.perf_counter()
    logits = predict_batch(model, batch, fill_to)
    if shape in shapes:
      seconds += time.perf_counter() - start
      views_timed += len(logits)
    shapes.add(shape)
    scores.append(_softmax(logits))
    keys.extend(batch["key"])
    labels.update(zip((k.decode() for k in batch["key"]), batch["label"].tolist()))
  per_video = sampling.aggregate(keys, np.concatenate(scores)) if keys else {}
  counts = {"views": len(keys), "views_timed": views_timed, "seconds": seconds, "shapes": len(shapes)}
  if gather is not None:
    parts = gather(
      {
        "keys": np.array(list(per_video), str),
        "labels": np.array([labels[key] for key in per_video], np.int64),
        "scores": np.array(list(per_video.values())).reshape(len(per_video), len(class_names)),
        **{name: np.array(value) for name, value in counts.items()},
      }
    )
    per_video = {str(key): score for part in parts for key, score in zip(part["keys"], part["scores"])}
    labels = {str(key): int(label) for part in parts for key, label in zip(part["keys"], part["labels"])}
    # The processes ran at once: their time is the longest of theirs.
    totals = {name: [part[name].item() for part in parts] for name in counts}
    counts = {name: (max if name in ("seconds", "shapes") else sum)(values) for name, values in totals.items()}
  if not per_video:
    raise user_error.UserError("the evaluation split (--eval_split) yielded no clips")
  ranked = {key: np.argsort(-score)[:5] for key, score in per_video.items()}
  if predictions_out:
    os.makedirs(os.path.dirname(os.path.abspath(predictions_out)), exist_ok=True)
    with open(predictions_out, "w") as f:
      for key, top in ranked.items():
        f.write(
          json.dumps(
            {
              "key": key,
              "label": class_names[labels[key]],
              "top5": [class_names[c] for c in top],
              "scores": [round(float(per_video[key][c]), 6) for c in top],
            }
          )
          + "\n"
        )
  return {
    "videos": len(per_video),
    "views": counts["views"],
    "top1": float(np.mean([top[0] == labels[key] for key, top in ranked.items()])),
    "top5": float(np.mean([labels[key] in top for key, top in ranked.items()])),
    "eval_clips_per_second": counts["views_timed"] / counts["seconds"] if counts["seconds"] else None,
    "eval_shapes": counts["shapes"],
  }


def benchmark_predict(model, clips, steps: int) -> dict:
  """Inference clips/s on one device-resident batch (synthetic runs), the first, compiling call left out.

  On JAX one `model.predict` over the batch repeated dispatches every step before it reads any result, as a
  jitted loop does (and the Flax peer); there `predict_on_batch` would leave the device idle while each result
  comes back. TensorFlow's PyDataset adapter would copy each batch through the host, so there (and on torch, not
  measured) it is `predict_on_batch`.
  """
  if keras.backend.backend() == "jax":
    model.predict(synthetic.Repeated((clips,), 1), verbose=0)
    start = time.perf_counter()
    model.predict(synthetic.Repeated((clips,), steps), verbose=0)
  else:
    model.predict_on_batch(clips)
    start = time.perf_counter()
    for _ in range(steps):
      model.predict_on_batch(clips)  # Returns numpy, so each call waits for the device.
  seconds = time.perf_counter() - start
  return {"eval_clips_per_second": steps * len(clips) / seconds}


def _softmax(logits):
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return exp / exp.sum(axis=-1, keepdims=True)
