"""Where an I3D training step's time goes, op by op, for the plain and the fast model (JAX).

  KERAS_BACKEND=jax python benchmarks/i3d_profile.py --batch=16 --frames=64 --size=224

Profiles a jitted training step (forward, backward, SGD update; bf16 by default) of each model with
`jax.profiler` and gives each XLA op's device time to the Keras layer its HLO metadata names: `jvp(<layer>)` is the
forward pass, `transpose(jvp(<layer>))` the backward. Prints one JSON line: per model the step's op time in
milliseconds, each layer kind's share forward and backward (stem, convolution, batch norm, ReLU, max pool, ...),
and the top ops. Ops XLA made from no layer (copies, the loss, the update) count as "other". Shares are of the
step's wall-clock time: what the ops' events do not cover is "untraced", on a GPU time the device sat idle. On CPU
that is most of a step: XLA runs convolutions asynchronously there and their events cover only the launch (a
53 ms convolution shows as 1.4 ms), so a CPU profile under-counts convolutions and says little.

It sets XLA_FLAGS for itself: on a GPU, no command buffers, so that the profiler sees each kernel; on CPU,
per-op trace events (XLA emits none there otherwise). Run it alone: other programs' ops would count too. The I3D
speed script, benchmarks/i3d_gpu.py, runs it with --profile (in a process of its own, for XLA_FLAGS).
"""

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = " ".join(
  (os.environ.get("XLA_FLAGS", ""), "--xla_gpu_enable_command_buffer=", "--xla_cpu_enable_xprof_traceme=true")
)

from absl import app  # noqa: E402  (after XLA_FLAGS, which JAX reads once, at its first use)
import keras  # noqa: E402
from keras import layers  # noqa: E402

from kinetics_tfds import command  # noqa: E402
from kinetics_tfds.models import i3d  # noqa: E402
from kinetics_tfds.models import rewrites  # noqa: E402
from kinetics_tfds.training import optimization  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Settings:
  batch: int = command.setting(16, "Clips per step.", lower_bound=1)
  frames: int = command.setting(64, "Frames per clip.", lower_bound=1)
  size: int = command.setting(224, "Crop side in pixels.", lower_bound=1)
  steps: int = command.setting(3, "Profiled steps, after two warm-up steps.", lower_bound=1)
  top: int = command.setting(12, "Ops listed by time, per model.", lower_bound=1)
  precision: str = command.setting("mixed_bfloat16", "Compute dtype.", optimization.PRECISIONS)


command.define_flags(Settings, __name__)

# The first kind a layer is an instance of (SpaceToDepthConv3D is a Conv3D).
_KINDS = (
  (rewrites.SpaceToDepthConv3D, "stem"),
  (layers.Conv3D, "convolution"),
  (layers.BatchNormalization, "batch norm"),
  (layers.ReLU, "relu"),
  (layers.MaxPooling3D, "max pool"),
  (layers.Concatenate, "concatenate"),
)
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+) = ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPERANDS = re.compile(r"%([\w.\-]+)")
_LAYER = re.compile(r"jvp\(([\w.\-]+)\)")


def layer_kinds(model: keras.Model) -> dict:
  """{layer name: kind}; layers of no listed kind (the input, rescaling, the logits) are the "head"."""
  return {layer.name: next((kind for cls, kind in _KINDS if isinstance(layer, cls)), "head") for layer in model.layers}


def instruction_owners(hlo_text: str, kinds: dict) -> dict:
  """{HLO instruction: (layer, "forward" or "backward")} from the metadata of the compiled module's text.

  An instruction without metadata of its own (a fusion, often) takes that of the computation it calls, else the
  owner of its first operand that has one (XLA on CPU rewrites a max pool's gradient into such ops).
  """
  computations, instructions = collections.defaultdict(list), []
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      called = _CALLS.search(line)
      operands = _OPERANDS.findall(line[match.end() :].split("metadata=")[0])
      instructions.append((match.group(1), op_name and op_name.group(1), called and called.group(1), operands))
      if op_name and computation:
        computations[computation].append(op_name.group(1))
  owners = {}
  for name, op_name, called, operands in instructions:  # In the text's order: operands come first.
    for candidate in [op_name] if op_name else computations.get(called, []):
      named = [layer for layer in _LAYER.findall(candidate) if layer in kinds]
      if named:
        owners[name] = (named[-1], "backward" if "transpose(" in candidate else "forward")
        break
    else:
      inherited = next((owners[o] for o in operands if o in owners), None)
      if inherited:
        owners[name] = inherited
  return owners


