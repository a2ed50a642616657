"""How fast is our I3D, and what does each rewrite buy? Training and inference, beside the Flax and PyTorch I3Ds.

  KERAS_BACKEND=jax python benchmarks/i3d_gpu.py --peer_path=../shared/tools/peer_i3d_gpu.py  # a GPU
  KERAS_BACKEND=tensorflow python benchmarks/i3d_gpu.py --peers= --batch_sizes=2 --frames=16 --size=96 \
    --variants=fast,plain --jit_compile=true,false --eval_frames=48 --eval_batch=8 --whole_clips=48  # a CPU

The one I3D speed script (benchmarks/i3d_profile.py, which it runs with --profile, is the op-by-op profile alone).

Most needed first, each figure logged as it is measured, so a run cut short keeps what it finished: our Keras
I3D's training step (`model.fit` on device-resident uint8 clips, bf16 by default) at each --batch_sizes and its
whole-clip inference (--eval_frames frames, centre crop size); then the peers, in subprocesses of the module at
--peer_path (its own command line), with every JAX process taking accelerator memory as it needs it; then each
rewrite on its own at the first batch size (plain: DeepMind's layers as Keras has them; stem: only the
space-to-depth stem; pools: only the separable max pools; fast: both, the default model; all: fast and the opt-in
one-pass batch norm, which decides whether it should be on by default), and the whole-clip inference of those
whose forward differs from the default's (which pools and stem inference should use). --jit_compile times the
variants with and without XLA too: where the rewrites pay, which `InceptionI3D(fast=None)` follows (they pay only
where XLA fuses their small ops). --whole_clips evaluates whole clips of many lengths (--eval_frames at most) one per
call at their own length and in padded batches of --eval_batch (`InceptionI3D(padded_clips=True)`, as `train.py`
evaluates on an accelerator), twice each (the second pass finds every program compiled), with real weights so the
two paths' logits can be compared. With JAX, last, a training
step of the plain and of the fast model is profiled op by op (--profile: benchmarks/i3d_profile.py, in a
subprocess) and each rewritten layer is timed alone, plain and fast (--pieces). Prints one JSON line: clips/s of
each, `speedup_vs_best_peer` per batch size, inference clips/s and its speedup over Flax, MFU (analytic training FLOPs
over --peak_tflops), the pieces' milliseconds, the profiles (each layer kind's share of the step, forward and
backward, and the top ops), the whole-clip figures, backend, device, XLA_FLAGS and versions.

On a machine without a GPU it runs with whatever shapes it is given (tests use tiny ones) and says that the ratios
against the peers need a GPU. A GPU machine without Keras takes it as three wheels (keras, namex, optree) installed with
`pip install --no-deps --target DIR` and DIR on PYTHONPATH; TensorFlow is not needed on this path.
"""

import collections
import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import logging
import keras
import numpy as np

from kinetics_tfds import command
from kinetics_tfds import sampling
from kinetics_tfds.models import i3d
from kinetics_tfds.models import rewrites
from kinetics_tfds.training import loop
from kinetics_tfds.training import optimization
from kinetics_tfds.training import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each variant's rewrites (`rewrites.REWRITES`).
VARIANTS = {
  "fast": set(rewrites.DEFAULT_REWRITES),
  "plain": set(),
  "stem": {"stem"},
  "pools": {"pools"},
  "all": set(rewrites.REWRITES),
}
# The compile modes worth timing per backend: JAX without XLA runs op by op; torch with it is torch.compile.
_DEFAULT_JIT = {"jax": ["true"], "tensorflow": ["true", "false"], "torch": ["false"]}


