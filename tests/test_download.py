"""kinetics_tfds.download against a loopback HTTP server: no internet, real yt-dlp and OpenCV."""

import csv
import http.server
import io
import pathlib
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

import cv2
import numpy as np
import pytest

from conftest import our_stderr
from conftest import run_command
from kinetics_tfds import clips
from kinetics_tfds.download import archives
from kinetics_tfds.download import cvdf
from kinetics_tfds.download import errors
from kinetics_tfds.download import http as http_lib
from kinetics_tfds.download import report as report_lib
from kinetics_tfds.download import segment
from kinetics_tfds.download import youtube

_FAST_RETRIES = errors.RetryPolicy(attempts=4, base_delay_s=0.01)
_MAX_REQUESTS = 200  # The server answers 503 beyond this, so a retry loop cannot run away.
_LIFETIME_S = 80  # The server stops by itself after this, whatever happens to the test.
_FPS = 10


class _State:
  """What the server serves (by unescaped path), faults to inject per path, and what it was asked."""

  def __init__(self, base_url: str):
    self.base_url = base_url
    self.files: dict[str, bytes] = {}
    # path -> faults for its next GETs: an HTTP status, "drop" (half the body), "bad-range" (a 206 from byte 1),
    # "slow" (1 s before answering), "endless" or "trickle" (a body without end, or of a byte every 0.2 s).
    self.faults: dict[str, list] = {}
    self.redirects: dict[str, str] = {}  # path -> the URL a 302 sends to
    self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
    self.lock = threading.Lock()

  def gets(self, path: str) -> list[str | None]:
    """The Range headers of the GETs of path."""
    return [rng for method, p, rng in self.requests if method == "GET" and p == path]


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves _State.files with Range support, injecting the faults _State.faults asks for."""

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._serve(send_body=False)

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve(send_body=True)

  def _serve(self, send_body: bool) -> None:
    state = self.server.state
    path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
    rng = self.headers.get("Range")
    with state.lock:
      state.requests.append((self.command, path, rng))
      pending = state.faults.get(path)
      fault = pending.pop(0) if pending and send_body else None
      too_many = len(state.requests) > _MAX_REQUESTS
    if too_many or isinstance(fault, int):
      self.send_error(503 if too_many else fault)
      return
    if path in state.redirects:
      self.send_response(302)
      self.send_header("Location", state.redirects[path])
      self.end_headers()
      return
    if fault == "slow":
      time.sleep(1)
    if fault in ("endless", "trickle"):
      self._send_without_end(fault)
      return
    data = state.files.get(path)
    if data is None:
      self.send_error(404)
      return
    start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
    if fault == "bad-range":
      start, rng = 1, rng or "bytes=1-"
    self.send_response(206 if rng else 200)
    if rng:
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    self.send_header("Content-Type", "video/mp4" if path.endswith(".mp4") else "application/octet-stream")
    self.send_header("Content-Length", str(len(data) - start))
    self.send_header("Accept-Ranges", "bytes")
    self.end_headers()
    if send_body:
      body = data[start:]
      self.wfile.write(body[: len(body) // 2] if fault == "drop" else body)

  def _send_without_end(self, fault: str) -> None:
    """A body without a length that goes on until the client hangs up (or, trickling, for 2 minutes)."""
    self.send_response(200)
    self.end_headers()
    try:
      for _ in range(600):
        self.wfile.write(b"x" if fault == "trickle" else bytes(1 << 16))
        self.wfile.flush()
        time.sleep(0.2 if fault == "trickle" else 0)
    except OSError:  # The client hung up.
      pass

  def log_message(self, *args):
    del args


@pytest.fixture(name="server")
def _server():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  httpd.state = _State(f"http://127.0.0.1:{httpd.server_address[1]}")
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  deadline = threading.Timer(_LIFETIME_S, httpd.shutdown)
  deadline.daemon = True
  deadline.start()
  yield httpd.state
  deadline.cancel()
  httpd.shutdown()
  httpd.server_close()


def _video(path: pathlib.Path, seconds: float) -> bytes:
  """A small mp4v clip whose frame i has a white column at x = i, so a cut can be located."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), _FPS, (64, 48))
  for i in range(round(seconds * _FPS)):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, i] = 255
    writer.write(frame)
  writer.release()
  return path.read_bytes()


