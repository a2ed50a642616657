"""Readers without TensorFlow (Grain, torch) on ArrayRecord builds of the real clips in ../shared: the same views and
pixels as tf.data, every clip once per epoch across DataLoader workers, Grain workers, and kinetics-train on both."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import conftest
import kinetics_tfds
from kinetics_tfds import array_records
from kinetics_tfds import loaders
from kinetics_tfds import pipeline

_CONFIG = kinetics_tfds.KineticsConfig(name="loaders", fps=10.0, short_side=64, num_classes=len(conftest.SHARED_LABELS))
_SIZE = 48
# Imports of tensorflow fail in the process (and in the workers it spawns) as if it were not installed: a spec with no
# origin (so torch's and others' find_spec probes skip it) whose module cannot be made.
_WITHOUT_TENSORFLOW = """
import importlib.machinery, sys

class NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return importlib.machinery.ModuleSpec(name, self)
  def create_module(self, spec):
    raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
  def exec_module(self, module):
    pass

sys.meta_path.insert(0, NoTensorFlow())
"""


@pytest.fixture(scope="module")
def builds(shared_data, tmp_path_factory):
  """The real clips built twice by the real builder: TFRecord (tf.data) and ArrayRecord (the other readers)."""
  root = tmp_path_factory.mktemp("loaders")
  conftest.shared_manual_dir(root / "manual", shared_data / "kinetics" / "videos")
  built = {}
  for file_format in ("tfrecord", "array_record"):
    data_dir = str(root / file_format)
    builder = tfds.builder("kinetics400", config=_CONFIG, data_dir=data_dir, num_workers=1, file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
    built[file_format] = data_dir
  built["tfrecord"] = tfds.builder("kinetics400/loaders", data_dir=built["tfrecord"])
  return built


def _source(builds, split):
  return array_records.open_split("kinetics400/loaders", split, builds["array_record"])


def _same_pixels(ours, theirs, resized):
  """Equal but at the crop's outer 2 pixels (libjpeg-turbo's cropped decode upsamples chroma at the edge); resized
  crops within OpenCV's and TensorFlow's bilinear rounding."""
  assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8
  diff = np.abs(ours.astype(np.int32) - theirs)
  if resized:
    assert diff.mean() < 0.5 and np.quantile(diff, 0.99) <= 2, (diff.mean(), diff.max())
  else:
    np.testing.assert_array_equal(ours[..., 2:-2, 2:-2, :], theirs[..., 2:-2, 2:-2, :])
    assert (diff > 0).mean() < 0.05


@pytest.mark.parametrize("scale_jitter", [None, (0.5, 1.0)])
def test_training_views_equal_tfdata(builds, scale_jitter):
  settings = dict(num_frames=8, frame_stride=2, image_size=_SIZE, scale_jitter=scale_jitter)
  theirs = tfds.as_numpy(pipeline.train_views(builds["tfrecord"], seed=3, **settings).take(10))
  source = _source(builds, "train")
  ours = loaders.TrainClips(source, loaders.Order(len(source), seed=3, shuffle=False), **settings)
  flips = set()
  for position, view in enumerate(theirs):
    window, flip = tf.constant(view["window"][None]), tf.constant([view["flip"]])
    clip = pipeline.decode_clips(tf.constant(view["video"][None]), window, _SIZE, flip).numpy()[0]
    pixels, label = ours[position]
    assert label == view["label"]
    _same_pixels(pixels, clip, resized=view["window"][2] != _SIZE)
    flips.add(bool(view["flip"]))
  assert flips == {False, True}


@pytest.mark.parametrize("num_clips,num_crops,pad", [(2, 3, False), (None, 1, True)])
def test_eval_views_equal_tfdata(builds, num_clips, num_crops, pad):
  settings = dict(num_frames=8, image_size=_SIZE, num_clips=num_clips, num_crops=num_crops)
  pad_period = 4 if pad else None
  theirs = pipeline.eval_dataset(builds["tfrecord"], batch_size=1, pad_period=pad_period, **settings)
  ours = loaders.EvalClips(_source(builds, "validation"), pad_period=pad_period, **settings)
  ours_views = list(loaders.batches_by_shape((ours[i] for i in range(len(ours))), 1))
  theirs_views = list(theirs.as_numpy_iterator())
  assert len(ours_views) == len(theirs_views) == 2 * (1 if num_clips is None else num_clips * num_crops)
  for mine, view in zip(ours_views, theirs_views):
    assert set(mine) == set(view)
    for name in set(view) - {"video"}:
      np.testing.assert_array_equal(mine[name], view[name])
    _same_pixels(mine["video"], view["video"], resized=False)


def test_dataloader_workers_read_every_clip_once(builds):
  """Fork-started workers (torch's default), each opening its own readers; the parent reads only afterwards (see
  `array_records`: a parent that has read should start its workers with spawn)."""
  torch = pytest.importorskip("torch")
  source = _source(builds, "train")
  videos = loaders.EvalClips(source, num_frames=4, image_size=_SIZE, num_clips=1)
  loader = torch.utils.data.DataLoader(videos, batch_size=None, num_workers=2, collate_fn=loaders.as_is)
  keys = [bytes(video["key"][0]).decode() for video in loader]
  # Training: two processes' shares of an epoch are disjoint and within the split; two workers give what one does.
  shares = [loaders.Order(len(source), seed=1, shard=i, num_shards=2) for i in range(2)]
  clips = loaders.TrainClips(source, shares[1], num_frames=4, image_size=_SIZE)
  positions = loaders.TorchPositions(clips, 6, start=2)
  batches = [
    [b.numpy() for b in batch] for batch in torch.utils.data.DataLoader(positions, batch_size=2, num_workers=2)
  ]
  assert sorted(keys) == sorted(bytes(source[i]["key"][0]).decode() for i in range(len(source)))
  assert len(keys) == len(source) == 5
  epoch = [order(p) for order in shares for p in range(order.per_epoch)]
  assert len(set(epoch)) == len(epoch) == 4 and set(epoch) <= set(range(5))
  assert len(batches) == 3
  for step, (clip, label) in enumerate(batches):
    expected = [clips[2 + 2 * step + i] for i in range(2)]
    np.testing.assert_array_equal(clip, np.stack([c for c, _ in expected]))
    np.testing.assert_array_equal(label, [lab for _, lab in expected])


def test_grain_workers_without_tensorflow_or_parsed_flags(builds, tmp_path):
  """A plain script, as a JAX user writes one: no absl flags parsed, TensorFlow not importable."""
  script = tmp_path / "read.py"
  script.write_text(
    _WITHOUT_TENSORFLOW
    + textwrap.dedent(f"""
    import numpy as np
    from kinetics_tfds import array_records, loaders

    if __name__ == "__main__":
      source = array_records.open_split("kinetics400/loaders", "train", {builds["array_record"]!r})
      clips = loaders.TrainClips(source, loaders.Order(len(source), seed=5), num_frames=4, image_size=32)
      batches = [loaders.grain_train(clips, batch_size=2, num_workers=n, start=4) for n in (2, 0)]
      for workers, alone in zip(*[[next(it) for _ in range(3)] for it in map(iter, batches)]):
        np.testing.assert_array_equal(workers[0], alone[0])
        np.testing.assert_array_equal(workers[1], alone[1])
      assert "tensorflow" not in sys.modules
      print("same", workers[0].shape)
    """)
  )
  result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "same (2, 4, 32, 32, 3)" in result.stdout


@pytest.mark.parametrize("backend,loader", [("jax", "grain"), ("torch", "torch")])
def test_kinetics_train_without_tensorflow(builds, tmp_path, backend, loader):
  if backend == "torch":
    pytest.importorskip("torch")
  code = _WITHOUT_TENSORFLOW + textwrap.dedent("""
    import runpy
    if __name__ == "__main__":
      sys.argv = ["kinetics-train", *sys.argv[1:]]
      runpy.run_module("kinetics_tfds.train", run_name="__main__")
    """)
  (tmp_path / "train.py").write_text(code)
  args = [
    f"--loader={loader}",
    "--dataset=kinetics400/loaders",
    f"--data_dir={builds['array_record']}",
    f"--model_dir={tmp_path / 'model'}",
    "--num_frames=8",
    "--image_size=32",
    "--batch_size=2",
    "--train_steps=2",
    "--checkpoint_steps=2",
    "--eval_views=1x1",
    "--eval_batch_size=2",
    "--loader_workers=1",
    f"--predictions_out={tmp_path / 'predictions.jsonl'}",
  ]
  env = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  result = subprocess.run(
    [sys.executable, tmp_path / "train.py", *args], capture_output=True, text=True, timeout=600, env=env
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["backend"] == backend and summary["steps"] == 2 and np.isfinite(summary["final_loss"])
  assert summary["videos"] == 2 and summary["views"] == 2
  predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
  built = [n for n, (name, split) in enumerate(conftest.SHARED_CLIPS.items()) if split == "validation"][:2]
  assert sorted(p["label"] for p in predictions) == sorted(conftest.SHARED_LABELS[n % 4] for n in built)
  assert "tensorflow is not installed" in result.stderr


def test_pipeline_under_tfds_mock_data():
  """Users test their input code with TFDS's mock_data: no files, random examples through the real features."""
  with tfds.testing.mock_data(num_examples=6):
    clips, labels = next(iter(pipeline.train_dataset("kinetics400", batch_size=2, num_frames=4, image_size=16, seed=0)))
    assert clips.shape == (2, 4, 16, 16, 3) and clips.dtype == tf.uint8 and labels.shape == (2,)
    views = next(iter(pipeline.eval_dataset("kinetics400", batch_size=3, num_frames=4, image_size=16, num_clips=2)))
    assert views["video"].shape == (3, 4, 16, 16, 3) and views["view"].numpy().tolist() == [0, 1, 0]
    assert len(list(pipeline.records("kinetics400", "validation"))) == 6


def test_array_record_builds_are_not_compressed(builds):
  """JPEG frames do not compress; undoing zstd cost a reader five times what reading did."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  for path in _source(builds, "train").files:
    reader = array_record_module.ArrayRecordReader(path)
    assert "uncompressed" in reader.writer_options_string() and "zstd" not in reader.writer_options_string()
    reader.close()