@dataclasses.dataclass(frozen=True)
class Settings:
  peer_path: str = command.setting(
    os.path.join(os.path.dirname(_REPO), "shared", "tools", "peer_i3d_gpu.py"),
    "The peers' module (Flax and PyTorch I3Ds); its folder may hold the i3d-jax sdist's "
    "i3d_jax/i3d.py as flax_i3d.py for the Flax peer.",
  )
  peers: tuple[str, ...] = command.setting(
    ("flax", "torch"), "Peers to time: flax, torch, torch_compile (empty: none)."
  )
  batch_sizes: tuple[int, ...] = command.setting((16, 32), "Training batch sizes.")
  variants: tuple[str, ...] = command.setting(
    tuple(VARIANTS), f"Our models timed at the first batch size: {', '.join(VARIANTS)}."
  )
  jit_compile: tuple[str, ...] | None = command.setting(
    None,
    "Compile modes (true, false) to train our models in, the first also for the batch sizes; unset: the backend's "
    "useful ones (JAX: true; TensorFlow: true, false; torch: false).",
  )
  frames: int = command.setting(64, "Frames per training clip.", lower_bound=1)
  size: int = command.setting(224, "Crop side in pixels.", lower_bound=1)
  eval_frames: int = command.setting(250, "Frames per clip for inference (I3D tests on whole clips).", lower_bound=1)
  eval_batch: int = command.setting(8, "Inference batch (whole clips).", lower_bound=1)
  steps: int = command.setting(
    20, "Timed steps per measurement, after warm-up (and the profile's steps).", lower_bound=1
  )
  whole_clips: int = command.setting(
    0, "Whole clips of many lengths to evaluate one per call and in padded batches (0: none).", lower_bound=0
  )
  short_share: float = command.setting(
    0.25, "Share of the whole clips cut short, uniform from an eighth of --eval_frames to all of them."
  )
  whole_clip_weights: str = command.setting(
    "kinetics400", "Weights for --whole_clips (see InceptionI3D; none: random)."
  )
  pieces: bool = command.setting(
    True,
    "With JAX, also time each rewritten layer alone, plain and fast (forward + backward, jitted) at the "
    "shapes it sees in the network at the first batch size: where a step's time goes.",
  )
  profile: bool = command.setting(
    True,
    "With JAX, profile a training step of the plain and the fast model at the first batch size: each layer kind's "
    "share of the step's op time, forward and backward, and the top ops (benchmarks/i3d_profile.py).",
  )
  precision: str = command.setting("mixed_bfloat16", "Our compute dtype (the peers use bf16).", optimization.PRECISIONS)
  peak_tflops: float = command.setting(989.0, "The accelerator's dense bf16 peak, for MFU (H100/H200 SXM: 989).")


command.define_flags(Settings, __name__)


def load_peer_module(path: str):
  """The peers' module, imported from `path` (it is not part of this package)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--peer_path: {path} does not exist; point it at peer_i3d_gpu.py")
  spec = importlib.util.spec_from_file_location("peer_i3d_gpu", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _json_line(command: list) -> dict:
  """The last JSON line a subprocess prints, or {"error": ...} with the end of its stderr; logged as it comes, so
  a run cut short by a time limit still leaves every finished measurement in its log."""
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if not lines:
    measurement = {"error": f"exit {result.returncode}: {result.stderr.strip()[-300:]}"}
  else:
    measurement = json.loads(lines[-1])
  logging.info("%s: %s", " ".join(os.path.basename(str(part)) for part in command[1:]), json.dumps(measurement))
  return measurement


def time_peer(settings: Settings, which: str, batch: int, frames: int) -> dict:
  """One peer measurement, in a subprocess running the peer module's command line; its JSON line as a dict."""
  command = [
    sys.executable,
    settings.peer_path,
    "--which",
    which,
    "--batch",
    str(batch),
    "--frames",
    str(frames),
    "--size",
    str(settings.size),
    "--steps",
    str(settings.steps),
    "--peak_tflops",
    str(settings.peak_tflops),
  ]
  return _json_line(command)


def profile_steps(settings: Settings, batch: int) -> dict:
  """benchmarks/i3d_profile.py's JSON line at this batch size, run in a subprocess (it sets XLA_FLAGS)."""
  command = [
    sys.executable,
    os.path.join(_REPO, "benchmarks", "i3d_profile.py"),
    f"--batch={batch}",
    f"--frames={settings.frames}",
    f"--size={settings.size}",
    f"--precision={settings.precision}",
    f"--steps={settings.steps}",
  ]
  return _json_line(command)


def _model(variant: str) -> keras.Model:
  model = i3d.InceptionI3D(400)
  rewrites.set_rewrites(model, **{rewrite: rewrite in VARIANTS[variant] for rewrite in rewrites.REWRITES})
  return model