def _tar(members: dict[str, bytes | tuple[bytes, str]], gzip: bool = True) -> bytes:
  """A tarball of files (name -> bytes) and links (name -> (SYMTYPE or LNKTYPE, target))."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
    for name, content in members.items():
      info = tarfile.TarInfo(name)
      if isinstance(content, tuple):
        info.type, info.linkname = content
        tar.addfile(info)
      else:
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
  return buffer.getvalue()


def _report(manual_dir: pathlib.Path) -> dict[str, dict[str, str]]:
  with open(manual_dir / report_lib.FILE_NAME, newline="") as f:
    return {row["key"]: row for row in csv.DictReader(f)}


def _cvdf(manual_dir, server, splits, dry_run=False):
  report = report_lib.Report(None if dry_run else manual_dir / report_lib.FILE_NAME)
  cvdf.run(manual_dir, "400", splits, server.base_url, 3, _FAST_RETRIES, dry_run, report)
  return report.close()


def test_cvdf_mirror_extracts_every_quirky_shard_and_resumes(tmp_path, server):
  clip = _video(tmp_path / "source.mp4", 1)
  label = "passing American football (in game)"
  official = "https://s3.amazonaws.com/kinetics/400"
  server.files.update(
    {
      "/400/train/k400_train_path.txt": "\n".join(f"{official}/train/part_{i}.tar.gz" for i in range(4)).encode()
      + b"\n\n",
      "/400/train/part_0.tar.gz": _tar({"aaaaaaaaaaa_000000_000010.mp4": clip, "-bbbbbbbbbb_000005_000015.mp4": clip}),
      # Plain tar (despite the name) with clips under deep folders, as k400 part_120 once was.
      "/400/train/part_1.tar.gz": _tar({"home/user/kinetics/train/ccccccccccc_000001_000011.mp4": clip}, gzip=False),
      "/400/train/part_2.tar.gz": _tar({"dd_dddddddd_000002_000012.mp4": clip}),
      "/400/train/part_3.tar.gz": _tar({"eeeeeeeeeee_000003_000013.mp4": clip}),
      # K600-style class tarball: raw spaces and parentheses in the list, AppleDouble files inside.
      "/400/val/k400_val_path.txt": f"{official}/val/{label}.tar.gz\n".encode(),
      f"/400/val/{label}.tar.gz": _tar(
        {
          f"{label}/fffffffffff_000000_000010.mp4": clip,
          f"{label}/._fffffffffff_000000_000010.mp4": b"\0\5\26\7",
          f"._{label}": b"\0\5\26\7",
        }
      ),
      "/400/replacement_for_corrupted_k400.tgz": _tar({"replacement/ggggggggggg_000004_000014.mp4": clip}),
      "/400/annotations/train.csv": b"label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,0,10,train\n",
      "/400/annotations/val.csv": (
        f"label,youtube_id,time_start,time_end,split\n{label},fffffffffff,0,10,val\n".encode()
      ),
    }
  )
  server.faults["/400/train/part_2.tar.gz"] = [500]
  server.faults["/400/train/part_3.tar.gz"] = ["drop"]
  manual = tmp_path / "manual"

  counts = _cvdf(manual, server, ["train", "val"])

  assert counts["ok"] == 8 and not counts["failed"], counts
  expected = {
    "train/aaaaaaaaaaa_000000_000010.mp4",
    "train/-bbbbbbbbbb_000005_000015.mp4",
    "train/home/user/kinetics/train/ccccccccccc_000001_000011.mp4",
    "train/dd_dddddddd_000002_000012.mp4",
    "train/eeeeeeeeeee_000003_000013.mp4",
    f"val/{label}/fffffffffff_000000_000010.mp4",
    "replacement/replacement/ggggggggggg_000004_000014.mp4",
  }
  found = {p.relative_to(manual).as_posix() for p in manual.rglob("*.mp4")}
  assert found == expected
  assert all((manual / p).read_bytes() == clip for p in expected)
  assert len(clips.scan(str(manual))[0]) == len(expected)  # The builder's view of the folder.
  assert not list(manual.rglob("._*"))
  leftovers = [p for p in manual.rglob("*") if p.is_file() and not p.name.endswith((".mp4", ".csv", ".done", ".txt"))]
  assert leftovers == []
  assert (manual / "annotations/val.csv").read_bytes() == server.files["/400/annotations/val.csv"]
  assert (manual / "annotations/train.csv").exists()
  assert len(server.gets("/400/train/part_2.tar.gz")) == 2  # A 500, then the retry.
  first, resumed = server.gets("/400/train/part_3.tar.gz")
  assert first is None and int(resumed.removeprefix("bytes=").rstrip("-")) > 0  # Resumed, not restarted.
  assert {row["status"] for row in _report(manual).values()} == {"ok"}

  before = len(server.requests)
  counts = _cvdf(manual, server, ["train", "val"])
  assert len(server.requests) == before  # A rerun asks the server for nothing.
  assert counts["skipped"] == 8 and not counts["ok"]


def test_path_escaping_members_are_refused_and_reported(tmp_path, server):
  outside = tmp_path / "outside"
  outside.mkdir()
  good = b"fine"
  server.files.update(
    {
      "/400/val/k400_val_path.txt": b"evil.tar.gz\n",  # Relative lines resolve against the list.
      "/400/val/evil.tar.gz": _tar(
        {
          "../evil.mp4": b"x",
          "a/../../../evil2.mp4": b"x",
          str(outside / "absolute.mp4"): b"x",
          "link": (tarfile.SYMTYPE, str(outside)),
          "uplink": (tarfile.SYMTYPE, "../../outside"),
          "uplink/through_link.mp4": b"x",  # uplink was refused, so this lands inside.
          "hard": (tarfile.LNKTYPE, "../../outside/hard"),
          "kkkkkkkkkkk_000000_000010.mp4": good,
        }
      ),
      "/400/annotations/val.csv": b"youtube_id,time_start,time_end,split\n",
    }
  )
  manual = tmp_path / "manual"

  counts = _cvdf(manual, server, ["val"])

  assert counts["refused"] == 6, counts
  rows = _report(manual)
  refused = {key.split(":", 1)[1]: row["reason"] for key, row in rows.items() if row["status"] == "refused"}
  assert refused["../evil.mp4"] == "path-outside-target"
  assert refused[str(outside / "absolute.mp4")] == "absolute-path"
  assert refused["link"] == refused["uplink"] == refused["hard"] == "link-outside-target"
  assert (manual / "val/uplink/through_link.mp4").is_file()
  assert list(outside.iterdir()) == []
  assert sorted(p.name for p in tmp_path.iterdir()) == ["manual", "outside"]
  assert (manual / "val/kkkkkkkkkkk_000000_000010.mp4").read_bytes() == good
  assert rows["400/val/evil.tar.gz"]["status"] == "ok"


def test_dry_run_lists_sizes_and_writes_nothing(tmp_path, server):
  shard = _tar({"hhhhhhhhhhh_000000_000010.mp4": b"x" * 1000})
  server.files.update(
    {
      "/400/test/k400_test_path.txt": b"https://s3.amazonaws.com/kinetics/400/test/part_0.tar.gz\n",
      "/400/test/part_0.tar.gz": shard,
      "/400/annotations/test.csv": b"youtube_id,time_start,time_end,split\n",
    }
  )
  manual = tmp_path / "manual"
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=cvdf",
      "--version=400",
      "--split=test",
      f"--manual_dir={manual}",
      f"--cvdf_base_url={server.base_url}",
      "--dry_run",
    ],
    capture_output=True,
    text=True,
    timeout=60,
    check=True,
    cwd=pathlib.Path(__file__).parent.parent,
  )
  assert f"{server.base_url}/400/test/part_0.tar.gz\t{len(shard)}" in done.stdout.splitlines()
  assert '"planned": 2' in done.stdout
  assert not manual.exists()
  assert {method for method, path, _ in server.requests if path.endswith(".gz")} == {"HEAD"}


def test_youtube_clips_are_cut_checked_and_not_fetched_twice(tmp_path, server):
  present, limited, removed = "-yt_video_1", "yt_video_02", "yt_gone_003"
  server.files[f"/{present}.mp4"] = _video(tmp_path / "a.mp4", 6)
  server.files[f"/{limited}.mp4"] = _video(tmp_path / "b.mp4", 3)
  server.faults[f"/{limited}.mp4"] = [429]
  annotation_file = tmp_path / "kinetics400_val.csv"
  annotation_file.write_text(
    "label,youtube_id,time_start,time_end,split\n"
    f"abseiling,{present},1,4,val\n"
    f"abseiling,{limited},0,10,val\n"  # The video ends at 3 s: the clip is what there is.
    f"air drumming,{removed},0,10,val\n"
  )
  manual = tmp_path / "manual"
  template = server.base_url + "/{youtube_id}.mp4"

  def download():
    report = report_lib.Report(manual / report_lib.FILE_NAME)
    youtube.run(manual, annotation_file, template, 2, _FAST_RETRIES, False, False, report)
    return report.close()

  counts = download()

  assert counts["ok"] == 2 and counts["failed"] == 1, counts
  cut = manual / f"val/{present}_000001_000004.mp4"
  assert segment.duration_s(cut) == pytest.approx(3.0, abs=0.2)
  capture = cv2.VideoCapture(str(cut))
  first_frame = capture.read()[1]
  capture.release()
  assert first_frame.mean(axis=(0, 2)).argmax() == 1 * _FPS  # The cut starts at 1 s.
  assert segment.duration_s(manual / f"val/{limited}_000000_000010.mp4") == pytest.approx(3.0, abs=0.2)
  assert server.gets(f"/{limited}.mp4").count(None) >= 2  # Refused with 429, then fetched.
  assert _report(manual)[f"{removed}_000000_000010"]["reason"] in ("removed", "http-404")
  assert not (manual / ".download_state/youtube" / f"{present}_000001_000004").exists()

  before = len(server.requests)
  counts = download()
  assert len(server.requests) == before
  assert counts["skipped:present"] == 2 and counts["skipped:failed-before"] == 1, counts


@pytest.mark.parametrize(
  "message, reason",
  [
    ("ERROR: [youtube] x: Video unavailable. This video has been removed by the uploader", "removed"),
    ("ERROR: [youtube] x: Private video. Sign in if you've been granted access", "private"),
    (
      "ERROR: [youtube] x: Video unavailable. This video contains content from SME, who has blocked it "
      "on copyright grounds",
      "copyright",
    ),
    ("ERROR: [youtube] x: The uploader has not made this video available in your country", "country-blocked"),
    ("ERROR: [youtube] x: Sign in to confirm your age. This video may be inappropriate for some users.", "age-gated"),
    ("ERROR: Unable to download webpage: HTTP Error 429: Too Many Requests", "http-429"),
    ("ERROR: Unable to download webpage: <urlopen error [Errno 111] Connection refused>", "network"),
    ("ERROR: something else entirely", "other"),
  ],
)
def test_failure_reasons(message, reason):
  assert errors.classify(message) == reason


def test_downloaded_folder_builds_with_the_projects_builder(tmp_path, server):
  """End to end: the CVDF layout this package writes is what kinetics_tfds' builder reads."""
  builder_module = pytest.importorskip("kinetics_tfds.kinetics400.kinetics400_dataset_builder")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from kinetics_tfds import builder as builder_lib  # pylint: disable=import-outside-toplevel

  clip = _video(tmp_path / "source.mp4", 1)
  server.files.update(
    {
      "/400/train/k400_train_path.txt": b"https://s3.amazonaws.com/kinetics/400/train/part_0.tar.gz\n",
      "/400/train/part_0.tar.gz": _tar({"aaaaaaaaaaa_000000_000010.mp4": clip, "bbbbbbbbbbb_000000_000010.mp4": clip}),
      "/400/val/k400_val_path.txt": b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\n",
      "/400/val/part_0.tar.gz": _tar({"ccccccccccc_000000_000010.mp4": clip}),
      "/400/replacement_for_corrupted_k400.tgz": _tar({}),
      "/400/annotations/train.csv": (
        b"label,youtube_id,time_start,time_end,split\n"
        b"abseiling,aaaaaaaaaaa,0,10,train\nair drumming,bbbbbbbbbbb,0,10,train\n"
      ),
      "/400/annotations/val.csv": b"label,youtube_id,time_start,time_end,split\nabseiling,ccccccccccc,0,10,val\n",
    }
  )
  manual = tmp_path / "manual"
  assert not _cvdf(manual, server, ["train", "val"])["failed"]

  config = builder_lib.KineticsConfig(name="tiny", fps=5.0, short_side=32, num_classes=2)
  builder = builder_module.Builder(config=config, data_dir=str(tmp_path / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert {name: info.num_examples for name, info in builder.info.splits.items()} == {"train": 2, "validation": 1}


def _tree(root: pathlib.Path) -> dict[str, bytes]:
  return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_list_line_reaches_outside_the_state_folder(tmp_path, server):
  """Every spelling of a path out of the folder: refused, or mapped to a name inside it."""
  victims = tmp_path / "victims"
  (victims / "x").mkdir(parents=True)
  (victims / "victim.tar.gz").write_bytes(b"precious")
  (victims / "x/file.tar.gz").write_bytes(b"precious too")
  manual = tmp_path / "deep/a/b/manual"
  official = "https://s3.amazonaws.com/kinetics"
  escaping = [
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/victims/x/file.tar.gz",
    f"{server.base_url}/400/val/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/victims/victim.tar.gz",
    "..%2f..%2f..%2f..%2f..%2f..%2f..%2fvictims%2fx%2f..%2fvictim.tar.gz",
    "a%5c..%5c..%5cvictim.tar.gz",
    "a/%2e%2e%2f%2e%2e%2fvictim%00.tar.gz",
  ]
  # The same server by another name, and a host of nobody's: a list names only files on its mirror.
  other_hosts = [server.base_url.replace("127.0.0.1", "localhost") + "/400/val/elsewhere.tar.gz"]
  other_hosts.append("http://mirror.invalid/400/val/elsewhere_too.tar.gz")
  # Named as the downloader's own files beside shard ./plain.tar.gz: its done marker and its partial download.
  reserved = ["plain.tar.gz.done", "plain.tar.gz.part"]
  mapped_inside = [
    f"{server.base_url}/400/val//{victims}/victim.tar.gz",  # Double slash, then an absolute path.
    f"{official}//{victims}/x/file.tar.gz",  # The same on an official-style line.
    "./././plain.tar.gz",
  ]
  clip = _video(tmp_path / "source.mp4", 1)
  for n, line in enumerate(mapped_inside):
    url = cvdf._rebase(line, f"{server.base_url}/400/val/l.txt", server.base_url)
    # What the handler makes of the request line (it reads a leading '//' as a host).
    server.files[urllib.parse.unquote(urllib.parse.urlsplit(urllib.parse.urlsplit(url).path).path)] = _tar(
      {f"mmmmmmmmmm{n}_000000_000010.mp4": clip}
    )
  server.files.update(
    {
      "/400/val/k400_val_path.txt": "\n".join(escaping + other_hosts + reserved + mapped_inside).encode(),
      "/400/val/elsewhere.tar.gz": _tar({"nnnnnnnnnnn_000000_000010.mp4": clip}),
      "/400/annotations/val.csv": b"youtube_id,time_start,time_end,split\n",
    }
  )
  outside_before = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("deep/")}

  counts = _cvdf(manual, server, ["val"])

  assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("deep/")} == outside_before
  assert sorted(p.name for p in (tmp_path / "deep/a/b").iterdir()) == ["manual"]
  rows = _report(manual)
  refused = {key for key, row in rows.items() if row["reason"] == "unsafe-name"}
  assert len(refused) == len(escaping) and counts["refused:unsafe-name"] == len(escaping), rows
  assert all(".." in key or "\\" in key or "\0" in key for key in refused)
  assert not any(".." in path or "elsewhere" in path for _, path, _ in server.requests)  # Refused: never fetched.
  assert {key for key, row in rows.items() if row["reason"] == "reserved-name"} == {f"400/val/{r}" for r in reserved}
  assert {key for key, row in rows.items() if row["reason"] == "other-host"} == {
    "400/val/elsewhere.tar.gz",
    "400/val/elsewhere_too.tar.gz",
  }
  assert counts["ok"] == len(mapped_inside) + 1, rows  # The shards and the annotation file.
  assert {p.name for p in (manual / "val").iterdir()} == {f"mmmmmmmmmm{n}_000000_000010.mp4" for n in range(3)}
  state = manual / ".download_state"
  assert all(p.resolve().is_relative_to(state.resolve()) for p in state.rglob("*"))
  assert len(list(state.rglob("*.done"))) == len(mapped_inside)


