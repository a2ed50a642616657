"""How a build runs (kinetics_tfds/build/): every way of building gives the same dataset: serially, over a worker
pool, as a Beam pipeline through `tfds build`, from a manual folder in object storage (loopback S3 and GCS servers),
and when a killed build is rerun. Examples are compared key by key with the frames' JPEG bytes as stored;
skipped_clips.csv byte for byte, and the skip lists keep any key. Clips are tiny to keep this fast.
"""

from concurrent.futures.process import BrokenProcessPool
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

import conftest
from conftest import SMALL_CLIP
from conftest import TINY_CONFIG
import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import clips as clips_lib
from kinetics_tfds import motion_clips
from kinetics_tfds import storage
from kinetics_tfds.build import beam
from kinetics_tfds.build import examples as examples_lib
from kinetics_tfds.build import parallel
from kinetics_tfds.build import skipped as skipped_lib

BEAM_OPTIONS = "runner=DirectRunner,direct_running_mode=multi_processing,direct_num_workers=2"


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
  """4 classes x (3 train + 1 validation) clips, plus a train row with no file and one with a bad file."""
  folder = tmp_path_factory.mktemp("manual")
  written = motion_clips.make_manual_dir(str(folder), clips_per_class={"train": 3, "validation": 1}, **SMALL_CLIP)
  missing = annotations.Clip("missing0001", 0, 10, "swiping up", "train")
  corrupt = annotations.Clip("corrupt0001", 0, 10, "swiping up", "train")
  (folder / "train" / f"{corrupt.key}.mp4").write_bytes(b"not a video" * 100)
  motion_clips.write_annotations(str(folder / "kinetics400"), "train", written["train"] + [missing, corrupt])
  return str(folder)


def build(manual: str, data_dir: str, num_workers: int) -> str:
  """Builds the tiny config in this process; returns its version folder."""
  dataset = tfds.builder(
    "kinetics400", config=kinetics_tfds.KineticsConfig(**TINY_CONFIG), data_dir=data_dir, num_workers=num_workers
  )
  dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return os.fspath(dataset.data_dir)


def version_dir(data_dir) -> str:
  return os.path.join(data_dir, "kinetics400", TINY_CONFIG["name"], "1.0.0")


def read(folder: str) -> tuple[dict, str]:
  """({(split, key): example with the frames' stored bytes}, skipped_clips.csv) of a built dataset."""
  dataset = tfds.builder_from_directory(folder)
  examples = {}
  for split in dataset.info.splits:
    ds = dataset.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding()})
    for example in tfds.as_numpy(ds):
      examples[split, example["key"]] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in example.items()}
  return examples, open(os.path.join(folder, skipped_lib.FILE)).read()


@pytest.fixture(scope="module")
def serial(manual, tmp_path_factory):
  folder = build(manual, str(tmp_path_factory.mktemp("serial")), num_workers=1)
  examples, skipped = read(folder)
  assert len(examples) == 16
  assert [(r.key, r.reason.split(":")[0]) for r in skipped_lib.read(folder)] == [
    ("corrupt0001_000000_000010", "unreadable"),
    ("missing0001_000000_000010", "missing file"),
  ]
  return examples, skipped


def test_worker_pool_matches_serial(manual, serial, tmp_path):
  assert read(build(manual, str(tmp_path), num_workers=2)) == serial


def test_array_record_through_tfds_writer(manual, serial, tmp_path):
  """Formats other than TFRecord go through TFDS's writer; `as_data_source` reads an ArrayRecord build by index (its
  examples decoded by TFDS's features, with TensorFlow: this test's process imports it)."""
  dataset = tfds.builder(
    "kinetics400",
    config=kinetics_tfds.KineticsConfig(**TINY_CONFIG),
    data_dir=str(tmp_path),
    num_workers=2,
    file_format="array_record",
  )
  dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  keys = {
    (split, dataset.as_data_source(split)[i]["key"])
    for split in ("train", "validation")
    for i in range(len(dataset.as_data_source(split)))
  }
  assert keys == set(serial[0])
  assert not [n for n in os.listdir(dataset.data_dir) if n.startswith(".")]  # Record files removed.


def tfds_build(manual: str, data_dir, *flags: str, env: dict | None = None) -> None:
  """`tfds build` of the tiny config, as a user runs it."""
  result = subprocess.run(
    conftest.tfds_build("kinetics400", manual, data_dir, json.dumps(TINY_CONFIG), *flags),
    capture_output=True,
    text=True,
    env=env,
  )
  assert result.returncode == 0, result.stderr[-5000:]


