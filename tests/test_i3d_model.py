"""The I3D architecture: DeepMind's shapes, parameter count and TensorFlow SAME padding, without weights; and
whole clips of any length padded into one batch, with the published weights (their logits are realistic)."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from conftest import assert_padded_logits_are_each_clips
from conftest import each_and_padded
from conftest import padded_batch
from kinetics_tfds.models import i3d
from kinetics_tfds.models import rewrites
from kinetics_tfds.models.i3d import LogitsAvgPool
from kinetics_tfds.training import loop

# Endpoint shapes for a 64x224x224 clip (DeepMind's training input).
_SHAPES_64x224 = {
  "Conv3d_1a_7x7": (32, 112, 112, 64),
  "MaxPool3d_2a_3x3": (32, 56, 56, 64),
  "Conv3d_2b_1x1": (32, 56, 56, 64),
  "Conv3d_2c_3x3": (32, 56, 56, 192),
  "MaxPool3d_3a_3x3": (32, 28, 28, 192),
  "Mixed_3b": (32, 28, 28, 256),
  "Mixed_3c": (32, 28, 28, 480),
  "MaxPool3d_4a_3x3": (16, 14, 14, 480),
  "Mixed_4b": (16, 14, 14, 512),
  "Mixed_4c": (16, 14, 14, 512),
  "Mixed_4d": (16, 14, 14, 512),
  "Mixed_4e": (16, 14, 14, 528),
  "Mixed_4f": (16, 14, 14, 832),
  "MaxPool3d_5a_2x2": (8, 7, 7, 832),
  "Mixed_5b": (8, 7, 7, 832),
  "Mixed_5c": (8, 7, 7, 1024),
  "Logits": (400,),
  "Predictions": (400,),
}


def _random_pixels(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_trainable_parameters_match_deepmind():
  model = i3d.InceptionI3D()
  assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 12_689_984


def test_endpoint_shapes():
  model = i3d.InceptionI3D(final_endpoint="Predictions", input_shape=(64, 224, 224, 3))
  assert list(_SHAPES_64x224) == list(i3d.ENDPOINTS)
  for endpoint, shape in _SHAPES_64x224.items():
    assert model.get_layer(endpoint).output.shape == (None, *shape), endpoint


def test_final_endpoint_stops_there():
  model = i3d.InceptionI3D(final_endpoint="Mixed_4f", input_shape=(16, 224, 224, 3))
  assert model.output.shape == (None, 4, 14, 14, 832)
  assert "Mixed_5b" not in [layer.name for layer in model.layers]
  with pytest.raises(ValueError, match="final_endpoint"):
    i3d.InceptionI3D(final_endpoint="Mixed_6a")


def test_batchnorm_momentum_is_a_constructor_argument():
  """Every batch norm takes the model's momentum (DeepMind's by default), where Keras applications take theirs."""

  def momenta(model):
    return {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}

  small = {"final_endpoint": "Conv3d_2c_3x3", "input_shape": (8, 32, 32, 3)}
  assert momenta(i3d.InceptionI3D(**small)) == {i3d.BATCHNORM_MOMENTUM} == {0.999}
  model = i3d.InceptionI3D(**small, batchnorm_momentum=0.9)
  assert momenta(model) == {0.9} and model.get_layer("Conv3d_2b_1x1__batch_norm").get_config()["momentum"] == 0.9


def test_same_padding_is_tensorflows():
  # Odd and even sizes: TF's SAME puts the extra pad after, which only shows with stride 2.
  clips = np.random.RandomState(0).uniform(-1, 1, (1, 9, 33, 32, 3)).astype(np.float32)
  model = i3d.InceptionI3D(final_endpoint="MaxPool3d_2a_3x3", include_rescaling=False)
  kernel = model.get_layer("Conv3d_1a_7x7__conv_3d").kernel
  kernel.assign(np.random.RandomState(1).normal(size=kernel.shape).astype(np.float32))
  expected = tf.nn.conv3d(clips, np.asarray(kernel), strides=(1, 2, 2, 2, 1), padding="SAME")
  expected = tf.nn.relu(expected / np.sqrt(1 + 1e-3))  # Fresh batch norm: mean 0, variance 1, no offset.
  expected = tf.nn.max_pool3d(expected, ksize=(1, 1, 3, 3, 1), strides=(1, 1, 2, 2, 1), padding="SAME")
  np.testing.assert_allclose(np.asarray(model(clips)), expected.numpy(), atol=1e-4)


def test_small_clips_pixels_and_rescaling():
  # 8x40x40 leaves 1x2x2 at Mixed_5c: the logits pool shrinks to fit.
  pixels = _random_pixels((2, 8, 40, 40, 3))
  model = i3d.InceptionI3D()
  logits = np.asarray(model(pixels))
  assert logits.shape == (2, 400) and np.isfinite(logits).all()
  np.testing.assert_allclose(np.asarray(model(pixels.astype(np.float32))), logits, atol=1e-5)
  unscaled = i3d.InceptionI3D(include_rescaling=False)
  unscaled.set_weights(model.get_weights())
  np.testing.assert_allclose(np.asarray(unscaled(pixels / 127.5 - 1)), logits, atol=1e-5)


def test_logits_pool_averages_short_axes_whole():
  # Time (1 < 2) and height (3 < 7) are averaged whole; width (9 >= 7) gets DeepMind's VALID window.
  features = np.random.RandomState(0).normal(size=(2, 1, 3, 9, 4)).astype(np.float32)
  expected = np.stack([features[:, :, :, j : j + 7].mean(axis=(1, 2, 3)) for j in range(3)], axis=1)[:, None, None]
  layer = LogitsAvgPool()
  np.testing.assert_allclose(np.asarray(layer(features)), expected, atol=1e-6)
  if keras.backend.backend() == "tensorflow":  # Graphs traced with unknown shapes know lengths only at run time.
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, None, 4))])
    np.testing.assert_allclose(traced(features).numpy(), expected, atol=1e-6)


def test_predictions_are_probabilities():
  probabilities = np.asarray(
    i3d.InceptionI3D(num_classes=5, final_endpoint="Predictions")(_random_pixels((2, 8, 32, 32, 3)))
  )
  assert probabilities.shape == (2, 5)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_mixed_bfloat16_gives_float32_logits():
  pixels = _random_pixels((1, 8, 40, 40, 3))
  reference = i3d.InceptionI3D()
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = i3d.InceptionI3D()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  model.set_weights(reference.get_weights())
  logits = model(pixels)
  assert keras.backend.standardize_dtype(logits.dtype) == "float32"
  assert model.get_layer("Mixed_3b").compute_dtype == "bfloat16"
  expected = np.asarray(reference(pixels))
  np.testing.assert_allclose(np.asarray(logits), expected, atol=0.05 * np.abs(expected).max())


def exported_errors(folder) -> list[float]:
  """Exports the fast model's own layers (stem, separable max pool, logits pool) with `model.export`, serves clips
  of two shapes through the SavedModel (one with no axis shorter than the logits pool's window, one with two) and
  returns each one's largest difference from the Keras model."""
  inputs = keras.Input((None, None, None, 3))
  x = rewrites.SpaceToDepthConv3D(4, 7, 2, padding="same", use_bias=False)(inputs)
  x = rewrites.SeparableMaxPooling3D(3, 2, padding="same")(x)
  model = keras.Model(inputs, LogitsAvgPool()(x))
  model.export(os.fspath(folder), format="tf_saved_model", verbose=False)
  served = tf.saved_model.load(os.fspath(folder))
  errors = []
  for shape in ((2, 8, 36, 36, 3), (1, 4, 20, 60, 3)):  # Pooled to (2, 9, 9) and (1, 5, 15).
    clips = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    errors.append(float(np.abs(served.serve(tf.constant(clips)).numpy() - np.asarray(model(clips))).max()))
  return errors


def test_export_serves_clips_of_any_shape(tmp_path):
  # JAX exports with every None dimension symbolic, so each layer must pad and scale by symbolic amounts.
  errors = {"tensorflow": exported_errors(tmp_path / "tensorflow")}
  environment = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
  jax = subprocess.run([sys.executable, __file__, tmp_path / "jax"], env=environment, capture_output=True, text=True)
  assert jax.returncode == 0, jax.stderr[-3000:]
  errors["jax"] = [float(e) for e in jax.stdout.split()]
  for backend, backend_errors in errors.items():
    assert len(backend_errors) == 2 and max(backend_errors) < 1e-5, (backend, backend_errors)


if __name__ == "__main__":
  print(*exported_errors(pathlib.Path(sys.argv[1])))


@pytest.mark.parametrize("fast", [False, True])
def test_padded_clips_of_different_lengths_give_each_clips_logits(model, kinetics400, fast):
  padded_model = i3d.InceptionI3D(weights=kinetics400, include_rescaling=False, fast=fast, padded_clips=True)
  each, padded = each_and_padded(model, padded_model)
  assert_padded_logits_are_each_clips(each, padded)
  # A batch filled up to a compiled batch size gives its own rows' logits.
  rng = np.random.RandomState(3)
  inputs = padded_batch([rng.uniform(-1, 1, (n, 40, 48, 3)).astype(np.float32) for n in (5, 9)], 12, rng)
  batch = {"video": inputs["clips"], "num_frames": inputs["num_frames"]}
  filled = loop.predict_batch(padded_model, batch, fill_to=5)
  assert filled.shape == (2, each.shape[1])
  np.testing.assert_allclose(filled, loop.predict_batch(padded_model, batch), atol=1e-5 * np.abs(filled).max())
