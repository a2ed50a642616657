"""The fast I3D layers compute DeepMind's functions: outputs and gradients equal the plain layers', every backend.

Max pooling's gradient at ties follows one rule here: each output's gradient goes to the first maximum of its window
in (t, h, w) order, as JAX's max pool (XLA's select-and-scatter) does. TensorFlow's CPU kernel for a 3-D max pool's
gradient instead gives every tied maximum the whole gradient, so the reference is a loop over windows in numpy.

Run as a script (`KERAS_BACKEND=jax python tests/test_i3d_fast.py IN.npz OUT.npz`) it computes the pools', the
stem's and a training step's gradients under that backend: a backend is chosen once per process.
"""

import importlib.util
import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO
from kinetics_tfds.models import i3d
from kinetics_tfds.models import rewrites
from kinetics_tfds.models.rewrites import OnePassBatchNormalization
from kinetics_tfds.models.rewrites import SeparableMaxPooling3D
from kinetics_tfds.models.rewrites import SpaceToDepthConv3D
from kinetics_tfds.models.rewrites import set_rewrites

_FAST_XLA = "--xla_backend_optimization_level=0"  # Each op compiles in milliseconds, not seconds.
_CLASSES = 5
_CLIPS = (2, 8, 32, 32, 3)  # About the smallest clip the whole network takes.
# (pool size, strides) of I3D's max pools: stage pools and the Mixed blocks' branch 3.
_POOLS = (((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (1, 1, 1)))
_POOL_INPUT = (2, 7, 9, 10, 3)
_BN_INPUT = (2, 4, 6, 5, 8)
_KINDS = ("random", "quantised", "constant")


def _inputs(kind, shape, seed=0):
  values = np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)
  if kind == "quantised":  # Few levels: ties in most windows.
    return np.round(values * 2) / 2
  if kind == "constant":
    return np.zeros(shape, np.float32)
  return values


