r"""Build throughput: the project's per-clip path against a bare OpenCV floor and TFDS's own Video feature.

Generates 10 s clips at 340x256, 640x360 and 1280x720, 30 fps (H.264 made by the `ffmpeg` binary
from OpenCV-written frames; OpenCV's pip wheel cannot write H.264, so without ffmpeg they are
MPEG-4 part 2, and the JSON names the codec), then measures on the same clips:

  * ours: `examples.RecordWriter`, what a pool worker runs per clip (decode, encode, serialise, write
    the record file), one core;
  * floor: a bare loop that decodes every source frame and resizes and JPEG-encodes the kept ones;
  * TFDS: `tfds.features.Video(...).encode_example(path)` with ffmpeg doing the same fps and scale,
    as PNG (its default), JPEG at ffmpeg's default quality and JPEG at `--ffmpeg_qscale`;
  * scaling: `parallel.bounded_map` over 1 worker against all workers, and the whole machine
    against TFDS's serial path (one split is generated in one process, ffmpeg free to use threads);
  * peak memory (RSS and PSS of the main process and its workers) at two clip counts;
  * the one-machine ceiling: CPU of the process every example passes through (the one that writes),
    per clip, from real pool builds through TFDS, and the clips/s and K700 hours it implies.

TFDS's Video feature runs the `ffmpeg` binary; without it the TFDS comparison is skipped (the
JSON says so) and the other figures are still measured.

Per-core figures run pinned to one core (ffmpeg inherits the pinning). Times are medians over
`--repeats`; the writer's CPU is the least of `--repeats` builds. The last line printed is one JSON
object; the headline is `--headline_size`.

  python benchmarks/build.py --work_dir /tmp/kinetics_build_bench
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

from absl import logging
import cv2
import tensorflow_datasets as tfds

import kinetics_tfds
from kinetics_tfds import annotations
from kinetics_tfds import clips
from kinetics_tfds import command
from kinetics_tfds import motion_clips
from kinetics_tfds import video
from kinetics_tfds.build import examples
from kinetics_tfds.build import parallel


@dataclasses.dataclass(frozen=True)
class Settings:
  work_dir: str = command.setting("", "Where clips are written and kept between runs; default a temp folder.")
  sizes: tuple[str, ...] = command.setting(("340x256", "640x360", "1280x720"), "Source sizes, WIDTHxHEIGHT.")
  headline_size: str = command.setting("340x256", "The size whose figures are the JSON's top-level keys.")
  seconds: float = command.setting(10.0, "Length of each clip (Kinetics clips are 10 s).")
  source_fps: float = command.setting(30.0, "Frame rate of the generated clips.")
  clips_per_size: int = command.setting(2, "Distinct clips per size.", lower_bound=1)
  repeats: int = command.setting(3, "Timed passes; medians are reported (the writer's CPU: the least).", lower_bound=1)
  fps: float = command.setting(25.0, "Output frame rate, as in the i3d_25fps_256 config.")
  short_side: int = command.setting(256, "Output short side.", lower_bound=1)
  jpeg_quality: int = command.setting(90, "Our JPEG quality.", lower_bound=1)
  ffmpeg_qscale: int = command.setting(
    2,
    "ffmpeg's -q:v for the same-quality TFDS run: 2 (its best with the default qmin) gives the "
    "bytes per frame nearest to libjpeg quality 90 (measured: 93%); 3 is 72%.",
  )
  workers: int = command.setting(0, "Workers for the whole-machine runs; 0: every core.", lower_bound=0)
  scaling_clips: int = command.setting(12, "Clips per pass in the scaling runs.", lower_bound=1)
  memory_clips: tuple[int, ...] = command.setting((8, 48), "Two clip counts for the peak-memory runs.")
  main_cpu_clips: tuple[int, ...] = command.setting(
    (4, 24), "Two clip counts of pool builds; their difference gives the writer's CPU per clip."
  )


command.define_flags(Settings, __name__)
_PROJECTION_CORES = 64
_K700_CLIPS = 644_000  # Every split's annotated clips (540,247 + 34,610 + 69,103); ~10% are missing.
_NO_FFMPEG = "skipped: TFDS's Video feature needs the ffmpeg binary (apt-get install ffmpeg, brew install ffmpeg)"


def make_clips(settings: Settings, folder: str, width: int, height: int, count: int) -> tuple[list[str], str]:
  """`count` clips of one size, H.264 when ffmpeg is there; returns (paths, codec)."""
  has_ffmpeg = shutil.which("ffmpeg") is not None
  codec = "h264 (libx264, crf 23)" if has_ffmpeg else "mpeg4 (OpenCV mp4v; no ffmpeg binary)"
  paths = []
  for i in range(count):
    path = os.path.join(folder, f"{width}x{height}_{i}.mp4")
    paths.append(path)
    if os.path.exists(path):
      continue
    kwargs = dict(seconds=settings.seconds, fps=settings.source_fps, width=width, height=height, seed=i)
    if not has_ffmpeg:
      motion_clips.write_clip(path, **kwargs)
      continue
    frames = motion_clips.write_clip(os.path.join(folder, "frames.avi"), **kwargs)  # Motion JPEG, near lossless.
    subprocess.run(
      [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-i",
        frames,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "medium",
        "-crf",
        "23",
        path,
      ],
      check=True,
    )
    os.remove(frames)
  return paths, codec


def task(settings: Settings, path: str) -> examples.Task:
  clip = annotations.Clip(os.path.basename(path)[:11], 0, 10, "bench", "train")
  return examples.Task(clip, clips.Located(path), settings.fps, settings.short_side, settings.jpeg_quality)


def record_writer(folder: str) -> examples.RecordWriter:
  """The pool workers' per-clip function, writing records below `folder`."""
  records = os.path.join(folder, "records")
  os.makedirs(records, exist_ok=True)
  return examples.RecordWriter(records)


