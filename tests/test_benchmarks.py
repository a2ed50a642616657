"""Every benchmark runs end to end at tiny shapes and prints its one JSON line (the figures are for a quiet machine,
not for tests): the build and input benchmarks, and the I3D speed script, benchmarks/i3d_gpu.py, on CPU: on JAX with
the peers, the pieces and the profile (its ratios need a GPU), and on TensorFlow without XLA with whole clips of many
lengths."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import SHARED
from conftest import benchmark_summary
from kinetics_tfds.models import rewrites
from kinetics_tfds.models import weights

_SCRIPT = REPO / "benchmarks" / "i3d_gpu.py"
_PEERS = SHARED / "tools" / "peer_i3d_gpu.py"


def _run(*args):
  environment = dict(
    os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), XLA_FLAGS="--xla_backend_optimization_level=0"
  )
  return subprocess.run(
    [sys.executable, str(_SCRIPT), *args], env=environment, capture_output=True, text=True, check=False
  )


def test_tiny_run_prints_one_json_line():
  if not _PEERS.exists():
    pytest.skip(f"{_PEERS} is missing: the peers' module lives in ../shared beside the repo")
  # Peers that cannot run here (no flax or optax; torch's I3D needs 16x224x224 clips or more) are reported as
  # errors beside our figures, which must not stop the run.
  result = _run(
    f"--peer_path={_PEERS}",
    "--peers=flax,torch",
    "--batch_sizes=2",
    "--variants=fast,plain",
    "--frames=8",
    "--size=32",
    "--eval_frames=12",
    "--eval_batch=1",
    "--steps=1",
    "--precision=float32",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # Ours first: a device run cut short by its time limit keeps the figures the comparison needs.
  assert result.stderr.index("ours at batch 2:") < result.stderr.index("--which flax")
  (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
  summary = json.loads(line)
  assert summary["backend"] == "jax"
  assert summary["xla_flags"] == "--xla_backend_optimization_level=0"
  assert "ratios need a GPU" in summary["note"]
  train = summary["train_clips_per_s"]["2"]
  assert train["ours"] > 0 and train["mfu"] > 0
  assert set(summary["variants_batch2_clips_per_s"]["xla_true"]) == {"fast", "plain"}
  assert summary["eval_clips_per_s"]["ours"] > 0
  eval_variants = summary["eval_variants_clips_per_s"]
  assert set(eval_variants) == {"fast", "plain"} and eval_variants["plain"] > 0
  assert summary["versions"]["keras"] and summary["versions"]["jax"]
  for peer in ("flax", "torch"):
    assert train[peer] or train["peer_errors"][peer]
  # Each rewritten layer alone, forward and backward, in both forms: the stem, the pools and batch norm.
  pieces = summary["pieces_batch2_fwd_bwd"]
  assert {"Conv3d_1a_7x7__conv_3d", "MaxPool3d_4a_3x3", "Mixed_4f__Branch_1__Conv3d_0b_3x3__batch_norm"} <= set(pieces)
  assert all(times["plain_ms"] > 0 and times["fast_ms"] > 0 for times in pieces.values()), pieces
  # The op-by-op profile of a step, plain and fast: XLA's ops given to the layers their metadata names.
  profile = summary["profile_batch2"]
  for model in ("plain", "fast"):
    shares = profile[model]["percent_by_kind"]
    assert 99 <= sum(shares.values()) <= 101, shares
    for kind in ("stem", "convolution", "batch norm", "max pool"):
      assert shares.get(f"{kind} forward", 0) + shares.get(f"{kind} backward", 0) > 0, (model, kind, shares)
    assert shares["convolution backward"] > 0
    # Shares are of the wall-clock step; on CPU asynchronous convolutions leave much of it untraced.
    assert profile[model]["step_ms"] >= profile[model]["step_op_ms"] > 0 and "untraced" in shares
    assert any(op["layer"] and op["pass"] for op in profile[model]["top_ops"])


def test_missing_peer_module_is_one_line(tmp_path):
  result = _run(f"--peer_path={tmp_path / 'absent.py'}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].endswith("does not exist; point it at peer_i3d_gpu.py")


@pytest.fixture(scope="module")
def without_xla():
  """One run on TensorFlow without XLA (the CPU default): both layers, and whole clips with the real weights."""
  if not _PEERS.exists():
    pytest.skip(f"{_PEERS} is missing: the peers' module lives in ../shared beside the repo")
  return benchmark_summary(
    "i3d_gpu.py",
    *(f"--peer_path={_PEERS}", "--peers=", "--jit_compile=false", "--batch_sizes=2", "--variants=fast,plain"),
    *("--frames=8", "--size=32", "--steps=1", "--precision=float32", "--eval_frames=12", "--eval_batch=2"),
    *("--whole_clips=6", "--short_share=0.5"),
    **{weights.CACHE_ENV: str(weights.kinetics400_path().parent)},
  )


def test_layers_timed_without_xla(without_xla):
  """Plain against fast layers without XLA, whose figures chose the default (`fast=None`)."""
  assert set(without_xla["variants_batch2_clips_per_s"]) == {"xla_false"}
  assert min(without_xla["variants_batch2_clips_per_s"]["xla_false"].values()) > 0
  assert without_xla["fast_speedup"]["xla_false"] > 0
  assert without_xla["default_fast"] == rewrites.compiles_by_default()


def test_whole_clips_padded_give_each_clips_logits(without_xla):
  """Whole clips one per call and in padded batches: both timed, both paths' logits the same."""
  whole = without_xla["whole_clips"]
  assert whole["clips"] == 6 and whole["lengths"] >= whole["padded_lengths"] >= 1
  assert min(min(seconds) for seconds in whole["seconds"].values()) > 0
  assert whole["max_abs_logit"] > 1 and whole["max_abs_logit_diff"] <= 1e-5 * whole["max_abs_logit"]