def _reference_max_pool(x, pool_size, strides):
  """Forward and d(sum(y * w))/dx of a TF-SAME max pool, the gradient at each window's first maximum."""
  pads = []
  for n, k, s in zip(x.shape[1:4], pool_size, strides):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
  outputs = [-(-n // s) for n, s in zip(x.shape[1:4], strides)]
  y = np.empty((x.shape[0], *outputs, x.shape[4]), x.dtype)
  routes = {}
  for b, c, *o in itertools.product(range(x.shape[0]), range(x.shape[4]), *map(range, outputs)):
    start = [i * s for i, s in zip(o, strides)]
    box = padded[
      b, start[0] : start[0] + pool_size[0], start[1] : start[1] + pool_size[1], start[2] : start[2] + pool_size[2], c
    ]
    first = np.unravel_index(np.argmax(box), box.shape)  # np.argmax: the first in (t, h, w) order.
    y[(b, *o, c)] = box[first]
    routes[(b, *o, c)] = (b, *(s + f - p for s, f, (p, _) in zip(start, first, pads)), c)
  return y, lambda w: _routed(x.shape, routes, w)


def _routed(shape, routes, w):
  grad = np.zeros(shape, np.float32)
  for out, into in routes.items():
    grad[into] += w[out]
  return grad


def _tf_gradient(layer, x, w):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  x = tf.convert_to_tensor(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    loss = tf.reduce_sum(y * w)
  return y, tape.gradient(loss, x)


@pytest.fixture(autouse=True)
def _tensorflow_backend():
  if keras.backend.backend() != "tensorflow":
    pytest.skip("the in-process half runs on the TensorFlow backend; other backends run in subprocesses")


@pytest.mark.parametrize("shape", [(1, 8, 32, 32, 3), (2, 9, 33, 31, 3), (1, 1, 5, 6, 3), (1, 2, 2, 2, 3)])
def test_space_to_depth_stem_is_tensorflows_same_conv(shape):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  layer = SpaceToDepthConv3D(64, 7, 2, padding="same", use_bias=False)
  layer.build(shape)
  assert layer.kernel.shape == (7, 7, 7, 3, 64) and layer.kernel.path.endswith("/kernel")
  x = _inputs("random", shape)
  expected = tf.nn.conv3d(x, layer.kernel, strides=(1, 2, 2, 2, 1), padding="SAME").numpy()
  np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
  # Lengths known only at run time (TensorFlow graphs traced with unknown shapes): the same pads, as tensors.
  traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, None, 3))])
  np.testing.assert_allclose(traced(x).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("pool_size, strides", _POOLS)
def test_separable_max_pool_and_its_first_maximum_gradient(pool_size, strides, kind):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  x = _inputs(kind, _POOL_INPUT)
  layer = SeparableMaxPooling3D(pool_size, strides, padding="same")
  expected, gradient = _reference_max_pool(x, pool_size, strides)
  w = _pool_upstream(layer, x.shape)
  traced = tf.function(
    lambda v: _tf_gradient(layer, v, w), input_signature=[tf.TensorSpec((None, None, None, None, 3))]
  )
  for y, dx in (_tf_gradient(layer, x, w), traced(x)):  # Eagerly, and with lengths known only at run time.
    np.testing.assert_array_equal(np.asarray(y), expected)
    np.testing.assert_allclose(np.asarray(dx), gradient(w), rtol=1e-6)


def test_plain_layers_are_reachable_and_share_variables():
  fast, plain = i3d.InceptionI3D(fast=True), i3d.InceptionI3D(fast=False)
  assert rewrites.rewrites_on(fast) == ["pools", "stem"] and rewrites.rewrites_on(plain) == []
  assert isinstance(fast.get_layer("Conv3d_1a_7x7__conv_3d"), SpaceToDepthConv3D)
  assert fast.get_layer("Conv3d_1a_7x7__conv_3d").space_to_depth
  assert not plain.get_layer("Conv3d_1a_7x7__conv_3d").space_to_depth
  assert not plain.get_layer("Mixed_4b__Branch_3__MaxPool3d_0a_3x3").separable
  assert not fast.get_layer("Mixed_4b__Branch_3__Conv3d_0b_1x1__batch_norm").one_pass  # Opt-in.
  set_rewrites(plain, batch_norm=True)
  assert plain.get_layer("Conv3d_1a_7x7__batch_norm").one_pass and not plain.get_layer("MaxPool3d_2a_3x3").separable
  with pytest.raises(ValueError, match="unknown rewrites"):
    set_rewrites(plain, stems=True)
  assert [v.path for v in fast.weights] == [v.path for v in plain.weights]
  assert all("." not in v.path for v in fast.weights)  # The torch backend refuses parameter names with dots.


def test_default_layers_follow_keras_auto_jit_compile():
  """Fast where `compile()` picks XLA, which fuses the rewrites' small ops; plain where it does not."""
  model = i3d.InceptionI3D(num_classes=2, final_endpoint="Logits", input_shape=(8, 32, 32, 3))
  model.compile(loss="mse")
  assert model.jit_compile == rewrites.compiles_by_default()
  assert rewrites.rewrites_on(model) == (["pools", "stem"] if model.jit_compile else [])
  rewrites.set_fast(model, True)
  assert rewrites.rewrites_on(model) == ["pools", "stem"]


def input_gradient(function, x, w):
  """(y, d sum(y * w) / dx) of `function` at `x`, under this process's backend."""
  backend = keras.backend.backend()
  if backend == "tensorflow":
    return tuple(np.asarray(v) for v in _tf_gradient(function, x, w))
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top

    y, vjp = jax.vjp(function, x)
    return np.asarray(y), np.asarray(vjp(w.astype(y.dtype))[0])
  import torch  # pylint: disable=g-import-not-at-top

  x = torch.tensor(x, requires_grad=True)
  y = function(x)
  (y * torch.tensor(w)).sum().backward()
  return y.detach().numpy(), x.grad.numpy()


def training_gradients(model, clips, target):
  """One training step's gradients with respect to `model.trainable_variables`: of the cross-entropy of the logits
  if `target` holds labels, else of sum(output * target)."""
  cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def loss(output, target=target):
    return cross_entropy(target, output) if target.ndim == 1 else keras.ops.sum(output * target)

  backend = keras.backend.backend()
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    with tf.GradientTape() as tape:
      value = loss(model(clips, training=True))
    return [g.numpy() for g in tape.gradient(value, model.trainable_variables)]
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top

    def value(trainable, frozen, clips, target):
      output, _ = model.stateless_call(trainable, frozen, clips, training=True)
      return loss(output, target)

    # One compiled program, not ~400 ops compiled one by one (70 s here). Clips and weights are its arguments, so
    # that a model like one before, given other clips, is the same program: JAX's compilation cache has it.
    trainable, frozen = (
      [v.value for v in variables] for variables in (model.trainable_variables, model.non_trainable_variables)
    )
    return [np.asarray(g) for g in jax.jit(jax.grad(value))(trainable, frozen, clips, target)]
  loss(model(clips, training=True)).backward()
  return [v.value.grad.numpy() for v in model.trainable_variables]


def _shared_inputs():
  keras.utils.set_random_seed(0)
  inputs = {f"weights_{i}": w for i, w in enumerate(i3d.InceptionI3D(_CLASSES, include_rescaling=False).get_weights())}
  inputs["labels"] = np.array([1, 3])
  for kind in _KINDS:
    inputs[f"clips_{kind}"] = _inputs(kind, _CLIPS, seed=2)
    inputs[f"pool_{kind}"] = _inputs(kind, _POOL_INPUT, seed=3)
  inputs["stem"] = _inputs("random", (2, 9, 17, 16, 3), seed=4)
  inputs["stem_kernel"] = np.random.RandomState(5).normal(0, 0.1, (7, 7, 7, 3, 8)).astype(np.float32)
  # Means far from zero, against the spread: Var = E[x^2] - E[x]^2 about zero would lose digits here.
  normal = np.random.RandomState(7).normal(size=_BN_INPUT)
  inputs["bn"] = (normal * np.linspace(0.5, 4, 8) + np.linspace(-300, 300, 8)).astype(np.float32)
  inputs["bn_gamma"] = np.linspace(0.5, 2, 8).astype(np.float32)
  inputs["bn_beta"] = np.linspace(-1, 1, 8).astype(np.float32)
  return inputs


def batch_norm_results(inputs, one_pass=True, dtype=None):
  """A training call of batch norm (scale and centre) on `inputs["bn"]`: the output, the gradients of
  sum(y * w) with respect to the input, gamma and beta, and the updated moving mean and variance."""
  x, gamma, beta = inputs["bn"], inputs["bn_gamma"], inputs["bn_beta"]
  layer = OnePassBatchNormalization(momentum=0.9, one_pass=one_pass, dtype=dtype)
  layer.build(x.shape)
  moving = [v.value for v in layer.non_trainable_variables]
  w = np.random.RandomState(8).normal(size=x.shape).astype(x.dtype)

  def call(x, gamma, beta):
    y, _ = layer.stateless_call([gamma, beta], moving, x, training=True)
    return y

  out = {}
  out["bn_y"], out["bn_dx"] = input_gradient(lambda v: call(v, gamma, beta), x, w)
  _, out["bn_dgamma"] = input_gradient(lambda g: call(x, g, beta), gamma, w)
  _, out["bn_dbeta"] = input_gradient(lambda b: call(x, gamma, b), beta, w)
  _, updated = layer.stateless_call([gamma, beta], moving, x, training=True)
  out["bn_moving_mean"], out["bn_moving_variance"] = (keras.ops.convert_to_numpy(v) for v in updated)
  return out


def backend_results(inputs):
  """Under this process's backend: batch norm's training outputs and gradients, each pool's output and gradient and
  the stem's gradients with respect to its input and kernel (fast and plain); on JAX also a training step's
  gradients, fast and plain (the plain max pool's tie rule is XLA's, which the separable pools follow)."""
  out = batch_norm_results(inputs)
  for p, (pool_size, strides) in enumerate(_POOLS):
    layer = SeparableMaxPooling3D(pool_size, strides, padding="same")
    for kind in _KINDS:
      x = inputs[f"pool_{kind}"]
      w = _pool_upstream(layer, x.shape)
      out[f"pool{p}_{kind}_y"], out[f"pool{p}_{kind}_dx"] = input_gradient(layer, x, w)
  kernel, clip = inputs["stem_kernel"], inputs["stem"]
  for fast in (True, False):
    layer = SpaceToDepthConv3D(8, 7, 2, padding="same", use_bias=False, space_to_depth=fast)
    layer.build(clip.shape)
    w = np.random.RandomState(6).normal(size=layer.compute_output_shape(clip.shape)).astype(np.float32)
    _, out[f"stem_{fast}_dx"] = input_gradient(lambda v, layer=layer: layer.stateless_call([kernel], [], v)[0], clip, w)
    _, out[f"stem_{fast}_dkernel"] = input_gradient(
      lambda k, layer=layer: layer.stateless_call([k], [], clip)[0], kernel, w
    )
  if keras.backend.backend() != "jax":  # Only XLA's plain max pool has the same rule at ties.
    return out
  weights = [inputs[f"weights_{i}"] for i in range(sum(k.startswith("weights_") for k in inputs))]
  for kind in _KINDS:
    clips = inputs[f"clips_{kind}"]
    for pools in (True, False):
      model = i3d.InceptionI3D(_CLASSES, dropout_rate=0.0, include_rescaling=False)
      set_rewrites(model, pools=pools)
      model.set_weights(weights)
      grads = training_gradients(model, clips, inputs["labels"])
      out.update({f"model_pools_{pools}_{kind}_{i}": g for i, g in enumerate(grads)})
    for fast in (True, False):
      model = i3d.InceptionI3D(include_rescaling=False, final_endpoint="Mixed_3c", input_shape=clips.shape[1:])
      set_rewrites(model, **dict.fromkeys(rewrites.REWRITES, fast))
      model.set_weights(weights[: len(model.weights)])
      w = np.random.RandomState(9).normal(size=(len(clips), *model.output.shape[1:])).astype(np.float32)
      grads = training_gradients(model, clips, w)
      out.update({f"mixed_3c_fast_{fast}_{kind}_{i}": g for i, g in enumerate(grads)})
  return out


def _pool_upstream(layer, shape):
  return np.random.RandomState(1).uniform(0.5, 1.5, layer.compute_output_shape(shape)).astype(np.float32)


def _assert_close(actual, expected, message, rtol=1e-5):
  # float32 sums in another order: relative to the array's scale.
  error = np.abs(actual - expected).max()
  assert error <= rtol * np.abs(expected).max() + 1e-7, f"{message}: max abs error {error}"


def test_every_backend_computes_the_rewritten_layers_and_their_gradients(tmp_path):
  inputs = _shared_inputs()
  # Keras' own batch norm in float64 (two-pass statistics, autodiff gradients) is the reference.
  float64 = {k: inputs[k].astype(np.float64) for k in ("bn", "bn_gamma", "bn_beta")}
  batch_norm = batch_norm_results(float64, one_pass=False, dtype="float64")
  np.savez(tmp_path / "in.npz", **inputs)
  results = {"tensorflow": backend_results(inputs)}
  for backend in ("jax", "torch"):
    if importlib.util.find_spec(backend) is None:
      continue
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(REPO), XLA_FLAGS=_FAST_XLA)
    subprocess.run(
      [sys.executable, __file__, tmp_path / "in.npz", tmp_path / f"{backend}.npz"], env=environment, check=True
    )
    results[backend] = dict(np.load(tmp_path / f"{backend}.npz"))
  assert "jax" in results, "jax is a declared dependency"
  for backend, out in results.items():
    for p, (pool_size, strides) in enumerate(_POOLS):
      for kind in _KINDS:
        x = inputs[f"pool_{kind}"]
        expected, gradient = _reference_max_pool(x, pool_size, strides)
        np.testing.assert_array_equal(out[f"pool{p}_{kind}_y"], expected)
        _assert_close(
          out[f"pool{p}_{kind}_dx"],
          gradient(_pool_upstream(SeparableMaxPooling3D(pool_size, strides, padding="same"), x.shape)),
          f"{backend} pool {pool_size}/{strides} {kind}",
        )
    for name in ("dx", "dkernel"):
      _assert_close(out[f"stem_True_{name}"], out[f"stem_False_{name}"], f"{backend} stem {name}")
    for name, expected in batch_norm.items():
      _assert_close(out[name], expected, f"{backend} {name}")
  # A training step, ties included. The whole model with separable and with XLA's max pools (JAX's, whose rule at
  # ties the separable pools follow): their forward passes are bit-equal, so the gradients differ only by the order of
  # sums, which batch norm over a few values (2 clips of 8x32x32) amplifies to ~1e-5; a gradient at another tied
  # element would be off by 1e-2 or more. And every rewrite against none, through Mixed_3c (the stem, 4 max pools,
  # 15 batch norms): there the forward passes differ in rounding, which deeper layers of a random network with
  # batch statistics over 2x2x2 values amplify past any float32 tolerance, rewritten or not.
  jax_out = results["jax"]
  for key in (k for k in jax_out if k.startswith("model_pools_True")):
    _assert_close(jax_out[key], jax_out[key.replace("True", "False")], f"jax {key}", rtol=1e-4)
  fast_keys = [k for k in jax_out if k.startswith("mixed_3c_fast_True")]
  assert len(fast_keys) == len(_KINDS) * 15 * 2  # A conv kernel and a beta in each of 15 units.
  for key in fast_keys:
    _assert_close(jax_out[key], jax_out[key.replace("True", "False")], f"jax {key}")


if __name__ == "__main__":
  np.savez(sys.argv[2], **backend_results(dict(np.load(sys.argv[1]))))