def test_decompression_bomb_is_refused_and_what_it_wrote_removed(tmp_path, server):
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
    first = b"a real clip comes first"
    info = tarfile.TarInfo("nnnnnnnnnnn_000000_000010.mp4")
    info.size = len(first)
    tar.addfile(info, io.BytesIO(first))
    zeros = 80 << 20  # 80 MiB of zeros gzip to ~80 KB: far beyond 10x and the 64 MiB floor.
    info = tarfile.TarInfo("bomb.mp4")
    info.size = zeros
    tar.addfile(info, io.BytesIO(bytes(zeros)))
  server.files.update(
    {
      "/400/val/k400_val_path.txt": b"bomb.tar.gz\n",
      "/400/val/bomb.tar.gz": buffer.getvalue(),
      "/400/annotations/val.csv": b"youtube_id,time_start,time_end,split\n",
    }
  )
  manual = tmp_path / "manual"

  counts = _cvdf(manual, server, ["val"])

  assert len(buffer.getvalue()) < 1 << 20
  assert _report(manual)["400/val/bomb.tar.gz"]["reason"] == "expansion-limit", _report(manual)
  assert counts["failed"] == 1
  assert [
    p
    for p in manual.rglob("*")
    if p.is_file() and p.name != report_lib.FILE_NAME and p.parent.name != "annotations" and not p.name.endswith(".txt")
  ] == []