def test_input_pipeline_benchmark(tmp_path):
  summary = benchmark_summary(
    "input_pipeline.py",
    *("--num_clips=4", "--seconds=1", "--num_frames=8", "--image_size=32", "--batch_size=2"),
    *("--steps=1", "--full_decode_steps=1", "--warmup_steps=1", "--passes=1", "--rounds=1"),
    f"--work_dir={tmp_path}",
  )
  assert (summary["num_frames"], summary["image_size"], summary["source_frames_per_clip"]) == (8, 32, 25)
  ratios = ("ratio_to_limit", "speedup_vs_full_decode", "cpu_ratio_to_limit", "tf_free_per_core_ratio_to_pipeline")
  for name in ratios:
    assert math.isfinite(summary[name]) and summary[name] > 0, name
  assert set(summary["cpu_ms_per_clip"]) == {"pipeline", "limit", "full_decode", "read_and_sample", "tf_free"}
  assert (tmp_path / "data").is_dir() and (tmp_path / "data_array_record").is_dir()


def test_build_benchmark(tmp_path):
  summary = benchmark_summary(
    "build.py",
    *("--sizes=160x120", "--headline_size=160x120", "--seconds=1", "--clips_per_size=1", "--repeats=1"),
    *("--scaling_clips=2", "--memory_clips=2,3", "--main_cpu_clips=1,2", "--workers=2"),
    f"--work_dir={tmp_path}",
  )
  assert summary["headline_size"] == "160x120" and set(summary["by_size"]) == {"160x120"}
  for name in ("ratio_to_floor", "clips_per_s_per_core", "scaling_efficiency"):
    assert math.isfinite(summary[name]) and summary[name] > 0, name
  # At 1 and 2 clips the writer's CPU per clip is within noise and may come out below 0; each build's CPU may not.
  cpu_by_clips = summary["main_cpu_s_by_clips"]
  assert set(cpu_by_clips) == {"1", "2"} and all(math.isfinite(s) and s > 0 for s in cpu_by_clips.values())
  assert summary["main_cpu_ms_per_clip"] == pytest.approx(1000 * (cpu_by_clips["2"] - cpu_by_clips["1"]), abs=1)
  ceiling = summary["max_clips_per_s_one_machine"]
  assert ceiling is None if summary["main_cpu_ms_per_clip"] <= 0 else ceiling > 0
  assert set(summary["peak_rss_mb_by_clips"]) == {"2", "3"} and summary["workers"] == 2
