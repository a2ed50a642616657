"""Exact rewrites of I3D's layers into forms that XLA runs faster, and the one mapping that switches them by name.

Each rewrite is a Keras layer subclass that computes its parent's function (the same variables, the same outputs up
to the rounding of sums) in another form, behind a bool switch that also takes its parent's own code:
- "stem": the stride-2 7x7x7 stem as a stride-1 convolution over 2x2x2 blocks of the clip (`SpaceToDepthConv3D`);
- "pools": every max pool as 1-D maxima along W, H and T with a gradient of its own (`SeparableMaxPooling3D`);
- "batch_norm": batch norm in training with one-read statistics and a closed-form gradient
  (`OnePassBatchNormalization`).
The first two pay only where XLA fuses their small ops, so `InceptionI3D(fast=None)` turns them on where Keras
compiles with XLA by default (`compiles_by_default`: JAX, TensorFlow with an accelerator) and off where it does not
(torch, TensorFlow on CPU alone, where they made a step 30-55% slower). Batch norm's is opt-in (`set_rewrites`): on
CPU it made a JAX training step ~4% slower, and no GPU has timed it yet. benchmarks/i3d_gpu.py times each.

Only Keras is imported here, so every backend runs these layers.
"""

import functools
from typing import NamedTuple

import keras
from keras import layers
from keras import ops

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


class Rewrite(NamedTuple):
  """A rewrite: the layer class that computes it, and that layer's switch (a bool attribute and constructor argument;
  False runs the parent Keras layer's own code)."""

  layer: type
  switch: str


# Every rewrite by name: the names `set_rewrites`, `rewrites_on` and the benchmarks' variants use.
REWRITES = {
  "stem": Rewrite(SpaceToDepthConv3D, "space_to_depth"),
  "pools": Rewrite(SeparableMaxPooling3D, "separable"),
  "batch_norm": Rewrite(OnePassBatchNormalization, "one_pass"),
}
DEFAULT_REWRITES = ("stem", "pools")  # What `fast=True` turns on: those measured to pay under XLA.


def rewrite_of(layer: keras.layers.Layer) -> str | None:
  """The name of the rewrite (`REWRITES`) that `layer` can compute, or None for a layer of no rewrite."""
  return next((name for name, rewrite in REWRITES.items() if isinstance(layer, rewrite.layer)), None)


def set_rewrites(model: keras.Model, **rewrites: bool) -> None:
  """Turns a model's rewrites (`REWRITES`: stem=, pools=, batch_norm=) on or off.

  Call it before the model is traced or compiled. A rewrite not named keeps its setting.

  Either way the model computes the same function with the same variables, so this only changes speed (and the
  rounding of sums); measured one by one in benchmarks/i3d_gpu.py.
  """
  unknown = set(rewrites) - set(REWRITES)
  if unknown:
    raise ValueError(f"unknown rewrites {sorted(unknown)}; choose from {sorted(REWRITES)}")
  for layer in model.layers:
    name = rewrite_of(layer)
    if name in rewrites:
      setattr(layer, REWRITES[name].switch, rewrites[name])


def rewrites_on(model: keras.Model) -> list[str]:
  """The rewrites (`REWRITES`) that some layer of `model` computes, sorted."""
  return sorted(
    {name for layer in model.layers if (name := rewrite_of(layer)) and getattr(layer, REWRITES[name].switch)}
  )


def set_fast(model: keras.Model, fast: bool) -> None:
  """Turns `DEFAULT_REWRITES` on and the other rewrites off, or every rewrite off: what `InceptionI3D(fast=)` does.

  For a model built before its compile step chose XLA or not: `set_fast(model, model.jit_compile)`.
  """
  set_rewrites(model, **{name: fast and name in DEFAULT_REWRITES for name in REWRITES})


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