def test_beam_through_tfds_build_matches_serial(manual, serial, tmp_path):
  tfds_build(manual, tmp_path, f"--beam_pipeline_options={BEAM_OPTIONS}")
  assert read(version_dir(tmp_path)) == serial
  assert not [n for n in os.listdir(version_dir(tmp_path)) if n.startswith(".")]  # Task lists removed.


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@contextlib.contextmanager
def _moto_s3():
  """A moto S3 server on 127.0.0.1: yields (file system to upload with, environment for builds)."""
  moto_server = pytest.importorskip("moto.server")
  s3fs = pytest.importorskip("s3fs")
  port = _free_port()
  server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  server.start()
  env = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
  }
  try:
    # A new instance, not the one s3fs cached for an earlier server that had the same port.
    yield (
      s3fs.S3FileSystem(
        key="testing", secret="testing", endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"], skip_instance_cache=True
      ),
      env,
    )
  finally:
    server.stop()


@contextlib.contextmanager
def _gcs_emulator():
  """A gcp-storage-emulator server on 127.0.0.1: yields (file system to upload with, environment for builds)."""
  emulator = pytest.importorskip("gcp_storage_emulator.server")
  gcsfs = pytest.importorskip("gcsfs")
  port = _free_port()
  server = emulator.create_server("127.0.0.1", port, in_memory=True)
  server.start()
  env = {
    # gcsfs sends its requests here, and without credentials ("anon") no Google sign-in is tried.
    "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
    "FSSPEC_GCS_TOKEN": "anon",
    # gcsfs's default file system first asks the gRPC storage control API for the bucket's layout,
    # which the emulator does not serve (60 s timeout per bucket); the plain JSON API one does not ask.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }
  try:
    yield gcsfs.core.GCSFileSystem(endpoint_url=env["STORAGE_EMULATOR_HOST"], token="anon"), env
  finally:
    server.stop()


_OBJECT_STORES = {"s3": _moto_s3, "gs": _gcs_emulator}


@pytest.fixture(scope="module")
def object_store(manual):
  """scheme -> (URL, environment for builds) of the manual folder uploaded to a loopback store of that
  scheme, started on first use and stopped with the module."""
  uploaded = {}
  with contextlib.ExitStack() as servers:

    def get(scheme: str) -> tuple[str, dict]:
      if scheme not in uploaded:
        fs, env = servers.enter_context(_OBJECT_STORES[scheme]())
        fs.mkdir("kinetics")
        url = f"{scheme}://kinetics/k400"
        fs.put(manual + "/", url + "/", recursive=True)
        uploaded[scheme] = url, {**os.environ, **env, parallel.WORKERS_ENV: "2"}
      return uploaded[scheme]

    yield get


# gs:// is built over the pool only: Beam reads the store through the same code, and another Beam
# build would add about 20 s.
@pytest.mark.parametrize("scheme,how", [("s3", "pool"), ("s3", "beam"), ("gs", "pool")])
def test_manual_dir_in_object_storage_matches_local(object_store, serial, tmp_path, scheme, how):
  url, env = object_store(scheme)
  scratch = str(tmp_path / "scratch")
  env = {**env, storage.SCRATCH_ENV: scratch}
  tfds_build(url, tmp_path, *([f"--beam_pipeline_options={BEAM_OPTIONS}"] if how == "beam" else []), env=env)
  assert read(version_dir(tmp_path)) == serial
  assert os.path.isdir(scratch)
  left = [name for _, _, names in os.walk(tmp_path) for name in names if name.startswith(storage.COPY_PREFIX)]
  assert not left  # No clip copy, in scratch or beside the output.


def test_beam_pipeline_size_does_not_grow_with_clips(tmp_path):
  """The task list is read by the workers from a file, not embedded in the job graph."""
  beam = pytest.importorskip("apache_beam")
  dataset = tfds.builder("kinetics400", config=kinetics_tfds.KineticsConfig(**TINY_CONFIG), data_dir=str(tmp_path))
  dataset._use_beam = True  # pylint: disable=protected-access
  os.makedirs(dataset.data_dir)
  rows = "".join(f"swiping up,id{i:09d},{i % 300},{i % 300 + 10},train\n" for i in range(100_000))
  clips, rejected = annotations.parse_split(
    "train.csv", ("label,youtube_id,time_start,time_end,split\n" + rows).encode(), "train"
  )
  assert len(clips) == 100_000 and not rejected

  def pipeline_bytes(count: int) -> int:
    tasks = [examples_lib.Task(c, None, 25.0, 32, 90, 0) for c in clips[:count]]
    pipeline = beam.Pipeline()
    _ = pipeline | "train" >> dataset._generate_examples("train", tasks)  # pylint: disable=protected-access
    return len(pipeline.to_runner_api().SerializeToString())

  small, large = pipeline_bytes(10), pipeline_bytes(100_000)
  assert abs(large - small) < 100, (small, large)


def _children(pid: int) -> list[int]:
  found = []
  for task in os.listdir(f"/proc/{pid}/task"):
    try:
      with open(f"/proc/{pid}/task/{task}/children") as f:
        found += [int(c) for c in f.read().split()]
    except FileNotFoundError:  # A thread that ended while we looked.
      pass
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_killed_build_reruns_to_the_same_dataset(manual, serial, tmp_path):
  script = (
    "import sys; sys.path.insert(0, sys.argv[1]); import test_build as t;"
    "t.build(sys.argv[2], sys.argv[3], num_workers=2)"
  )
  run = subprocess.Popen(
    [sys.executable, "-c", script, os.path.dirname(__file__), manual, str(tmp_path)],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  config_dir = os.path.dirname(version_dir(tmp_path))
  try:
    deadline = time.monotonic() + 120
    # Workers are the children that appear once TFDS has made its incomplete folder.
    while not (os.path.isdir(config_dir) and os.listdir(config_dir) and (workers := _children(run.pid))):
      assert run.poll() is None and time.monotonic() < deadline, "the build never started its workers"
      time.sleep(0.002)
    # Frozen the moment its pool starts, the build has written at most a few clips: killed mid-build.
    run.send_signal(signal.SIGSTOP)
    run.send_signal(signal.SIGKILL)
    run.wait()
  finally:
    run.kill()
  assert not os.path.exists(version_dir(tmp_path))
  assert [n for n in os.listdir(config_dir) if n.startswith("incomplete.")]
  deadline = time.monotonic() + 10
  while any(map(_alive, workers)):
    assert time.monotonic() < deadline, "workers outlived their killed build"
    time.sleep(0.05)
  assert read(build(manual, str(tmp_path), num_workers=2)) == serial
  assert not [n for n in os.listdir(config_dir) if n.startswith("incomplete.")]  # Leftovers removed.


def _segfault_on_5(item: int) -> int:
  if item == 5:
    os.kill(os.getpid(), signal.SIGSEGV)
  return item * 10


def test_a_crashing_worker_loses_only_its_item():
  results = parallel.bounded_map(_segfault_on_5, range(12), num_workers=2, on_crash=lambda i: f"crashed {i}")
  assert list(results) == [0, 10, 20, 30, 40, "crashed 5", 60, 70, 80, 90, 100, 110]
  with pytest.raises(BrokenProcessPool):
    list(parallel.bounded_map(_segfault_on_5, range(12), num_workers=2))


@pytest.mark.parametrize("num_workers", [1, 2])
def test_a_split_whose_every_clip_fails_is_left_out_and_reported(manual, tmp_path, num_workers):
  """Every validation clip junk: the build keeps train and lists each validation clip in skipped_clips.csv."""
  broken = tmp_path / "manual"
  shutil.copytree(manual, broken)
  validation = sorted((broken / "val").iterdir())
  for path in validation:
    path.write_bytes(b"junk" * 50)
  folder = build(str(broken), str(tmp_path / "data"), num_workers=num_workers)
  examples, _ = read(folder)
  assert {split for split, _ in examples} == {"train"} and len(examples) == 12
  assert set(tfds.builder_from_directory(folder).info.splits) == {"train"}
  skipped = {r.key: r for r in skipped_lib.read(folder)}
  assert {p.stem for p in validation} <= set(skipped)
  assert all(skipped[p.stem].split == "validation" for p in validation)
  assert not [n for n in os.listdir(folder) if n.startswith(".")]  # The split's record folder removed too.


_LINE_BREAKS_OF_STR_SPLITLINES = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r\n"


def test_skip_lists_keep_keys_with_any_line_break_character(tmp_path):
  """A malformed row's key holds what its file held: the lists a build writes and Beam's read back whole."""
  skipped = [
    annotations.Rejected("train", f"a{c}b_000000_000010", f"malformed row: {c!r}")
    for c in _LINE_BREAKS_OF_STR_SPLITLINES
  ]
  skipped_lib.write(str(tmp_path), skipped)
  assert skipped_lib.read(str(tmp_path)) == sorted(skipped, key=lambda r: (r.split, r.key, r.reason))
  lines = [beam.skip_line(examples_lib.Result(r.split, r.key, reason=r.reason)) for r in skipped]
  (tmp_path / ".skipped-train-00000-of-00001").write_text("\n".join(lines) + "\n", newline="")
  assert beam.collect_skipped(str(tmp_path)) == skipped


def _use_in_this_process(env: dict, monkeypatch) -> None:
  """Points this process's s3:// at the moto server of `env`, as FSSPEC_S3_ENDPOINT_URL does a new process."""
  fsspec = pytest.importorskip("fsspec")
  settings = {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"], "key": "testing", "secret": "testing"}
  # botocore's own retries, which would take ~15 s once the server is stopped, down to one try.
  settings.update(config_kwargs={"retries": {"max_attempts": 1}})
  monkeypatch.setitem(fsspec.config.conf, "s3", settings)


def test_a_failing_store_stops_the_build_and_a_bad_file_does_not(manual, tmp_path, monkeypatch):
  """A clip is skipped for what its file is (unreadable, missing), never for an unreachable store or an unusable
  scratch folder: those raise storage.StoreError, after retries, and a build stops on it."""
  monkeypatch.setattr(storage, "COPY_RETRY_DELAYS_S", (0.01,))
  clip = annotations.Clip("corrupt0001", 0, 10, "swiping up", "train")
  with _moto_s3() as (fs, env):
    _use_in_this_process(env, monkeypatch)
    fs.mkdir("flaky")  # Not another test's bucket: moto keeps buckets per process.
    fs.put(os.path.join(manual, "train", f"{clip.key}.mp4"), f"flaky/{clip.key}.mp4")

    def built(name: str, scratch: str = str(tmp_path)) -> examples_lib.Result:
      located = clips_lib.Located(f"s3://flaky/{name}", None)
      return examples_lib.build(examples_lib.Task(clip, located, 25.0, 32, 90), scratch=scratch)

    assert built(f"{clip.key}.mp4").reason.startswith("unreadable")
    assert built("gone.mp4").reason == "missing file"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(storage.StoreError, match=f"^{not_a_folder}: cannot hold a copy"):
      built(f"{clip.key}.mp4", scratch=str(not_a_folder))
  with pytest.raises(storage.StoreError, match="not copied to .* in 2 attempts"):  # The server is stopped.
    built(f"{clip.key}.mp4")
  assert not [n for n in os.listdir(tmp_path) if n.startswith(storage.COPY_PREFIX)]


def test_only_annotation_files_are_copied_from_a_bucket(monkeypatch):
  """Keys no builder reads are left in the store, whatever they are: too long for a local file name, a file and a
  folder of one name, a `..`."""
  wanted = [
    "kinetics400.tar.gz",
    "kinetics400/train.csv",
    "kinetics700_2020_delta/validate.json",
    "annotations/val.csv",
    "test.csv",
  ]
  junk = [
    "x" * 300 + ".csv",
    "notes.csv",
    "notes.csv/more.csv",
    "kinetics400/" + "y" * 300 + "/train.csv",
    "../train.csv",
    "clips/train.csv",
    "a.tar.gz",
  ]
  with _moto_s3() as (fs, env):
    _use_in_this_process(env, monkeypatch)
    fs.mkdir("junk")  # Not another test's bucket: moto keeps buckets per process.
    for key in wanted + junk:
      fs.pipe(f"junk/k400/{key}", key.encode())
    with storage.local_annotations("s3://junk/k400", annotations.is_source_path) as local:
      copied = sorted(os.path.relpath(os.path.join(d, n), local) for d, _, names in os.walk(local) for n in names)
      assert copied == sorted(wanted)
      assert all(open(os.path.join(local, key), "rb").read() == key.encode() for key in wanted)


def _tree(folder) -> dict[str, bytes]:
  return {
    os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
    for d, _, names in os.walk(folder)
    for n in names
  }


def test_a_prepared_dataset_is_opened_without_writing(manual, serial, tmp_path):
  """A prepared dataset in a read-only data_dir (as shared on clusters) opens: download_and_prepare writes nothing,
  no build claim either."""
  built = build(manual, str(tmp_path / "built"), num_workers=1)
  shared = tmp_path / "shared"
  shutil.copytree(built, version_dir(shared))  # The dataset alone, as another machine sees it.
  before = _tree(shared)
  assert read(build(manual, str(shared), num_workers=1)) == serial
  assert _tree(shared) == before


def test_manual_dir_as_any_fsspec_url(manual, serial, tmp_path):
  """file:// and schemes that TFDS's path parser does not know (memory://) build as a local folder does."""
  fsspec = pytest.importorskip("fsspec")
  assert read(build(f"file://{manual}", str(tmp_path / "file"), num_workers=1)) == serial
  memory = fsspec.filesystem("memory")
  memory.put(manual + "/", "/k400/", recursive=True)
  try:  # The pool's workers would not see this process's memory; one worker runs in it.
    assert read(build("memory://k400", str(tmp_path / "memory"), num_workers=1)) == serial
  finally:
    memory.rm("/k400", recursive=True)
