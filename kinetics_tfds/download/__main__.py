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

import dataclasses
import os
import pathlib
import sys

from absl import app

from kinetics_tfds import command
from kinetics_tfds import subsets
from kinetics_tfds.download import cvdf
from kinetics_tfds.download import errors
from kinetics_tfds.download import report as report_lib
from kinetics_tfds.download import youtube


@dataclasses.dataclass(frozen=True)
class Settings:
  source: str = command.setting(
    None,
    "cvdf: the mirror's tarballs; youtube: the clips of --annotations missing so far.",
    ("cvdf", "youtube"),
    required=True,
  )
  manual_dir: str = command.setting(None, "The manual folder to fill (one per Kinetics version).", required=True)
  version: str = command.setting("400", "Kinetics version on the CVDF mirror.", tuple(cvdf.VERSIONS))
  split: tuple[str, ...] = command.setting(
    ("train,val,test",), "CVDF splits to fetch; repeat the flag or give a comma list.", repeated=True
  )
  cvdf_base_url: str = command.setting(
    cvdf.OFFICIAL_BASE_URL, "Root of the CVDF mirror layout; shard URLs are re-rooted onto it."
  )
  annotations: str | None = command.setting(None, "For --source=youtube: a Kinetics CSV whose clips to fetch.")
  youtube_url_template: str = command.setting(
    youtube.URL_TEMPLATE, "Video URL, with {youtube_id} filled in; any site yt-dlp reads."
  )
  retry_failed: bool = command.setting(
    False,
    "For --source=youtube: also retry clips the report lists as failed for good (removed, private, http-404, ...).",
  )
  num_workers: int = command.setting(4, "Files downloaded at once.", lower_bound=1)
  retries: int = command.setting(5, "Attempts per file on 5xx, 429 and network errors.", lower_bound=1)
  retry_base_delay_s: float = command.setting(2.0, "First wait before a retry; doubles on each further attempt.")
  deadline_s: float = command.setting(
    errors.RetryPolicy.deadline_s,
    "Longest one attempt at one file may take; a server that sends too slowly fails it, and it is retried.",
    lower_bound=1,
  )
  classes: str | None = command.setting(
    None,
    "Only these classes: comma-separated names, or a file of one name a line. With --source=cvdf only "
    "the class archives (K600's mirror has them); with youtube the clips of those classes.",
  )
  max_per_class: int | None = command.setting(
    None,
    "For --source=youtube: at most N clips per class, chosen by key hash as the "
    "builder's KineticsConfig(max_per_class=N) chooses them.",
    lower_bound=1,
  )
  dry_run: bool = command.setting(
    False, "Print what would be fetched (with sizes from HEAD requests) and write nothing."
  )


command.define_flags(Settings, __name__)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = command.from_flags(Settings)
  manual_dir = pathlib.Path(settings.manual_dir).expanduser()
  policy = errors.RetryPolicy(settings.retries, settings.retry_base_delay_s, settings.deadline_s)
  report = report_lib.Report(None if settings.dry_run else manual_dir / report_lib.FILE_NAME)
  try:
    _download(settings, manual_dir, policy, report)
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
    where = "the warnings above" if settings.dry_run else manual_dir / report_lib.FILE_NAME
    sys.exit(
      f"{failed} items failed, with their reasons in {where}; a rerun retries those that may pass (network, 5xx, 429)."
    )


def _download(
  settings: Settings, manual_dir: pathlib.Path, policy: errors.RetryPolicy, report: report_lib.Report
) -> None:
  classes = _classes(settings.classes)
  if settings.source == "cvdf":
    if settings.max_per_class:
      raise app.UsageError("--max_per_class: the mirror's archives hold whole classes; use --source=youtube")
    splits = [s for value in settings.split for s in value.split(",") if s]
    unknown = set(splits) - set(cvdf.SPLITS)
    if unknown:
      raise app.UsageError(f"--split: unknown {sorted(unknown)}, expected some of {cvdf.SPLITS}")
    try:
      cvdf.run(
        manual_dir,
        settings.version,
        splits,
        settings.cvdf_base_url,
        settings.num_workers,
        policy,
        settings.dry_run,
        report,
        classes,
      )
    except subsets.SelectionError as error:  # Shards that are not per class.
      raise app.UsageError(f"--classes: {error}") from None
  else:
    if not settings.annotations:
      raise app.UsageError("--source=youtube needs --annotations")
    try:
      youtube.run(
        manual_dir,
        pathlib.Path(settings.annotations).expanduser(),
        settings.youtube_url_template,
        settings.num_workers,
        policy,
        settings.retry_failed,
        settings.dry_run,
        report,
        classes,
        settings.max_per_class,
      )
    except subsets.SelectionError as error:  # A class the annotation file does not name.
      raise app.UsageError(f"--classes/--max_per_class: {error}") from None


def _classes(value: str | None) -> tuple[str, ...] | None:
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