def op_times(trace: dict, module: str) -> dict:
  """{HLO op: total microseconds} of `module` in a profiler trace (Chrome trace-event JSON).

  Device events where there are any (a GPU's kernels), else the host's (XLA on CPU), so nothing counts twice.
  Events that name no module count as the step's: the trace holds only its steps.
  """
  processes = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"}
  events = [
    e
    for e in trace["traceEvents"]
    if e.get("ph") == "X" and "hlo_op" in e.get("args", {}) and e["args"].get("hlo_module", module).startswith(module)
  ]
  on_device = [e for e in events if processes.get(e["pid"], "").startswith("/device:")]
  times = collections.Counter()
  for event in on_device or events:
    times[event["args"]["hlo_op"]] += event.get("dur", 0.0)
  return times


def summarize(times: dict, owners: dict, kinds: dict, steps: int, top: int, wall_seconds: float) -> dict:
  """The step's wall-clock and op milliseconds, each (kind, pass)'s percent of the wall-clock time (and the
  untraced rest's), and the `top` ops."""
  if not times:
    raise RuntimeError("the profile holds no op events of the step")
  traced = sum(times.values())
  total = max(traced, wall_seconds * 1e6)
  shares = collections.Counter({"untraced": total - traced})
  for op, microseconds in times.items():
    layer, direction = owners.get(op, (None, None))
    shares[f"{kinds[layer]} {direction}" if layer else "other"] += microseconds
  ops = []
  for op, microseconds in times.most_common(top):
    layer, direction = owners.get(op, (None, None))
    ops.append(
      {
        "op": op,
        "layer": layer,
        "pass": direction,
        "ms": round(microseconds / steps / 1e3, 3),
        "percent": round(100 * microseconds / total, 1),
      }
    )
  return {
    "step_ms": round(total / steps / 1e3, 2),
    "step_op_ms": round(traced / steps / 1e3, 2),
    "percent_by_kind": {kind: round(100 * us / total, 1) for kind, us in shares.most_common()},
    "top_ops": ops,
  }


def profile(settings: Settings, fast: bool) -> dict:
  """Profiles --steps training steps of the fast or plain model; its summary."""
  import jax  # pylint: disable=g-import-not-at-top

  model = i3d.InceptionI3D(400, input_shape=(settings.frames, settings.size, settings.size, 3), fast=fast)
  cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def loss(trainable, frozen, clips, labels):
    logits, frozen = model.stateless_call(trainable, frozen, clips, training=True)
    return cross_entropy(labels, logits), frozen

  def train_step(trainable, frozen, clips, labels):
    (_, frozen), grads = jax.value_and_grad(loss, has_aux=True)(trainable, frozen, clips, labels)
    return [v - 0.01 * g.astype(v.dtype) for v, g in zip(trainable, grads)], frozen

  step = jax.jit(train_step, donate_argnums=(0, 1))
  key = jax.random.PRNGKey(0)
  clips = jax.random.randint(key, (settings.batch, settings.frames, settings.size, settings.size, 3), 0, 256).astype(
    "uint8"
  )
  labels = jax.random.randint(key, (settings.batch,), 0, 400)
  state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
  # Compiled once; the ops the trace names are those of this text.
  compiled = step.lower(*state, clips, labels).compile()
  hlo_text = compiled.as_text()
  module = re.match(r"HloModule (\S+?),", hlo_text).group(1)
  for _ in range(2):
    state = compiled(*state, clips, labels)
  jax.block_until_ready(state)
  start = time.perf_counter()  # Untraced, so the profiler's own cost is left out.
  for _ in range(settings.steps):
    state = compiled(*state, clips, labels)
  jax.block_until_ready(state)
  wall_seconds = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir):
      for _ in range(settings.steps):
        state = compiled(*state, clips, labels)
      jax.block_until_ready(state)
    (path,) = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.trace.json.gz"))
    with gzip.open(path) as f:
      trace = json.load(f)
  kinds = layer_kinds(model)
  owners = instruction_owners(hlo_text, kinds)
  return summarize(op_times(trace, module), owners, kinds, settings.steps, settings.top, wall_seconds)


def main(argv):
  del argv
  if keras.backend.backend() != "jax":
    sys.exit(f"{sys.argv[0]}: profiles XLA ops: run it with KERAS_BACKEND=jax")
  import jax  # pylint: disable=g-import-not-at-top

  settings = command.from_flags(Settings)
  optimization.set_precision(settings.precision)
  summary = {
    "device": jax.devices()[0].device_kind,
    "precision": settings.precision,
    "shape": {"batch": settings.batch, "frames": settings.frames, "size": settings.size},
    "plain": profile(settings, fast=False),
    "fast": profile(settings, fast=True),
  }
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