def time_ours_training(settings: Settings, variant: str, batch: int, jit_compile: bool = True) -> float:
  """Steady-state training clips/s of our model, fed device-resident uint8 clips through `model.fit`."""
  model = _model(variant)
  model.compile(
    optimization.optimizer("sgd", 0.1, momentum=0.9),
    loss=optimization.SparseCrossentropy(400),
    jit_compile=jit_compile,
  )
  data = synthetic.SyntheticClips(batch, settings.frames, settings.size, 400, steps=settings.steps + 3)
  progress = loop.Progress(batch, settings.steps + 3, printer=logging.info)
  model.fit(data, epochs=1, callbacks=[progress], verbose=0)
  return progress.clips_per_second


def time_ours_inference(settings: Settings, variant: str = "fast") -> float:
  model = _model(variant)
  clips = synthetic.SyntheticClips(settings.eval_batch, settings.eval_frames, settings.size, 400, steps=1).clips
  return loop.benchmark_predict(model, clips, settings.steps)["eval_clips_per_second"]


# The layers the rewrites change: the stem, the stage pools, one branch-3 pool of each Mixed stage, and batch norms
# at the largest activations and in each Mixed stage.
PIECES = (
  "Conv3d_1a_7x7__conv_3d",
  "Conv3d_1a_7x7__batch_norm",
  "Conv3d_2c_3x3__batch_norm",
  "Mixed_3b__Branch_1__Conv3d_0b_3x3__batch_norm",
  "Mixed_4f__Branch_1__Conv3d_0b_3x3__batch_norm",
  "Mixed_5c__Branch_0__Conv3d_0a_1x1__batch_norm",
  "MaxPool3d_2a_3x3",
  "MaxPool3d_3a_3x3",
  "Mixed_3b__Branch_3__MaxPool3d_0a_3x3",
  "MaxPool3d_4a_3x3",
  "Mixed_4b__Branch_3__MaxPool3d_0a_3x3",
  "MaxPool3d_5a_2x2",
  "Mixed_5b__Branch_3__MaxPool3d_0a_3x3",
)


def time_pieces(batch: int, settings: Settings | None = None) -> dict:
  """{layer: {"plain_ms", "fast_ms"}}: a jitted forward + backward of each layer alone, as in a training step: to
  the stem's kernel (a step needs no gradient of the clips), to the pools' inputs, to batch norm's input and beta.
  Without `settings`, those of the parsed flags (../shared/tools/gpu_run.sh's pieces.py calls it so)."""
  settings = settings or command.from_flags(Settings)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  model = i3d.InceptionI3D(400, input_shape=(settings.frames, settings.size, settings.size, 3))
  times = {}
  for name in PIECES:
    layer = model.get_layer(name)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, *layer.input.shape[1:]), layer.compute_dtype)
    variables = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]
    switch = rewrites.REWRITES[rewrites.rewrite_of(layer)].switch

    def loss(variables, x, layer=layer, frozen=frozen):
      y, _ = layer.stateless_call(variables, frozen, x, **({"training": True} if frozen else {}))  # Batch norm's.
      return jnp.sum(jnp.square(y.astype(jnp.float32)))

    times[name] = {}
    for fast in (False, True):
      setattr(layer, switch, fast)
      argnums = 0 if isinstance(layer, rewrites.SpaceToDepthConv3D) else (0, 1) if variables else 1
      step = jax.jit(jax.grad(loss, argnums=argnums))
      jax.block_until_ready(step(variables, x))
      start = time.perf_counter()
      for _ in range(settings.steps):
        grads = step(variables, x)
      jax.block_until_ready(grads)
      times[name]["fast_ms" if fast else "plain_ms"] = round((time.perf_counter() - start) / settings.steps * 1e3, 3)
    logging.info("%s: %s", name, times[name])
  return times


