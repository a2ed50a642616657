r"""Fills a manual folder with Kinetics clips: `python -m kinetics_tfds.download --help`.

  # The CVDF mirror's K400 validation shards and annotations:
  python -m kinetics_tfds.download --source=cvdf --version=400 --split=val --manual_dir=~/k400
  # Then the clips of a DeepMind annotation file that are still missing, from YouTube:
  python -m kinetics_tfds.download --source=youtube --annotations=kinetics400/validate.csv \
      --manual_dir=~/k400
  # Only what a subset needs (the builder's KineticsConfig(classes=..., max_per_class=...)):
  python -m kinetics_tfds.download --source=youtube --annotations=kinetics400/train.csv \
      --classes="abseiling,air drumming" --max_per_class=20 --manual_dir=~/k400_small

Prints one JSON line of counts at the end; `download_report.csv` in the manual folder has a row
per shard, annotation file, clip and refused archive member. Exits with status 1 when any item
failed, saying how many.
"""

import os
import pathlib
import sys

from absl import app
from absl import flags

from kinetics_tfds import command
from kinetics_tfds import subsets
from kinetics_tfds.download import cvdf
from kinetics_tfds.download import errors
from kinetics_tfds.download import report as report_lib
from kinetics_tfds.download import youtube

_SOURCE = flags.DEFINE_enum(
  "source",
  None,
  ["cvdf", "youtube"],
  "cvdf: the mirror's tarballs; youtube: the clips of --annotations missing so far.",
)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The manual folder to fill (one per Kinetics version).")
_VERSION = flags.DEFINE_enum("version", "400", list(cvdf.VERSIONS), "Kinetics version on the CVDF mirror.")
_SPLIT = flags.DEFINE_multi_string(
  "split", ["train,val,test"], "CVDF splits to fetch; repeat the flag or give a comma list."
)
_CVDF_BASE_URL = flags.DEFINE_string(
  "cvdf_base_url", cvdf.OFFICIAL_BASE_URL, "Root of the CVDF mirror layout; shard URLs are re-rooted onto it."
)
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "For --source=youtube: a Kinetics CSV whose clips to fetch.")
_URL_TEMPLATE = flags.DEFINE_string(
  "youtube_url_template", youtube.URL_TEMPLATE, "Video URL, with {youtube_id} filled in; any site yt-dlp reads."
)
_RETRY_FAILED = flags.DEFINE_bool(
  "retry_failed",
  False,
  "For --source=youtube: also retry clips the report lists as failed for good (removed, private, http-404, ...).",
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 4, "Files downloaded at once.", lower_bound=1)
_RETRIES = flags.DEFINE_integer("retries", 5, "Attempts per file on 5xx, 429 and network errors.", lower_bound=1)
_RETRY_DELAY = flags.DEFINE_float(
  "retry_base_delay_s", 2.0, "First wait before a retry; doubles on each further attempt."
)
_DEADLINE = flags.DEFINE_float(
  "deadline_s",
  errors.RetryPolicy.deadline_s,
  "Longest one attempt at one file may take; a server that sends too slowly fails it, and it is retried.",
  lower_bound=1,
)
_CLASSES = flags.DEFINE_string(
  "classes",
  None,
  "Only these classes: comma-separated names, or a file of one name a line. With --source=cvdf only "
  "the class archives (K600's mirror has them); with youtube the clips of those classes.",
)
_MAX_PER_CLASS = flags.DEFINE_integer(
  "max_per_class",
  None,
  "For --source=youtube: at most N clips per class, chosen by key hash as the "
  "builder's KineticsConfig(max_per_class=N) chooses them.",
  lower_bound=1,
)
_DRY_RUN = flags.DEFINE_bool(
  "dry_run", False, "Print what would be fetched (with sizes from HEAD requests) and write nothing."
)

flags.mark_flags_as_required(["source", "manual_dir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  manual_dir = pathlib.Path(_MANUAL_DIR.value).expanduser()
  policy = errors.RetryPolicy(_RETRIES.value, _RETRY_DELAY.value, _DEADLINE.value)
  report = report_lib.Report(None if _DRY_RUN.value else manual_dir / report_lib.FILE_NAME)
  try:
    _download(manual_dir, policy, report)
  except KeyboardInterrupt:
    report.close()
    print(
      f"Interrupted: what was done is in {manual_dir / report_lib.FILE_NAME}; a rerun resumes the rest.",
      file=sys.stderr,
      flush=True,
    )
    # Downloads still running on their threads cannot be stopped, and the interpreter would wait for them at
    # exit: leave now. Their .part files are resumed by the rerun.
    os._exit(130)
  failed = report.close()["failed"]
  if failed:
    where = "the warnings above" if _DRY_RUN.value else manual_dir / report_lib.FILE_NAME
    sys.exit(
      f"{failed} items failed, with their reasons in {where}; a rerun retries those that may pass (network, 5xx, 429)."
    )


def _download(manual_dir: pathlib.Path, policy: errors.RetryPolicy, report: report_lib.Report) -> None:
  classes = _classes()
  if _SOURCE.value == "cvdf":
    if _MAX_PER_CLASS.value:
      raise app.UsageError("--max_per_class: the mirror's archives hold whole classes; use --source=youtube")
    splits = [s for value in _SPLIT.value for s in value.split(",") if s]
    unknown = set(splits) - set(cvdf.SPLITS)
    if unknown:
      raise app.UsageError(f"--split: unknown {sorted(unknown)}, expected some of {cvdf.SPLITS}")
    try:
      cvdf.run(
        manual_dir,
        _VERSION.value,
        splits,
        _CVDF_BASE_URL.value,
        _NUM_WORKERS.value,
        policy,
        _DRY_RUN.value,
        report,
        classes,
      )
    except subsets.SelectionError as error:  # Shards that are not per class.
      raise app.UsageError(f"--classes: {error}") from None
  else:
    if not _ANNOTATIONS.value:
      raise app.UsageError("--source=youtube needs --annotations")
    try:
      youtube.run(
        manual_dir,
        pathlib.Path(_ANNOTATIONS.value).expanduser(),
        _URL_TEMPLATE.value,
        _NUM_WORKERS.value,
        policy,
        _RETRY_FAILED.value,
        _DRY_RUN.value,
        report,
        classes,
        _MAX_PER_CLASS.value,
      )
    except subsets.SelectionError as error:  # A class the annotation file does not name.
      raise app.UsageError(f"--classes/--max_per_class: {error}") from None


def _classes() -> tuple[str, ...] | None:
  value = _CLASSES.value
  if value is None:
    return None
  if pathlib.Path(value).expanduser().is_file():
    return subsets.read_names(value)
  return tuple(name.strip() for name in value.split(",") if name.strip())


def run_main() -> None:
  """`python -m kinetics_tfds.download`, installed as `kinetics-download`."""
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
