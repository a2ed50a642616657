"""The input pipeline on a real build: which frames, which crop, flips, eval views, seeds, tf.distribute.

The clips are made so every output frame can be traced back: each clip is a fixed texture of its own
(it finds the clip, the crop and the flip) whose brightness rises with the frame index (it finds the
frame). An output frame is traced by comparing it with the frames TFDS decodes in full.
"""

import collections
import os
import shutil
import subprocess
import sys
import textwrap
from typing import NamedTuple

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kinetics_tfds import KineticsConfig
from kinetics_tfds import annotations
from kinetics_tfds import frame_index
from kinetics_tfds import motion_clips
from kinetics_tfds import pipeline
from kinetics_tfds import sampling

NUM_SOURCE = 40  # Frames per clip: 1.6 s at 25 fps.
HEIGHT, WIDTH = 64, 96  # Stored as is: the short side is the config's.
SIZE = 32  # Output crop: never resized, so frames compare exactly.
CLIPS_PER_CLASS = {"train": 2, "validation": 2}


def _write_indexed_clip(path: str, seed: int, frames: int = NUM_SOURCE) -> None:
  """Frame i: the clip's texture plus 4 * i in brightness, intra-coded (MJPG) so each frame keeps its level."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 60, (HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8)
  texture = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int32) + 20
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (WIDTH, HEIGHT))
  for i in range(frames):
    writer.write(np.clip(texture + 4 * i, 0, 255).astype(np.uint8))
  writer.release()


@pytest.fixture(scope="session")
def manual_dir(tmp_path_factory):
  """A manual folder of 16 indexed clips (4 classes x 2, train and validation)."""
  manual = tmp_path_factory.mktemp("input") / "manual"
  counter = 0
  for split, count in CLIPS_PER_CLASS.items():
    rows = []
    for label in sorted(motion_clips.MOTIONS):
      for _ in range(count):
        counter += 1
        clip = annotations.Clip(f"index{counter:06d}"[:11], counter, counter + 10, label, split)
        folder = manual / ("train" if split == "train" else "val")
        folder.mkdir(parents=True, exist_ok=True)
        _write_indexed_clip(str(folder / f"{clip.key}.avi"), seed=counter)
        rows.append(clip)
    motion_clips.write_annotations(str(manual / "kinetics400"), split, rows)
  return manual


def _build(manual_dir, data_dir, **download_config):
  config = KineticsConfig(name="indexed", fps=25, short_side=HEIGHT, num_classes=len(motion_clips.MOTIONS))
  result = tfds.builder("kinetics400", config=config, data_dir=str(data_dir), num_workers=1)
  result.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir), **download_config)
  )
  return result


@pytest.fixture(scope="session")
def builder(manual_dir):
  """kinetics400 built once by the real builder from the 16 indexed clips."""
  return _build(manual_dir, manual_dir.parent / "data")


class Video(NamedTuple):
  label: int
  frames: np.ndarray  # [n, H, W, 3], decoded in full by libjpeg-turbo's accurate integer DCT, as the readers do.
  textures: np.ndarray  # [H - SIZE + 1, W - SIZE + 1, SIZE, SIZE]: frame 0's grey windows, mean removed.


def _decoded_in_full(builder, split: str):
  """The split's examples, every frame decoded in full by OpenCV: libjpeg-turbo's accurate integer DCT, as the
  pipeline decodes (TFDS's own decoding uses TensorFlow's default, the fast DCT)."""
  read_config = tfds.ReadConfig(try_autocache=False)
  for ex in tfds.as_numpy(builder.as_dataset(split, read_config=read_config, decoders={"video": _JPEG_STRINGS})):
    ex["video"] = np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR_RGB) for j in ex["video"]])
    yield ex


_JPEG_STRINGS = tfds.decode.SkipDecoding()


def _texture(grey: np.ndarray) -> np.ndarray:
  return grey - grey.mean(axis=(-2, -1), keepdims=True)


@pytest.fixture(scope="session")
def full_frames(builder):
  """{split: {key: Video}}: every frame, decoded in full."""
  out = {}
  for split in CLIPS_PER_CLASS:
    out[split] = {}
    for ex in _decoded_in_full(builder, split):
      frames = ex["video"]
      assert frames.shape == (NUM_SOURCE, HEIGHT, WIDTH, 3)
      assert np.all(np.diff(frames.mean(axis=(1, 2, 3))) > 2), "frames must be told apart by brightness"
      grey = np.lib.stride_tricks.sliding_window_view(frames[0].astype(np.float32).mean(-1), (SIZE, SIZE))
      out[split][ex["key"].decode()] = Video(int(ex["label"]), frames, _texture(grey))
  return out


def _locate(clip, videos, key=None):
  """(key, frame indices, [y, x], flipped) of a [T, SIZE, SIZE, 3] output clip, among `videos` or just `key`.

  The texture finds clip, corner and flip on frame 0 (brightness removed); each frame's index is
  then the one full frame that matches exactly at that corner. The outer columns are left out:
  where a crop edge meets an MCU boundary, libjpeg-turbo's chroma upsampling differs slightly.
  """
  best = None
  for name in [key] if key else videos:
    for flipped in (False, True):
      target = _texture((clip[0][:, ::-1] if flipped else clip[0]).astype(np.float32).mean(-1))
      errors = ((videos[name].textures - target) ** 2).mean(axis=(-2, -1))
      y, x = np.unravel_index(np.argmin(errors), errors.shape)
      if best is None or errors[y, x] < best[0]:
        best = (errors[y, x], name, int(y), int(x), flipped)
  _, name, y, x, flipped = best
  crops = videos[name].frames[:, y : y + SIZE, x + 1 : x + SIZE - 1]
  indices = []
  for frame in clip:
    frame = (frame[:, ::-1] if flipped else frame)[:, 1:-1]
    matches = [i for i, crop in enumerate(crops) if np.array_equal(crop, frame)]
    assert len(matches) == 1, f"frame not found exactly once in {name}"
    indices.append(matches[0])
  return name, indices, [y, x], flipped


def _train_clips(builder, batches=4, **kwargs):
  """The first `batches` batches (one epoch of the 8 train clips at batch 2), concatenated."""
  kwargs = {"batch_size": 2, "image_size": SIZE, "repeat": False, "seed": 1, "deterministic": True, **kwargs}
  out = list(pipeline.train_dataset(builder, **kwargs).take(batches).as_numpy_iterator())
  return np.concatenate([b[0] for b in out]), np.concatenate([b[1] for b in out])


def test_train_window_stride_crop_and_flip(builder, full_frames):
  videos = full_frames["train"]
  clips, labels = _train_clips(builder, num_frames=8, frame_stride=3)
  assert clips.shape == (len(videos), 8, SIZE, SIZE, 3) and clips.dtype == np.uint8
  assert labels.dtype == np.int32
  keys, flips = set(), set()
  for clip, label in zip(clips, labels):
    # One corner for every frame of the clip, or _locate would not find each frame exactly.
    key, indices, (y, x), flipped = _locate(clip, videos)
    start = indices[0]
    assert indices == list(range(start, start + 8 * 3, 3))
    assert 0 <= start <= NUM_SOURCE - (7 * 3 + 1)
    assert 0 <= y <= HEIGHT - SIZE and 0 <= x <= WIDTH - SIZE
    assert label == videos[key].label
    keys.add(key)
    flips.add(flipped)
  assert keys == set(videos), "one epoch holds every clip once"
  assert flips == {False, True}


def test_short_clips_loop(builder, full_frames):
  clips, _ = _train_clips(builder, num_frames=30, frame_stride=2)
  for clip in clips[:2]:
    _, indices, _, _ = _locate(clip, full_frames["train"])
    assert indices == [(2 * t) % NUM_SOURCE for t in range(30)]


def test_frame_index_reads_the_same_clips(manual_dir, tmp_path):
  """Through the frame indexes the build writes beside its shards, or reading whole records (a build without
  them), training gets the same clips in the same order: across shards, epochs, input pipelines and slices."""
  indexed = _build(manual_dir, tmp_path, num_shards=3)
  folder = os.path.join(indexed.data_dir, frame_index.FOLDER)
  assert len(os.listdir(folder)) == 6, "one index per shard of each split"
  runs = [
    dict(split="train", num_frames=4, frame_stride=7),  # Frames far apart: read one by one.
    dict(split="train", num_frames=8, input_context=tf.distribute.InputContext(2, 1)),
    dict(split="train[1:7]", num_frames=30),  # A window: read at once.
  ]

  def read_all():
    settings = dict(batch_size=2, image_size=SIZE, seed=5, deterministic=True)
    return [list(pipeline.train_dataset(indexed, **settings, **run).take(5).as_numpy_iterator()) for run in runs]

  through_index = read_all()
  written = {name: dict(np.load(os.path.join(folder, name))) for name in os.listdir(folder)}
  shutil.rmtree(folder)
  whole_records = read_all()
  for run, by_index, whole in zip(runs, through_index, whole_records):
    assert len(by_index) == len(whole) == 5, run
    for (clips, labels), (clips_whole, labels_whole) in zip(by_index, whole):
      np.testing.assert_array_equal(clips, clips_whole, err_msg=str(run))
      np.testing.assert_array_equal(labels, labels_whole, err_msg=str(run))
  assert len(frame_index.index_folder(indexed.data_dir)) == 6, "an older build indexed in place"
  for name, arrays in written.items():
    again = np.load(os.path.join(folder, name))
    assert all(np.array_equal(arrays[key], again[key]) for key in arrays), "as the build wrote it"


def test_scale_jitter_crops_inside_the_frame():
  size = (HEIGHT, WIDTH)
  sides = set()
  for i in range(200):
    settings = dict(num_frames=4, frame_stride=1, image_size=SIZE, scale_jitter=(0.5, 1.0))
    _, (y, x, h, w), _ = sampling.train_view(7, i, NUM_SOURCE, size, **settings)
    assert h == w and 0.5 * HEIGHT - 0.5 <= h <= HEIGHT
    assert 0 <= y <= HEIGHT - h and 0 <= x <= WIDTH - w
    sides.add(int(h))
  assert len(sides) > 10, "the side varies with the jitter"


def test_scale_jitter_and_float32(builder):
  clips, _ = _train_clips(builder, num_frames=4, scale_jitter=(0.6, 1.0), dtype="float32")
  assert clips.shape == (8, 4, SIZE, SIZE, 3) and clips.dtype == np.float32
  assert clips.min() >= -1 and clips.max() <= 1
  uint8, _ = _train_clips(builder, num_frames=4, scale_jitter=(0.6, 1.0))
  np.testing.assert_allclose(clips, uint8 / 127.5 - 1, atol=1e-6)


def test_seed_makes_runs_equal(builder):
  # Six batches: past the end of the first epoch.
  first = _train_clips(builder, batches=6, num_frames=4, repeat=True, seed=3)
  again = _train_clips(builder, batches=6, num_frames=4, repeat=True, seed=3)
  other = _train_clips(builder, batches=6, num_frames=4, repeat=True, seed=4)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[0], other[0])


def test_eval_windows_and_crops_cover_the_clip(builder, full_frames):
  videos = full_frames["validation"]
  ds = pipeline.eval_dataset(builder, batch_size=4, num_frames=16, image_size=SIZE, num_clips=3, num_crops=3)
  batches = list(ds.as_numpy_iterator())
  seen = {}
  for batch in batches:
    assert batch["video"].shape[1:] == (16, SIZE, SIZE, 3)
    for clip, label, key, view in zip(batch["video"], batch["label"], batch["key"], batch["view"]):
      key = key.decode()
      _, indices, corner, flipped = _locate(clip, videos, key)
      assert label == videos[key].label and not flipped
      seen.setdefault(key, {})[int(view)] = (indices, corner)
  assert set(seen) == set(videos)
  slack_x = WIDTH - SIZE
  centre_y = (HEIGHT - SIZE) // 2
  for views in seen.values():
    assert sorted(views) == list(range(9))
    for view, (indices, corner) in views.items():
      clip_index, crop_index = divmod(view, 3)
      start = [0, (NUM_SOURCE - 16) // 2, NUM_SOURCE - 16][clip_index]
      assert indices == list(range(start, start + 16))
      assert corner == [centre_y, [0, slack_x // 2, slack_x][crop_index]]


def test_eval_whole_clip(builder, full_frames):
  videos = full_frames["validation"]
  ds = pipeline.eval_dataset(builder, batch_size=1, image_size=SIZE)
  keys = []
  for batch in ds.as_numpy_iterator():
    assert batch["video"].shape == (1, NUM_SOURCE, SIZE, SIZE, 3) and batch["view"][0] == 0
    key, indices, corner, _ = _locate(batch["video"][0], videos, batch["key"][0].decode())
    assert indices == list(range(NUM_SOURCE)) and corner == [(HEIGHT - SIZE) // 2, (WIDTH - SIZE) // 2]
    keys.append(key)
  assert sorted(keys) == sorted(videos)
  with pytest.raises(ValueError, match="batch_size must be 1, or give pad_period"):
    pipeline.eval_dataset(builder, batch_size=2)


# Whole clips of these lengths pad to (clip offset + length <= padded length): 9, 13, 14 -> 16 (offsets 3, 3, 2),
# 23 -> 24 (offset 1), 30 -> 32 (offset 2), 40 -> 40.
_VARIED_LENGTHS = (9, 13, 14, 23, 30, 40)


@pytest.fixture(scope="module")
def varied_lengths(tmp_path_factory):
  """kinetics400 whose validation clips have `_VARIED_LENGTHS` frames; {key: frames decoded in full}."""
  root = tmp_path_factory.mktemp("varied")
  (root / "manual" / "val").mkdir(parents=True)
  label = sorted(motion_clips.MOTIONS)[0]
  rows = [annotations.Clip(f"varied{n:05d}", 0, 10, label, "validation") for n in _VARIED_LENGTHS]
  for row, n in zip(rows, _VARIED_LENGTHS):
    _write_indexed_clip(str(root / "manual" / "val" / f"{row.key}.avi"), seed=n, frames=n)
  motion_clips.write_annotations(str(root / "manual" / "kinetics400"), "validation", rows)
  config = KineticsConfig(name="varied", fps=25, short_side=HEIGHT, num_classes=1)
  result = tfds.builder("kinetics400", config=config, data_dir=str(root / "data"), num_workers=1)
  result.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  frames = {ex["key"].decode(): ex["video"] for ex in _decoded_in_full(result, "validation")}
  assert sorted(map(len, frames.values())) == list(_VARIED_LENGTHS)
  return result, frames


def _expected_padded_length(n):
  return min(t for t in (base << k for base in (4, 5, 6, 7) for k in range(2, 10)) if t >= n + (-n) % 4)


@pytest.mark.parametrize("frame_stride", [1, 2])
def test_eval_whole_clips_padded_and_batched_by_length(varied_lengths, frame_stride):
  builder, frames = varied_lengths
  ds = pipeline.eval_dataset(builder, batch_size=2, image_size=SIZE, frame_stride=frame_stride, pad_period=4)
  seen, batches = [], 0
  for batch in ds.as_numpy_iterator():
    batches += 1
    length = batch["video"].shape[1]
    for clip, key, n in zip(batch["video"], batch["key"], batch["num_frames"]):
      y, x = (HEIGHT - SIZE) // 2, (WIDTH - SIZE) // 2
      source = frames[key.decode()][::frame_stride, y : y + SIZE, x + 1 : x + SIZE - 1]
      assert n == len(source) and length == _expected_padded_length(n)
      # The clip from frame (-n) mod 4 on, its first and last frames repeated around it (the model ignores them).
      offset = -n % 4
      clip = clip[:, :, 1:-1]
      np.testing.assert_array_equal(clip[offset : offset + n], source)
      np.testing.assert_array_equal(clip[:offset], np.broadcast_to(source[0], (offset, *source.shape[1:])))
      np.testing.assert_array_equal(
        clip[offset + n :], np.broadcast_to(source[-1], (length - offset - n, *source.shape[1:]))
      )
      seen.append((key.decode(), length))
  assert sorted(k for k, _ in seen) == sorted(frames)
  by_length = collections.Counter(length for _, length in seen)
  expected = collections.Counter(_expected_padded_length(-(-n // frame_stride)) for n in _VARIED_LENGTHS)
  assert by_length == expected and max(expected.values()) >= 2
  assert batches == sum(-(-count // 2) for count in expected.values())  # Clips of one padded length share batches.


def test_eval_crop_fraction_windows():
  size = (HEIGHT, WIDTH)
  windows = sampling.spaced_crop_windows(size, sampling.crop_side(size, SIZE, 1.0), 3)
  assert windows.tolist() == [[0, 0, HEIGHT, HEIGHT], [0, 16, HEIGHT, HEIGHT], [0, 32, HEIGHT, HEIGHT]]
  portrait = sampling.spaced_crop_windows((WIDTH, HEIGHT), SIZE, 3)
  assert portrait[:, :2].tolist() == [[0, 16], [32, 16], [64, 16]]


def test_eval_crop_fraction_resizes_the_short_side(builder, full_frames):
  ds = pipeline.eval_dataset(builder, batch_size=8, num_frames=4, image_size=SIZE, num_clips=1, crop_fraction=1.0)
  batch = next(ds.as_numpy_iterator())
  start = (NUM_SOURCE - 4) // 2
  for clip, key in zip(batch["video"], batch["key"]):
    square = full_frames["validation"][key.decode()].frames[start : start + 4, :, 16 : 16 + HEIGHT]
    expected = tf.image.resize(square, [SIZE, SIZE]).numpy()
    assert np.abs(clip - expected).mean() < 1.5


def test_aggregate_averages_views_per_key():
  means = pipeline.aggregate([b"a", b"b", b"a"], [[1.0, 0.0], [0.0, 1.0], [3.0, 2.0]])
  assert set(means) == {"a", "b"}
  np.testing.assert_array_equal(means["a"], [2.0, 1.0])


_MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import tensorflow_datasets as tfds
    from kinetics_tfds import pipeline
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ds = pipeline.distributed_train_dataset(
        strategy, tfds.builder_from_directory(sys.argv[1]), batch_size=4, num_frames=4, image_size=32,
        repeat=False, seed=0)
    out = {}
    for step, (clips, labels) in enumerate(ds):
      for replica, part in enumerate(strategy.experimental_local_results(clips)):
        out[f"{step}_{replica}"] = part.numpy()
    np.savez(sys.argv[2], **out)
""")


def test_mirrored_strategy_replicas_get_disjoint_clips(builder, full_frames, tmp_path):
  out = tmp_path / "replicas.npz"
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
  subprocess.run([sys.executable, "-c", _MIRRORED, builder.data_dir, str(out)], check=True, env=env, timeout=120)
  parts = np.load(out)
  assert sorted(parts) == ["0_0", "0_1", "1_0", "1_1"]
  keys = []
  for name in parts:
    assert parts[name].shape == (2, 4, SIZE, SIZE, 3), "per-replica batch: global 4 // 2 replicas"
    keys += [_locate(clip, full_frames["train"])[0] for clip in parts[name]]
  assert sorted(keys) == sorted(full_frames["train"]), "every clip once, on one replica"