def time_whole_clips(settings: Settings) -> dict:
  """--whole_clips clips of many lengths, each pass's seconds one clip per call and in padded batches, the distinct
  lengths before and after padding, and the largest difference between the two paths' logits."""
  rng = np.random.RandomState(0)
  short = rng.uniform(size=settings.whole_clips) < settings.short_share
  cut = rng.randint(max(settings.eval_frames // 8, 1), settings.eval_frames, settings.whole_clips)
  lengths = np.where(short, cut, settings.eval_frames)
  clips = [rng.randint(0, 256, (n, settings.size, settings.size, 3)).astype(np.uint8) for n in lengths]
  weights = None if settings.whole_clip_weights == "none" else settings.whole_clip_weights
  models = {
    "per_clip": i3d.InceptionI3D(weights=weights),
    "padded": i3d.InceptionI3D(weights=weights, padded_clips=True),
  }
  run = {"per_clip": _per_clip, "padded": functools.partial(_padded_batches, settings)}
  seconds, logits = collections.defaultdict(list), {}
  for _ in range(2):
    for name, model in models.items():
      start = time.perf_counter()
      logits[name] = run[name](model, clips)
      seconds[name].append(time.perf_counter() - start)
      logging.info("whole clips, %s: %.2f s", name, seconds[name][-1])
  padded_lengths = [len(sampling.padded_frames(n, i3d.PADDING_PERIOD)) for n in lengths]
  return {
    "clips": settings.whole_clips,
    "jit_compile": rewrites.compiles_by_default(),
    "seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
    "lengths": len(set(lengths.tolist())),
    "padded_lengths": len(set(padded_lengths)),
    "padding_share": round(1 - sum(lengths) / sum(padded_lengths), 3),
    "speedup_first_pass": round(seconds["per_clip"][0] / seconds["padded"][0], 2),
    "speedup_compiled": round(seconds["per_clip"][1] / seconds["padded"][1], 2),
    "max_abs_logit_diff": float(np.abs(logits["per_clip"] - logits["padded"]).max()),
    "max_abs_logit": float(np.abs(logits["per_clip"]).max()),
  }


def _per_clip(model, clips):
  return np.concatenate([loop.predict_batch(model, {"video": clip[None]}, 1) for clip in clips])


def _padded_batches(settings: Settings, model, clips):
  """Clips padded (`sampling.padded_frames`) and batched by padded length, as `train.py` evaluates them."""
  frames = [sampling.padded_frames(len(clip), i3d.PADDING_PERIOD) for clip in clips]
  groups = collections.defaultdict(list)
  for index, indices in enumerate(frames):
    groups[len(indices)].append(index)
  logits = np.zeros((len(clips), model.output.shape[-1]), np.float32)
  fill_to = settings.eval_batch if rewrites.compiles_by_default() else 1
  for indices in groups.values():
    for start in range(0, len(indices), settings.eval_batch):
      rows = indices[start : start + settings.eval_batch]
      batch = {
        "video": np.stack([clips[i][frames[i]] for i in rows]),
        "num_frames": np.array([len(clips[i]) for i in rows], np.int32),
      }
      logits[rows] = loop.predict_batch(model, batch, fill_to)
  return logits


def accelerator() -> tuple[str, bool]:
  """(what the model runs on, whether it is a GPU)."""
  backend = keras.backend.backend()
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top

    return jax.devices()[0].device_kind, jax.default_backend() == "gpu"
  if backend == "torch":
    import torch  # pylint: disable=g-import-not-at-top

    gpu = torch.cuda.is_available()
    return torch.cuda.get_device_name() if gpu else "cpu", gpu
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  gpus = tf.config.list_physical_devices("GPU")
  return (gpus[0].name if gpus else "cpu"), bool(gpus)


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _ratio(numerator, denominator):
  return round(numerator / denominator, 3) if numerator and denominator else None


def main(argv):
  del argv
  settings = command.from_flags(Settings)
  if settings.jit_compile and not set(settings.jit_compile) <= {"true", "false"}:
    sys.exit(f"{sys.argv[0]}: --jit_compile takes true and false, got {','.join(settings.jit_compile)}")
  try:
    peer = load_peer_module(settings.peer_path)
  except FileNotFoundError as e:
    sys.exit(f"{sys.argv[0]}: {e}")
  unknown = set(settings.variants) - set(VARIANTS)
  if unknown:
    sys.exit(f"{sys.argv[0]}: --variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
  # Every JAX process here (ours, the Flax peer's, the profile's) takes accelerator memory as it needs it, not 75%
  # of it at its start, so ours can run first with the peers after it in processes of their own: what the
  # comparison needs comes first, and a run cut short by a time limit keeps it.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  batches = list(settings.batch_sizes)
  peers = [p for p in settings.peers if p]
  modes = settings.jit_compile or _DEFAULT_JIT[keras.backend.backend()]
  optimization.set_precision(settings.precision)
  ours = {}
  for batch in batches:
    ours[batch] = time_ours_training(settings, "fast", batch, modes[0] == "true")
    logging.info("ours at batch %d: %.2f clips/s", batch, ours[batch])
  ours_eval = time_ours_inference(settings)
  logging.info("ours, inference of %d frames: %.2f clips/s", settings.eval_frames, ours_eval)
  peer_train = {b: {p: time_peer(settings, p, b, settings.frames) for p in peers} for b in batches}
  flax_eval = time_peer(settings, "flax_eval", settings.eval_batch, settings.eval_frames) if "flax" in peers else {}
  variants = {f"xla_{mode}": {} for mode in modes}
  variants[f"xla_{modes[0]}"]["fast"] = round(ours[batches[0]], 2)
  for mode in modes:
    for variant in settings.variants:
      if variant not in variants[f"xla_{mode}"]:
        variants[f"xla_{mode}"][variant] = round(time_ours_training(settings, variant, batches[0], mode == "true"), 2)
        logging.info(
          "variant %s at batch %d, jit_compile=%s: %s clips/s",
          variant,
          batches[0],
          mode,
          variants[f"xla_{mode}"][variant],
        )
  # Inference of the variants whose forward differs from the default's (batch norm's rewrite is training's alone):
  # which pools and stem whole clips should run.
  eval_variants = {"fast": round(ours_eval, 2)}
  for variant in settings.variants:
    if variant not in eval_variants and VARIANTS[variant] - {"batch_norm"} != VARIANTS["fast"] - {"batch_norm"}:
      eval_variants[variant] = round(time_ours_inference(settings, variant), 2)
      logging.info(
        "variant %s, inference of %d frames: %s clips/s", variant, settings.eval_frames, eval_variants[variant]
      )
  whole_clips = time_whole_clips(settings) if settings.whole_clips else None
  on_jax = keras.backend.backend() == "jax"
  profiles = profile_steps(settings, batches[0]) if settings.profile and on_jax else None
  pieces = time_pieces(batches[0], settings) if settings.pieces and on_jax else None

  flops_per_clip = peer.train_flops_per_clip(settings.frames, settings.size)
  train = {}
  for batch in batches:
    peer_speeds = {p: m.get("clips_per_s") for p, m in peer_train[batch].items()}
    best_peer = max((s for s in peer_speeds.values() if s), default=None)
    train[str(batch)] = {
      "ours": round(ours[batch], 2),
      **peer_speeds,
      "speedup_vs_best_peer": _ratio(ours[batch], best_peer),
      "mfu": float(f"{ours[batch] * flops_per_clip / (settings.peak_tflops * 1e12):.3g}"),
      "peer_errors": {p: m["error"] for p, m in peer_train[batch].items() if "error" in m} or None,
    }
  device, on_gpu = accelerator()
  summary = {
    "backend": keras.backend.backend(),
    "device": device,
    "precision": settings.precision,
    # XLA's options change what is measured (e.g. --xla_gpu_force_conv_nhwc=true: convolutions in NDHWC).
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "shape": {
      "frames": settings.frames,
      "size": settings.size,
      "eval_frames": settings.eval_frames,
      "eval_batch": settings.eval_batch,
    },
    "train_clips_per_s": train,
    f"variants_batch{batches[0]}_clips_per_s": variants,
    # Plain over fast step time per compile mode: where the rewrites pay. `fast=None` follows `default_fast`.
    "fast_speedup": {mode: _ratio(times.get("fast"), times.get("plain")) for mode, times in variants.items()},
    "default_fast": rewrites.compiles_by_default(),
    "eval_variants_clips_per_s": eval_variants,
    "eval_clips_per_s": {
      "ours": round(ours_eval, 2),
      "flax": flax_eval.get("clips_per_s"),
      "speedup_vs_flax": _ratio(ours_eval, flax_eval.get("clips_per_s")),
    },
    "whole_clips": whole_clips,
    f"pieces_batch{batches[0]}_fwd_bwd": pieces,
    f"profile_batch{batches[0]}": profiles,
    "versions": {p: _version(p) for p in ("keras", "jax", "flax", "torch", "tensorflow")},
  }
  if not on_gpu:
    summary["note"] = "no GPU: these shapes and ratios only show that the script runs; the ratios need a GPU"
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