@pytest.mark.parametrize("fault", [416, "bad-range"])
def test_a_download_that_must_restart_is_retried(tmp_path, server, fault):
  """A .part that is not a prefix of the file (416), or a 206 of other bytes than asked: restarted, not failed."""
  data = bytes(range(256)) * 40
  server.files["/400/val/a.tar.gz"] = data
  server.faults["/400/val/a.tar.gz"] = [fault]
  dest = tmp_path / "a.tar.gz"
  dest.with_name("a.tar.gz" + http_lib.PART).write_bytes(b"not a prefix")
  assert http_lib.fetch(f"{server.base_url}/400/val/a.tar.gz", dest, _FAST_RETRIES) == len(data)
  assert dest.read_bytes() == data
  assert errors.classify(errors.IncompleteDownload("asked for bytes from 12, got bytes 1-")) == "network"


def test_what_a_server_sends_is_bounded(tmp_path, server):
  """An endless list is refused at http_lib.MAX_LIST_BYTES, on a dry run and a real one, with no .part left; a
  trickling body fails at the attempt's deadline; a redirect to another host is not followed."""
  server.files["/400/annotations/val.csv"] = b"youtube_id,time_start,time_end,split\n"
  server.files["/400/val/k400_val_path.txt"] = b"a.tar.gz\n"
  server.faults["/400/val/k400_val_path.txt"] = ["endless"] * 2
  for dry_run in (True, False):
    manual = tmp_path / f"manual_{dry_run}"
    counts = _cvdf(manual, server, ["val"], dry_run=dry_run)
    assert counts["failed:too-large"] == 1, counts
    assert not [p for p in manual.rglob("*") if p.name.endswith(http_lib.PART)]

  server.files["/400/val/slow.tar.gz"] = b"y" * 100
  server.faults["/400/val/slow.tar.gz"] = ["trickle"] * 2
  policy = errors.RetryPolicy(attempts=2, base_delay_s=0.01, deadline_s=0.5)
  start = time.monotonic()
  with pytest.raises(TimeoutError) as error:
    http_lib.fetch(f"{server.base_url}/400/val/slow.tar.gz", tmp_path / "slow.tar.gz", policy)
  assert time.monotonic() - start < 5 and errors.classify(error.value) == "network"

  server.files["/elsewhere.tar.gz"] = b"z"
  port = server.base_url.rsplit(":", 1)[1]
  server.redirects["/400/val/moved.tar.gz"] = f"http://localhost:{port}/elsewhere.tar.gz"  # Another host name.
  with pytest.raises(errors.OtherHost) as error:
    http_lib.fetch(f"{server.base_url}/400/val/moved.tar.gz", tmp_path / "moved.tar.gz", _FAST_RETRIES)
  assert errors.classify(error.value) == "other-host" and not server.gets("/elsewhere.tar.gz")


