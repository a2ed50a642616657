"""kinetics-train as several processes on 127.0.0.1, each with its own CPU: JAX (gloo collectives) joined by the
KERAS_DISTRIBUTION_* variables, TensorFlow by TF_CONFIG. Training equals one process's, evaluation counts each video
once, and a killed process ends the others.

Each process compiles I3D once (8 frames of 32 pixels, unoptimised XLA), so every check starts as few as it can.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO
from kinetics_tfds.training import cluster
from kinetics_tfds.training import loop

_SCRIPT = str(REPO / "benchmarks" / "i3d.py")
_TINY_CONFIG = {"synthetic": True, "num_frames": 8, "image_size": 32, "batch_size": 4, "num_classes": 4, "log_every": 1}
_TINY = [f"--{name}={value}" for name, value in _TINY_CONFIG.items()]
# How long a process may outlive a killed one: it must not wait on a collective for ever.
_BOUND_S = 60


def _free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _environments(backend: str, count: int, devices: int) -> list[dict]:
  """Each process's environment: only the ecosystem's standard variables say it is one of `count`."""
  xla_flags = "--xla_backend_optimization_level=0" + (f" --xla_force_host_platform_device_count={devices}")
  base = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": xla_flags}
  if count == 1:
    return [base]
  ports = _free_ports(count)
  if backend == "jax":
    job = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}", "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count)}
    return [{**base, **job, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)} for i in range(count)]
  workers = [f"127.0.0.1:{port}" for port in ports]
  configs = [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(count)]
  return [{**base, "TF_CONFIG": json.dumps(config)} for config in configs]


def _start(backend: str, count: int, model_dir, *args: str, devices: int = 1) -> list[subprocess.Popen]:
  """`count` processes of kinetics-train, each with `devices` CPU devices; stderr to model_dir/stderr<i> (a pipe
  nobody reads would fill up and stop it)."""
  os.makedirs(model_dir, exist_ok=True)
  processes = []
  for i, environment in enumerate(_environments(backend, count, devices)):
    with open(os.path.join(model_dir, f"stderr{i}"), "w") as stderr:
      command = [sys.executable, _SCRIPT, *args, f"--model_dir={model_dir}"]
      processes.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=stderr, text=True))
    processes[-1].stderr_file = stderr.name
  return processes


def _stderr(process) -> str:
  with open(process.stderr_file) as f:
    return f.read()


def _finish(processes) -> list[str]:
  """The stdout of each, once all have exited 0."""
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p in processes:
    assert p.returncode == 0, _stderr(p)[-3000:]
  return outputs


def _summary(stdout: str) -> dict:
  return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _losses(stdout: str) -> list[float]:
  return [float(line.split()[3]) for line in stdout.splitlines() if line.startswith("step ")]


def _checkpoint_step(path) -> int:
  with h5py.File(path) as f:
    return int(f["optimizer/vars/0"][()])  # The optimizer's iteration counter.


def test_shares_are_disjoint_and_whole():
  for lengths in ([5, 5, 4, 6, 5], [7], [3, 3], [1, 2]):
    for count in (1, 2, 3, 4):
      shares = [cluster.share(lengths, cluster.Process(i, count)) for i in range(count)]
      assert [start for start, _ in shares[1:]] == [stop for _, stop in shares[:-1]], (lengths, count)
      assert (shares[0][0], shares[-1][1]) == (0, sum(lengths))
      if len(lengths) >= count:  # Whole files: each boundary is one between files.
        assert {stop for _, stop in shares} <= set(np.cumsum(lengths).tolist()), (lengths, count)
  # Fewer files than processes: by example.
  assert [cluster.share([7], cluster.Process(i, 2)) for i in range(2)] == [(0, 3), (3, 7)]


@pytest.mark.parametrize("backend", ["jax"])
def test_two_processes_train_as_one_resume_and_end_together(backend, tmp_path):
  """The same global batches on one process's 2 CPU devices and on 2 processes of one device each: one mesh, the
  same program, the same losses. Against one device alone, XLA sums in another order, and the 32-pixel I3D's batch
  norm over 4 clips magnifies that: 2e-4 in the first loss. Then both processes are rerun to a larger total: they
  resume from the same step, and when one is killed the other ends within the bound. (A constant learning rate, so
  that the total is not in the program and the rerun takes it from JAX's compilation cache.)"""
  args = [*_TINY, "--mode=train", "--lr_schedule=constant", "--checkpoint_steps=3"]
  two_out, other_out = _finish(_start(backend, 2, tmp_path / "two", *args, "--train_steps=3"))
  (one_out,) = _finish(_start(backend, 1, tmp_path / "one", *args, "--train_steps=3", devices=2))
  one, two = _summary(one_out), _summary(two_out)
  print(f"{backend}: losses of one process {_losses(one_out)}, {one['final_loss']}")
  print(f"{backend}: losses of two processes {_losses(two_out)}, {two['final_loss']}")
  assert (one["placement"], two["placement"]) == ("2 cpu device(s)", "2 cpu device(s) of 2 processes")
  assert len(_losses(one_out)) == 3 and _losses(one_out) == _losses(two_out) == _losses(other_out)
  assert two["final_loss"] < _losses(two_out)[0] - 0.5, two  # The steps learn: equal losses say something.
  np.testing.assert_allclose(two["final_loss"], one["final_loss"], rtol=1e-6)
  written = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert written["processes"] == 2 and written["final_loss"] == two["final_loss"]

  first, second = _start(backend, 2, tmp_path / "two", *args, "--train_steps=1000")
  resumed = []
  for line in first.stdout:
    resumed.append(line)
    if line.startswith("step 5:"):  # Two steps together after resuming.
      break
  second.send_signal(signal.SIGKILL)
  killed = time.monotonic()
  first.wait(timeout=_BOUND_S + 60)
  ended_s = time.monotonic() - killed
  message = _stderr(first).splitlines()[-1]
  print(f"{backend}: process 0 ended {ended_s:.1f} s after process 1 was killed")
  assert first.returncode == 1 and ended_s < _BOUND_S, (ended_s, message)
  assert message.startswith("i3d.py: process 0 of 2 stopped: ") and "rerun all of them" in message, message
  assert "resumed at step 3" in "".join(resumed) and "resumed at step 3" in second.stdout.read()
  assert _checkpoint_step(tmp_path / "two" / loop.CHECKPOINT) == 3  # Intact, and the next is due at step 6.


_EVAL = ["--mode=eval", "--weights=kinetics400", "--eval_views=2x1", "--num_frames=16", "--jit_compile=false"]


def _evaluate(backend, count, data_dir, folder) -> tuple[list[dict], dict]:
  """Each process's summary and process 0's predictions per video, of `count` processes evaluating `_EVAL`."""
  written = folder / "predictions.jsonl"
  outputs = _finish(_start(backend, count, folder, *_EVAL, f"--data_dir={data_dir}", f"--predictions_out={written}"))
  return [_summary(out) for out in outputs], {row["key"]: row for row in map(json.loads, written.open())}


@pytest.fixture(scope="module")
def one_process_evaluation(kinetics400_two_clips, tmp_path_factory):
  """One process's evaluation, which both backends' two processes must match: TensorFlow's, the quicker here (JAX's
  gives the same predictions to the 6 digits written)."""
  (summary,), predictions = _evaluate("tensorflow", 1, kinetics400_two_clips, tmp_path_factory.mktemp("one"))
  return summary, predictions


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_processes_evaluate_each_video_once(backend, one_process_evaluation, kinetics400_two_clips, tmp_path):
  """DeepMind's I3D on the two real clips (one file: shared by example, one clip each) as one process did. Two
  views of 16 frames per clip, not the whole clips: the views of a video are averaged in its process, and eager
  inference of 2 x 250 frames took minutes here."""
  one, one_predictions = one_process_evaluation
  two, predictions = _evaluate(backend, 2, kinetics400_two_clips, tmp_path)
  print(f"{backend}: one process {json.dumps(one)}\n{backend}: two processes {json.dumps(two[0])}")
  # Each video once: four views in all, as in one process, not one process's views twice.
  assert (one["videos"], one["views"], one["processes"]) == (2, 4, 1), one
  for summary in two:
    assert (summary["videos"], summary["views"], summary["processes"]) == (2, 4, 2), summary
    assert (summary["top1"], summary["top5"]) == (one["top1"], one["top5"])
  assert predictions.keys() == one_predictions.keys() and len(predictions) == 2
  for key, row in one_predictions.items():
    assert predictions[key]["top5"] == row["top5"] and predictions[key]["label"] == row["label"]
    np.testing.assert_allclose(predictions[key]["scores"], row["scores"], atol=1e-5)


def test_a_killed_worker_ends_the_other_tensorflow(kinetics400_two_clips, tmp_path):
  """TensorFlow's collectives learn of a dead worker from its coordination service: the other, evaluating its own
  whole clip, then fails to gather the results and ends."""
  args = ["--mode=eval", "--weights=kinetics400", "--eval_views=whole", "--jit_compile=false"]
  first, second = _start("tensorflow", 2, tmp_path, *args, f"--data_dir={kinetics400_two_clips}")
  while "Enabled multi-worker collective ops" not in _stderr(first) and first.poll() is None:
    time.sleep(0.5)  # Until the workers have met.
  second.send_signal(signal.SIGKILL)
  killed = time.monotonic()
  first.wait(timeout=_BOUND_S + 60)
  ended_s = time.monotonic() - killed
  message = _stderr(first).splitlines()[-1]
  assert first.returncode == 1 and ended_s < _BOUND_S, (ended_s, message)
  assert message.startswith("i3d.py: process 0 of 2 stopped: UnavailableError"), message
  print(f"tensorflow: process 0 ended {ended_s:.1f} s after process 1 was killed")


# TensorFlow's two workers' mesh in one process: two replicas on two logical CPUs, batch norm over both. (Batch norm
# over the whole batch of one replica runs other code, OnePassBatchNormalization's: its gradients differ from Keras'
# synchronized ones by 3e-4 at 32 pixels, which three steps make 4e-3 in the loss.)
_TWO_REPLICAS = """
import json, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from kinetics_tfds.training import config, placement, run
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
here = placement.Placement("2 logical CPUs", 2, strategy, sync_batch_norm=True)
print(json.dumps(run.run(config.Config(**json.loads(sys.argv[1])), placement=here)))
"""


def test_two_tensorflow_workers_train_as_one(tmp_path):
  """Two workers (MultiWorkerMirroredStrategy) train 3 steps as one process's two replicas do over the same global
  batches. No dropout, whose masks each replica draws alone. (Resuming is test_train's one-process test: a rerun of
  both workers, which resumed from step 2 to the same losses, cost a minute of CI.)"""
  settings = {**_TINY_CONFIG, "mode": "train", "checkpoint_steps": 1, "dropout_rate": 0.0, "train_steps": 3}
  args = [f"--{name}={value}" for name, value in settings.items()]
  environment = {**os.environ, "KERAS_BACKEND": "tensorflow"}
  one_config = json.dumps({**settings, "model_dir": str(tmp_path / "one")})
  command = [sys.executable, "-c", _TWO_REPLICAS, one_config]
  one = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  two = _finish(_start("tensorflow", 2, tmp_path / "two", *args))
  one_out, one_err = one.communicate(timeout=600)
  assert one.returncode == 0, one_err[-3000:]
  two_losses = _losses(two[0])
  print(f"tensorflow: losses of one process {_losses(one_out)}, {_summary(one_out)['final_loss']}")
  print(f"tensorflow: losses of two workers {two_losses}, {_summary(two[0])['final_loss']}")
  assert _summary(two[0])["placement"] == "2 workers (TF_CONFIG)" and _losses(two[1]) == two_losses
  assert len(two_losses) == 3 and abs(two_losses[-1] - two_losses[0]) > 0.5  # The steps change the model.
  np.testing.assert_allclose(two_losses, _losses(one_out), rtol=1e-6)
  np.testing.assert_allclose(_summary(two[0])["final_loss"], _summary(one_out)["final_loss"], rtol=1e-6)
