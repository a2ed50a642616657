"""Clips of an annotation file fetched with yt-dlp, for what the CVDF mirror lacks.

Each clip is saved as `{folder}/{youtube_id}_{start:06d}_{end:06d}.mp4` below the manual folder, in
the CVDF folder of the split its file name mentions (`val` for `kinetics400_val.csv`), else `clips/`.
With an ffmpeg binary yt-dlp fetches only the segment (`download_ranges`), where the site allows
it; otherwise the whole video is fetched and cut (segment.py). Work happens in
`.download_state/youtube/{key}/`, where yt-dlp resumes its `.part` files; the clip is moved into
place only after it decodes and lasts its segment, so a clip file that exists is finished.
Rerunning skips every clip already below the manual folder (any name kinetics_tfds.clips finds),
and, unless asked to retry them, clips whose last attempt failed for good (removed, private, ...).
"""

import pathlib
import re
import shutil

from absl import logging
import yt_dlp

from kinetics_tfds import annotations
from kinetics_tfds import clips as clips_lib
from kinetics_tfds import subsets
from kinetics_tfds.download import STATE_DIR
from kinetics_tfds.download import errors
from kinetics_tfds.download import http
from kinetics_tfds.download import pool
from kinetics_tfds.download import report as report_lib
from kinetics_tfds.download import segment

URL_TEMPLATE = "https://www.youtube.com/watch?v={youtube_id}"
_UNKNOWN_SPLIT_FOLDER = "clips"  # For a file whose name says no split; the builders find clips anywhere.
_NO_PARTIAL = "cannot be partially downloaded"


class _Logger:
  """yt-dlp's messages at absl verbosity 1: each failure is reported once, by the report."""

  def debug(self, message: str) -> None:
    logging.vlog(1, "yt-dlp: %s", message)

  info = warning = error = debug


def _split(path: pathlib.Path) -> str:
  """The TFDS split a file name mentions (`kinetics400_val_2017.csv` -> validation), else ''."""
  splits = filter(None, map(annotations.split_named, re.split(r"[^a-z]+", path.stem.lower())))
  return next(splits, "")


def read_clips(path: pathlib.Path, report: report_lib.Report) -> list[annotations.Clip]:
  """The file's clips, once per key; malformed rows are reported as failed."""
  if not path.is_file():
    raise annotations.AnnotationError(
      f"--annotations={path}: no such file; give a Kinetics CSV such as kinetics400/validate.csv"
    )
  parsed, rejected = annotations.parse_split(str(path), path.read_bytes(), _split(path))
  for row in rejected:
    report.add(row.key, "failed", "malformed-row")
    logging.warning("%s: %s", row.key, row.reason)
  return list({clip.key: clip for clip in parsed}.values())


def _yt_dlp(url: str, work: pathlib.Path, section: tuple[int, int] | None) -> tuple[pathlib.Path, dict]:
  """Downloads url (only `section`, if given) into work; returns the file and yt-dlp's info."""
  options = {
    "outtmpl": str(work / "source.%(ext)s"),
    "format": "b[ext=mp4]/b",  # One file with picture and sound: needs no ffmpeg to merge.
    "noplaylist": True,
    "quiet": True,
    "noprogress": True,
    "logger": _Logger(),
    "retries": 0,  # Retrying, with backoff, is the caller's RetryPolicy.
    "extractor_retries": 0,
    "socket_timeout": http.TIMEOUT_S,
  }
  if section:
    options["download_ranges"] = yt_dlp.utils.download_range_func(None, [section])
    options["force_keyframes_at_cuts"] = True
  with yt_dlp.YoutubeDL(options) as ydl:
    info = ydl.extract_info(url, download=True)
  return pathlib.Path(info["requested_downloads"][0]["filepath"]), info


def _download_once(clip: annotations.Clip, url: str, work: pathlib.Path, ffmpeg: str | None) -> pathlib.Path:
  """One attempt: the finished, checked clip in work."""
  segment_s = (clip.time_start, clip.time_end)
  if ffmpeg:
    try:
      path, info = _yt_dlp(url, work, segment_s)
      segment.check(path, *segment_s, info.get("duration"))
      return path
    except yt_dlp.utils.DownloadError as error:
      if _NO_PARTIAL not in str(error):
        raise
  source, _ = _yt_dlp(url, work, None)
  source_duration = segment.duration_s(source)
  path = work / "clip.mp4"
  segment.cut(source, path, *segment_s, ffmpeg)
  segment.check(path, *segment_s, source_duration)
  return path


def _download(
  clip: annotations.Clip,
  manual_dir: pathlib.Path,
  url_template: str,
  ffmpeg: str | None,
  policy: errors.RetryPolicy,
  report: report_lib.Report,
) -> None:
  work = manual_dir / STATE_DIR / "youtube" / clip.key
  work.mkdir(parents=True, exist_ok=True)
  url = url_template.format(youtube_id=clip.youtube_id)
  try:
    path = policy.call(lambda: _download_once(clip, url, work, ffmpeg), clip.key)
  except Exception as error:  # pylint: disable=broad-except
    report.add(clip.key, "failed", errors.classify(error))
    logging.info("%s: %s", clip.key, error)
    return
  folder = annotations.CVDF_FOLDERS.get(clip.split, _UNKNOWN_SPLIT_FOLDER)
  dest = manual_dir / folder / f"{clip.key}{path.suffix}"
  dest.parent.mkdir(parents=True, exist_ok=True)
  path.replace(dest)
  shutil.rmtree(work)
  report.add(clip.key, "ok", size=dest.stat().st_size)


def select(
  clips: list[annotations.Clip], classes: tuple[str, ...] | None, max_per_class: int | None
) -> list[annotations.Clip]:
  """The clips of a subset, chosen as the builder's KineticsConfig(classes=, max_per_class=) chooses them."""
  if classes is None and max_per_class is None:
    return clips
  labels = sorted({c.label for c in clips if c.label is not None})
  kept = subsets.select({"all": clips}, labels, keep_classes=classes, max_per_class=max_per_class)
  return kept.clips["all"]


def run(
  manual_dir: pathlib.Path,
  annotation_file: pathlib.Path,
  url_template: str,
  num_workers: int,
  policy: errors.RetryPolicy,
  retry_failed: bool,
  dry_run: bool,
  report: report_lib.Report,
  classes: tuple[str, ...] | None = None,
  max_per_class: int | None = None,
) -> None:
  """Fetches the file's clips (of the subset, if given) missing below manual_dir; with dry_run prints their URLs."""
  by_key, by_id = clips_lib.scan(str(manual_dir)) if manual_dir.exists() else ({}, {})
  todo = []
  for clip in select(read_clips(annotation_file, report), classes, max_per_class):
    previous = report.previous(clip.key) or {}
    if clip.key in by_key or clip.youtube_id in by_id:
      report.add(clip.key, "skipped", "present")
    elif previous.get("status") == "failed" and not errors.is_transient(previous["reason"]) and not retry_failed:
      report.add(clip.key, "skipped", "failed-before")
    else:
      todo.append(clip)
  if dry_run:
    for clip in todo:
      report.add(clip.key, "planned")
      print(url_template.format(youtube_id=clip.youtube_id), clip.time_start, clip.time_end, sep="\t")
    return
  ffmpeg = shutil.which("ffmpeg")
  logging.info("%d clips to fetch; cutting with %s", len(todo), ffmpeg or "OpenCV (no ffmpeg found)")
  pool.run(
    [lambda clip=clip: _download(clip, manual_dir, url_template, ffmpeg, policy, report) for clip in todo],
    num_workers,
    "clip",
  )