def test_ctrl_c_stops_the_downloader_and_writes_its_report(tmp_path, server):
  shards = [f"part_{i}.tar.gz" for i in range(20)]
  server.files["/400/annotations/val.csv"] = b"youtube_id,time_start,time_end,split\n"
  server.files["/400/val/k400_val_path.txt"] = "".join(f"{name}\n" for name in shards).encode()
  for i, name in enumerate(shards):
    server.files[f"/400/val/{name}"] = _tar({f"c{i:010d}_000000_000010.mp4": b"clip"})
    server.faults[f"/400/val/{name}"] = ["slow"]  # Each takes a second.
  manual = tmp_path / "manual"
  run = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=cvdf",
      "--split=val",
      "--num_workers=2",
      f"--cvdf_base_url={server.base_url}",
      f"--manual_dir={manual}",
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    # As from a terminal: a test run started in the background inherits SIGINT ignored, and so would the command.
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )
  try:
    deadline = time.monotonic() + 60
    while len([m for m, *_ in server.requests if m == "GET"]) < 5:  # Annotations, list, then shards.
      assert run.poll() is None and time.monotonic() < deadline, run.communicate()
      time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = run.communicate(timeout=30)
    stopped_s = time.monotonic() - interrupted
  finally:
    run.kill()
  assert run.returncode == 130 and stopped_s < 5, (run.returncode, stopped_s, stderr[-2000:])
  assert "Interrupted" in stderr
  report = _report(manual)
  assert 0 < sum(row["status"] == "ok" for key, row in report.items() if key.startswith("400/val/part_")) < 10
  time.sleep(1.5)  # What a cancelled queue would still have fetched by now.
  assert len([p for m, p, _ in server.requests if m == "GET" and "/part_" in p]) < 10