def ours(settings: Settings, folder: str):
  """A path -> bytes of the clip's record function, writing records as a pool worker does."""
  writer = record_writer(folder)
  return lambda path: writer(task(settings, path)).record_size


def floor(settings: Settings, path: str) -> int:
  """Decode every frame; resize and JPEG-encode the ones nearest the output times; nothing else."""
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  step = capture.get(cv2.CAP_PROP_FPS) / settings.fps
  params = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality]
  size, kept, total, index = None, 0, 0, 0
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    while round(kept * step) == index:
      size = size or video.output_size(frame.shape[0], frame.shape[1], settings.short_side)
      if frame.shape[:2] != size:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
      total += len(cv2.imencode(".jpg", frame, params)[1])
      kept += 1
    index += 1
  capture.release()
  return total


def tfds_video(settings: Settings, width: int, height: int, encoding_format: str, quality_args: tuple[str, ...] = ()):
  """TFDS's Video feature doing the same fps and scale with ffmpeg; returns a path -> bytes function."""
  out_h, out_w = video.output_size(height, width, settings.short_side)
  feature = tfds.features.Video(
    shape=(None, None, None, 3),
    encoding_format=encoding_format,
    ffmpeg_extra_args=("-vf", f"fps={settings.fps:g},scale={out_w}:{out_h}") + quality_args,
  )
  return lambda path: sum(map(len, feature.encode_example(path)))


@contextlib.contextmanager
def one_core():
  """Pins this process, and what it starts, to one core: per-core figures, whatever threads run."""
  cores = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(cores)})
  try:
    yield
  finally:
    os.sched_setaffinity(0, cores)


