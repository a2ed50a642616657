"""The workers' records and shards are what TFDS's own serializer and writer make of the same examples."""

import os
import random
import signal

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import naming
from tensorflow_datasets.core import writer as writer_lib
from tensorflow_datasets.core.utils import shard_utils
from tensorflow_datasets.proto import tf_example_pb2

import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import clips
from kinetics_tfds.build import examples
from kinetics_tfds.build import local
from kinetics_tfds.build import parallel
from kinetics_tfds.build import shards


@pytest.fixture(scope="module")
def features():
  return tfds.builder("kinetics400", config=kinetics_tfds.KineticsConfig(name="t", num_classes=4)).info.features


@pytest.mark.parametrize("label, is_cc, fps", [(3, 1, 29.97), (-1, -1, 25.0)])
def test_serialize_equals_tfds_serializer(features, label, is_cc, fps):
  example = {
    "video": [os.urandom(n) for n in (1, 300, 70_000)],
    "label": label,
    "key": "-a_b-c_d-e_000123_000133",
    "youtube_id": "-a_b-c_d-e",
    "time_start": 123,
    "time_end": 133,
    "source_fps": fps,
    "is_cc": is_cc,
  }
  assert list(examples.FIELDS) == list(features.get_serialized_info())
  theirs = example_serializer.ExampleSerializer(features.get_serialized_info()).serialize_example(
    features.encode_example(example)
  )
  # Equal as messages: protobuf leaves the order of map entries to the implementation.
  assert tf_example_pb2.Example.FromString(examples.serialize(example)) == tf_example_pb2.Example.FromString(theirs)


def test_task_survives_json():
  clip = annotations.Clip("abc-_defghi", 5, 15, "swiping up", "train", is_cc=1)
  for located in (None, clips.Located("s3://b/x.mp4"), clips.Located("/v/abc-_defghi.mkv", (5, 15))):
    task = examples.Task(clip, located, None, 128, 85, 2)
    assert examples.Task.from_json(task.to_json()) == task


def test_shards_are_byte_equal_to_tfds_writer(tmp_path):
  rng = random.Random(0)
  records = {f"clip{i:07d}_000000_000010": rng.randbytes(rng.randrange(1, 5000)) for i in range(40)}
  shard_config = shard_utils.ShardConfig(num_shards=3)

  def template(folder):
    return naming.ShardedFileTemplate(
      data_dir=tmp_path / folder, dataset_name="kinetics400", split="train", filetype_suffix="tfrecord"
    )

  (tmp_path / "tfds").mkdir()
  writer = writer_lib.Writer(
    serializer=local.Serialized({}),
    filename_template=template("tfds"),
    hash_salt="train",
    disable_shuffling=False,
    example_writer=writer_lib.ExampleWriter(file_format=tfds.core.FileFormat.TFRECORD),
    shard_config=shard_config,
  )
  for key, record in records.items():
    writer.write(key, record)
  tfds_lengths, _ = writer.finalize()

  records_dir = tmp_path / "records"
  records_dir.mkdir()
  (tmp_path / "ours").mkdir()
  for key, record in records.items():
    shards.write_record(str(records_dir / key), record)
    assert shards.read_record(str(records_dir / key)) == record
  planned = shards.plan(
    "train", [(k, len(r)) for k, r in records.items()], str(records_dir), template("ours"), shard_config
  )
  assert [shards.assemble(s, index=False) for s in planned] == tfds_lengths  # Records, not examples: no index.
  for shard in planned:
    shards.remove_records(shard)
  assert not os.listdir(records_dir)
  names = sorted(os.listdir(tmp_path / "tfds"))
  assert len(names) == 3 and names == sorted(os.listdir(tmp_path / "ours"))
  for name in names:
    assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "tfds" / name).read_bytes()


def test_damaged_record_is_refused(tmp_path):
  path = str(tmp_path / "r")
  shards.write_record(path, b"frames")
  data = bytearray(open(path, "rb").read())
  data[14] ^= 1
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError, match="CRC"):
    shards.read_record(path)


def _assemble_then_die_once(shard: shards.Shard) -> int:
  """shards.assemble in a worker that is killed, once in all, after it has copied the records."""
  length = shards.assemble(shard, index=False)  # Records, not examples.
  marker = os.path.join(os.path.dirname(shard.path), "died")
  if not os.path.exists(marker):
    with open(marker, "w") as f:
      f.write(shard.path)
    os.kill(os.getpid(), signal.SIGKILL)
  return length


def test_a_worker_killed_while_joining_a_shard_is_rerun(tmp_path):
  """The rerun of a shard finds every record: assemble leaves them for the build to delete after."""
  records = {f"clip{i:07d}_000000_000010": bytes([i]) * (100 + i) for i in range(12)}
  for key, record in records.items():
    shards.write_record(str(tmp_path / key), record)
  template = naming.ShardedFileTemplate(
    data_dir=tmp_path, dataset_name="kinetics400", split="train", filetype_suffix="tfrecord"
  )
  planned = shards.plan(
    "train", [(k, len(r)) for k, r in records.items()], str(tmp_path), template, shard_utils.ShardConfig(num_shards=3)
  )
  framed = {path: open(path, "rb").read() for shard in planned for path in shard.records}
  assert list(parallel.bounded_map(_assemble_then_die_once, planned, num_workers=2)) == [4, 4, 4]
  assert open(tmp_path / "died").read() in {shard.path for shard in planned}  # A worker died.
  for shard in planned:
    assert open(shard.path, "rb").read() == b"".join(framed[path] for path in shard.records)