def test_a_bomb_removes_only_the_files_it_created(tmp_path):
  """A damaged shard that repeats another shard's clip name, then expands too far, leaves that clip in place."""
  shared, own = "sssssssssss_000000_000010.mp4", "ooooooooooo_000000_000010.mp4"
  (tmp_path / "part_0.tar.gz").write_bytes(_tar({shared: b"shard 0's clip"}))
  assert archives.extract(tmp_path / "part_0.tar.gz", tmp_path / "val") == []
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
    for name, size in ((shared, 10), (own, 10), ("bomb.mp4", archives.MIN_LIMIT_BYTES + 1)):
      info = tarfile.TarInfo(name)
      info.size = size
      tar.addfile(info, io.BytesIO(bytes(size)))
  (tmp_path / "part_2.tar.gz").write_bytes(buffer.getvalue())
  with pytest.raises(archives.ExpansionLimit):
    archives.extract(tmp_path / "part_2.tar.gz", tmp_path / "val")
  assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [shared]  # Its own clip removed, not shard 0's.


def test_downloader_errors_name_the_flag_and_failures_set_the_exit_status(tmp_path):
  missing = run_command(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=youtube",
      f"--annotations={tmp_path / 'nope.csv'}",
      f"--manual_dir={tmp_path / 'm'}",
    ]
  )
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert our_stderr(missing.stderr)[0].startswith(
    f"python -m kinetics_tfds.download: error: --annotations={tmp_path / 'nope.csv'}: no such file"
  )

  rows = tmp_path / "val.csv"
  rows.write_text("label,youtube_id,time_start,time_end,split\nx,aaaaaaaaaaa,0,inf,val\nx,bbbbbbbbbbb,0,10,val\n")
  dry = run_command(
    [
      sys.executable,
      "-m",
      "kinetics_tfds.download",
      "--source=youtube",
      f"--annotations={rows}",
      f"--manual_dir={tmp_path / 'm'}",
      "--dry_run",
    ]
  )
  assert dry.returncode == 1, dry.stderr
  assert "https://www.youtube.com/watch?v=bbbbbbbbbbb\t0\t10" in dry.stdout  # The good row is still planned.
  assert our_stderr(dry.stderr)[-1].startswith("1 items failed")