def cpu_seconds() -> float:
  """CPU time of this process and of its reaped children (ffmpeg, pool workers)."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def seconds_per_clip(settings: Settings, fn, paths: list[str], clock=cpu_seconds) -> tuple[float, int]:
  """(median over repeats of the mean seconds per clip on `clock`, mean bytes per clip).

  Per-core figures count CPU time: other jobs on a shared machine slow the wall clock, not it.
  """
  fn(paths[0])  # Warm: page cache, lazy imports, ffmpeg's first start.
  times = []
  for _ in range(settings.repeats):
    start = clock()
    sizes = [fn(p) for p in paths]
    times.append((clock() - start) / len(paths))
  return statistics.median(times), round(statistics.mean(sizes))


def pool_rate(settings: Settings, folder: str, paths: list[str], num_workers: int) -> tuple[float, float]:
  """Median (clips/s on the wall clock, CPU seconds per clip) of the per-clip function through the pool.

  CPU is read from the live process tree as the last clip arrives: workers are the forkserver's
  children, so this process's RUSAGE_CHILDREN never sees them.
  """
  tasks = [task(settings, p) for p in paths]
  rates, cpu = [], []
  for _ in range(settings.repeats):
    start, start_cpu = time.perf_counter(), _tree_cpu_seconds()
    results = parallel.bounded_map(record_writer(folder), tasks, num_workers, worker_setup=video.use_one_thread)
    for done, _ in enumerate(results, 1):
      if done == len(tasks):
        end_cpu = _tree_cpu_seconds()
    rates.append(len(tasks) / (time.perf_counter() - start))
    cpu.append((end_cpu - start_cpu) / len(tasks))
  return statistics.median(rates), statistics.median(cpu)


def _tree_cpu_seconds() -> float:
  """User + system CPU seconds of this process and its live descendants."""
  total = 0
  for pid in _tree(os.getpid()):
    with contextlib.suppress(OSError):
      fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
      total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5).
  return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
  try:
    children = [
      int(c) for t in os.listdir(f"/proc/{pid}/task") for c in open(f"/proc/{pid}/task/{t}/children").read().split()
    ]
  except OSError:  # Gone while we looked.
    return []
  return [pid] + [d for c in children for d in _tree(c)]


def _memory_mb() -> tuple[float, float]:
  """(RSS, PSS) summed over this process and its descendants, in MB."""
  rss = pss = 0.0
  for pid in _tree(os.getpid()):
    with contextlib.suppress(OSError):
      rss += int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
      pss += next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:")) / 1024
  return rss, pss


def peak_memory_mb(
  settings: Settings, folder: str, paths: list[str], count: int, num_workers: int
) -> tuple[float, float]:
  """Peak (RSS, PSS) while `count` clips go through the pool and are dropped, as the writer would."""
  peak = [0.0, 0.0]
  done = threading.Event()

  def sample_memory():
    while not done.wait(0.02):
      peak[:] = map(max, peak, _memory_mb())

  sampler = threading.Thread(target=sample_memory)
  sampler.start()
  try:
    tasks = [task(settings, paths[i % len(paths)]) for i in range(count)]
    for _ in parallel.bounded_map(record_writer(folder), tasks, num_workers, worker_setup=video.use_one_thread):
      pass
  finally:
    done.set()
    sampler.join()
  return round(peak[0]), round(peak[1])


def build_cpu_seconds(settings: Settings, folder: str, paths: list[str], count: int, num_workers: int) -> float:
  """CPU seconds of this process (all its threads, not the workers) in a pool build of `count` clips.

  A real build through TFDS: a manual folder of links to `paths`, one class, the benchmark's output
  settings; the workers send serialised records and this process writes them.
  """
  manual = os.path.join(folder, f"manual_{count}")
  if not os.path.isdir(manual):
    rows = [annotations.Clip(f"bench{i:06d}", 0, 10, "bench", "train") for i in range(count)]
    os.makedirs(os.path.join(manual, "train"))
    for i, row in enumerate(rows):
      os.symlink(paths[i % len(paths)], os.path.join(manual, "train", f"{row.key}.mp4"))
    motion_clips.write_annotations(os.path.join(manual, "kinetics400"), "train", rows)
  config = kinetics_tfds.KineticsConfig(
    name="bench", fps=settings.fps, short_side=settings.short_side, jpeg_quality=settings.jpeg_quality, num_classes=1
  )
  with tempfile.TemporaryDirectory(dir=folder) as data_dir:
    dataset = tfds.builder("kinetics400", config=config, data_dir=data_dir, num_workers=num_workers)
    start = resource.getrusage(resource.RUSAGE_SELF)
    dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    end = resource.getrusage(resource.RUSAGE_SELF)
  return end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime


def main_cpu_seconds(settings: Settings, folder: str, paths: list[str], num_workers: int) -> dict[int, float]:
  """The writing process's CPU seconds by clip count: the least of `repeats` builds each, after a warm build.

  The least, not the median: noise (another process, a page fault) only adds CPU time.
  """
  build_cpu_seconds(settings, folder, paths, settings.main_cpu_clips[0], num_workers)  # Imports, forkserver, cache.
  return {
    n: min(build_cpu_seconds(settings, folder, paths, n, num_workers) for _ in range(settings.repeats))
    for n in settings.main_cpu_clips
  }


def main_cpu_ms_per_clip(cpu_by_clips: dict[int, float]) -> float:
  """The difference of two builds cancels start-up and imports; at a few clips it is within noise, and may be < 0."""
  (small, small_s), (large, large_s) = sorted(cpu_by_clips.items())
  return 1000 * (large_s - small_s) / (large - small)


def measure_size(settings: Settings, folder: str, size: str, workers: int) -> dict:
  width, height = map(int, size.split("x"))
  paths, codec = make_clips(settings, folder, width, height, settings.clips_per_size)
  runs = {"ours": ours(settings, folder), "floor": functools.partial(floor, settings)}
  has_ffmpeg = shutil.which("ffmpeg") is not None
  if has_ffmpeg:
    jpeg_same_q = ("-q:v", str(settings.ffmpeg_qscale))
    runs.update(
      tfds_png=tfds_video(settings, width, height, "png"),
      tfds_jpeg_default=tfds_video(settings, width, height, "jpeg"),
      tfds_jpeg_same_q=tfds_video(settings, width, height, "jpeg", jpeg_same_q),
    )
  else:
    logging.warning("%s: TFDS comparison %s.", size, _NO_FFMPEG)
  logging.info("%s: timing %s on one core.", size, ", ".join(runs))
  with one_core():
    per_core = {name: seconds_per_clip(settings, fn, paths) for name, fn in runs.items()}
  logging.info("%s: whole machine, %d workers.", size, workers)
  scaling_paths = [paths[i % len(paths)] for i in range(settings.scaling_clips)]
  with one_core():
    one_worker, one_worker_cpu = pool_rate(settings, folder, scaling_paths, 1)
  all_workers, all_workers_cpu = pool_rate(settings, folder, scaling_paths, workers)
  rate = {name: 1.0 / s for name, (s, _) in per_core.items()}
  result = {
    "codec": codec,
    "source_kbps": round(statistics.mean(os.path.getsize(p) for p in paths) * 8 / settings.seconds / 1000),
    "clips_per_s_per_core": round(rate["ours"], 3),
    "cpu_ms_per_clip": {name: round(s * 1000) for name, (s, _) in per_core.items()},
    "floor_clips_per_s_per_core": round(rate["floor"], 3),
    "ratio_to_floor": round(rate["ours"] / rate["floor"], 3),
    "one_worker_clips_per_s": round(one_worker, 3),
    "all_workers_clips_per_s": round(all_workers, 3),
    "scaling_efficiency": round(all_workers / (workers * one_worker), 3),
    "cpu_scaling_efficiency": round(one_worker_cpu / all_workers_cpu, 3),
    "bytes_per_clip": per_core["ours"][1],
    "bytes_per_clip_floor": per_core["floor"][1],
    "tfds_comparison": "done" if has_ffmpeg else _NO_FFMPEG,
  }
  if has_ffmpeg:
    logging.info("%s: TFDS's serial path on the whole machine.", size)
    tfds_serial_s, _ = seconds_per_clip(settings, runs["tfds_jpeg_same_q"], paths, clock=time.perf_counter)
    result.update(
      {
        "tfds_video_png_clips_per_s_per_core": round(rate["tfds_png"], 3),
        "tfds_video_jpeg_default_clips_per_s_per_core": round(rate["tfds_jpeg_default"], 3),
        "tfds_video_jpeg_clips_per_s_per_core": round(rate["tfds_jpeg_same_q"], 3),
        "speedup_vs_tfds_video_png": round(rate["ours"] / rate["tfds_png"], 2),
        "speedup_vs_tfds_video_jpeg_default": round(rate["ours"] / rate["tfds_jpeg_default"], 2),
        "speedup_vs_tfds_video_jpeg": round(rate["ours"] / rate["tfds_jpeg_same_q"], 2),
        "tfds_video_jpeg_serial_clips_per_s": round(1.0 / tfds_serial_s, 3),
        "speedup_whole_machine_vs_tfds": round(all_workers * tfds_serial_s, 2),
        "bytes_per_clip_tfds_png": per_core["tfds_png"][1],
        "bytes_per_clip_tfds_jpeg_default": per_core["tfds_jpeg_default"][1],
        "bytes_per_clip_tfds_jpeg_same_q": per_core["tfds_jpeg_same_q"][1],
      }
    )
  return result


def main(argv):
  del argv
  settings = command.from_flags(Settings)
  folder = settings.work_dir or tempfile.mkdtemp(prefix="kinetics_build_bench_")
  os.makedirs(folder, exist_ok=True)
  workers = settings.workers or parallel.default_workers()
  load_before = os.getloadavg()[0]
  by_size = {size: measure_size(settings, folder, size, workers) for size in settings.sizes}
  headline_paths, _ = make_clips(
    settings, folder, *map(int, settings.headline_size.split("x")), settings.clips_per_size
  )
  memory = {n: peak_memory_mb(settings, folder, headline_paths, n, workers) for n in settings.memory_clips}
  main_cpu_s = main_cpu_seconds(settings, folder, headline_paths, workers)
  main_cpu_ms = main_cpu_ms_per_clip(main_cpu_s)
  result = dict(by_size[settings.headline_size])
  # Where the writer's CPU per clip is below what two builds can resolve, it bounds nothing.
  max_clips_per_s = 1000 / main_cpu_ms if main_cpu_ms > 0 else math.inf
  clips_per_s_64_cores = min(_PROJECTION_CORES * result["clips_per_s_per_core"], max_clips_per_s)
  result.update(
    main_cpu_ms_per_clip=round(main_cpu_ms, 2),
    main_cpu_s_by_clips={n: round(s, 3) for n, s in main_cpu_s.items()},
    max_clips_per_s_one_machine=round(max_clips_per_s, 1) if main_cpu_ms > 0 else None,
    projected_hours_k700_64_cores=round(_K700_CLIPS / clips_per_s_64_cores / 3600, 2),
    projection_basis=(
      f"{_K700_CLIPS} clips at min({_PROJECTION_CORES} x clips_per_s_per_core, max_clips_per_s_one_machine), "
      f"{settings.headline_size} sources"
    ),
    headline_size=settings.headline_size,
    peak_rss_mb=max(rss for rss, _ in memory.values()),
    peak_rss_mb_by_clips={n: rss for n, (rss, _) in memory.items()},
    peak_pss_mb_by_clips={n: pss for n, (_, pss) in memory.items()},
    workers=workers,
    cores=len(os.sched_getaffinity(0)),
    load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    per_core_basis="CPU time (self + children) pinned to one core; scaling on the wall clock",
    clip_seconds=settings.seconds,
    source_fps=settings.source_fps,
    output=f"{settings.fps:g} fps, short side {settings.short_side}, JPEG q{settings.jpeg_quality}",
    ffmpeg_same_q_args=f"-q:v {settings.ffmpeg_qscale}",
    clips_per_size=settings.clips_per_size,
    repeats=settings.repeats,
    by_size=by_size,
  )
  print(json.dumps(result))


if __name__ == "__main__":
  command.run(main, __name__)
