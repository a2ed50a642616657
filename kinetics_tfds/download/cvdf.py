"""The CVDF mirror (github cvdfoundation/kinetics-dataset): shard tarballs and annotation CSVs.

Layout: `{base}/{version}/{split}/k{version}_{split}_path.txt` lists shard URLs,
annotations are `{base}/{version}/annotations/{split}.csv`, and K400 has
`{base}/400/replacement_for_corrupted_k400.tgz`. As the mirror's own scripts do, a split's shards
are extracted into `manual_dir/{split}/`, the replacement into `manual_dir/replacement/`, CSVs go
to `manual_dir/annotations/`. Use one manual folder per version.

The lists hold absolute URLs on the official mirror. They are re-rooted onto the base URL given
(`--cvdf_base_url`), so any server with the mirror's layout (a local copy, a test) serves
everything; a relative line is resolved against its list's URL. A line on any other host is refused and
reported, never fetched: a list cannot send the downloader elsewhere.

Archives, `.part` files, cached lists and one `.done` marker per extracted shard live under
`manual_dir/.download_state/`; a rerun fetches only what has no marker. The replacement tarball
is fetched with K400's train split, the split whose corrupt videos it replaces.
"""

import dataclasses
import os
import pathlib
import re
import tarfile
import urllib.parse
import zlib

from kinetics_tfds import annotations
from kinetics_tfds import clips
from kinetics_tfds import subsets
from kinetics_tfds.download import UnsafeName
from kinetics_tfds.download import archives
from kinetics_tfds.download import errors
from kinetics_tfds.download import http
from kinetics_tfds.download import pool
from kinetics_tfds.download import report as report_lib
from kinetics_tfds.download import state_path

OFFICIAL_BASE_URL = "https://s3.amazonaws.com/kinetics"
VERSIONS = ("400", "600", "700_2020")
SPLITS = tuple(annotations.CVDF_FOLDERS.values())  # The mirror's folder names: train, val, test.
_DONE = ".done"
_STATE_SUFFIXES = (_DONE, http.PART)  # The downloader's own files beside an archive: no remote file is named so.
_OFFICIAL_PREFIX = re.compile(r"^https?://s3\.amazonaws\.com/kinetics/")


@dataclasses.dataclass(frozen=True)
class Item:
  """One file on the mirror: an archive to extract into `folder`, or a CSV to copy there."""

  key: str  # Path below the base URL, unescaped: the report key and the state file's name.
  url: str
  folder: str  # Below the manual folder.

  @property
  def is_archive(self) -> bool:
    return not self.key.endswith(".csv")


def _item(base_url: str, url: str, folder: str) -> Item:
  prefix = base_url.rstrip("/") + "/"
  relative = url[len(prefix) :] if url.startswith(prefix) else urllib.parse.urlsplit(url).path.lstrip("/")
  return Item(urllib.parse.unquote(relative), url, folder)


def _rebase(line: str, list_url: str, base_url: str) -> str:
  """The shard's URL below base_url (see the module docstring)."""
  url = urllib.parse.urljoin(list_url, line)
  return _OFFICIAL_PREFIX.sub(base_url.rstrip("/") + "/", url)


def _shard_urls(
  manual_dir: pathlib.Path, list_url: str, base_url: str, policy: errors.RetryPolicy, dry_run: bool
) -> list[str]:
  """The shard URLs a list names; the list is cached in the state folder unless dry_run."""
  cached = state_path(manual_dir, _item(base_url, list_url, "").key)
  if cached.exists():
    listing = cached.read_text()
  elif dry_run:
    listing = http.read_text(list_url, policy)
  else:
    http.fetch(list_url, cached, policy, max_bytes=http.MAX_LIST_BYTES)
    listing = cached.read_text()
  return [_rebase(line, list_url, base_url) for line in filter(None, map(str.strip, listing.splitlines()))]


def class_of(url: str) -> str:
  """The class a per-class archive holds (K600: `{split}/{label}.tar.gz`)."""
  name = http.file_name(url)
  return name[: -len(".tar.gz")] if name.endswith(".tar.gz") else os.path.splitext(name)[0]


def _of_classes(urls: list[str], classes: tuple[str, ...], list_url: str) -> list[str]:
  """The archives of these classes; an error where the shards are not per class (K400, K700-2020)."""
  folders = {folder: label for label in classes for folder in clips.label_folder_names(label)}
  found = {folders[class_of(url)]: url for url in urls if class_of(url) in folders}
  missing = sorted(set(classes) - set(found))
  if missing:
    raise subsets.SelectionError(
      f"{list_url} has no archive for {len(missing)} of the classes (e.g. {missing[0]!r}): this mirror's "
      "shards are per class only for K600; fetch a subset with --source=youtube --classes"
    )
  return sorted(found.values())


def plan(
  manual_dir: pathlib.Path,
  version: str,
  splits: list[str],
  base_url: str,
  policy: errors.RetryPolicy,
  dry_run: bool,
  report: report_lib.Report,
  classes: tuple[str, ...] | None = None,
) -> list[Item]:
  """Everything the mirror holds for these splits, or only the archives of `classes`.

  A list that cannot be read is reported.
  """
  base_url = base_url.rstrip("/")
  items = []
  for split in splits:
    items.append(_item(base_url, f"{base_url}/{version}/annotations/{split}.csv", "annotations"))
    list_url = f"{base_url}/{version}/{split}/k{version}_{split}_path.txt"
    try:
      urls = _shard_urls(manual_dir, list_url, base_url, policy, dry_run)
    except Exception as error:  # pylint: disable=broad-except
      report.add(_item(base_url, list_url, split).key, "failed", errors.classify(error))
      continue
    if classes is not None:
      urls = _of_classes(urls, classes, list_url)
    items.extend(_item(base_url, url, split) for url in urls)
  if version == "400" and "train" in splits and classes is None:
    items.append(_item(base_url, f"{base_url}/400/replacement_for_corrupted_k400.tgz", "replacement"))
  return [
    item
    for item in {item.key: item for item in items}.values()  # A repeated line is fetched once.
    if _is_allowed(item, base_url, manual_dir, report)
  ]


def _is_allowed(item: Item, base_url: str, manual_dir: pathlib.Path, report: report_lib.Report) -> bool:
  """False, with the item reported, when a list line names another host than the mirror's (a list must not send
  the downloader elsewhere), a file outside the state folder, or one named as the downloader's own `.part` and
  `.done` files are (`x.done` would mark shard `x` done, so it would never be fetched)."""
  if urllib.parse.urlsplit(item.url)[:2] != urllib.parse.urlsplit(base_url)[:2]:
    report.add(item.key, "refused", "other-host")
    return False
  try:
    path = state_path(manual_dir, item.key)
  except UnsafeName:
    report.add(item.key, "refused", "unsafe-name")
    return False
  if path.suffix in _STATE_SUFFIXES:
    report.add(item.key, "refused", "reserved-name")
    return False
  return True


def _is_done(item: Item, manual_dir: pathlib.Path) -> bool:
  if item.is_archive:
    return _done_marker(item, manual_dir).exists()
  return (manual_dir / item.folder / http.file_name(item.url)).exists()


def _done_marker(item: Item, manual_dir: pathlib.Path) -> pathlib.Path:
  archive = state_path(manual_dir, item.key)
  return archive.with_name(archive.name + _DONE)


def _fetch(item: Item, manual_dir: pathlib.Path, policy: errors.RetryPolicy, report: report_lib.Report) -> None:
  """Downloads one item and, for an archive, extracts it, marks it done and deletes it."""
  if _is_done(item, manual_dir):
    report.add(item.key, "skipped", "done")
    return
  try:
    if not item.is_archive:
      size = http.fetch(item.url, manual_dir / item.folder / http.file_name(item.url), policy)
      report.add(item.key, "ok", size=size)
      return
    archive = state_path(manual_dir, item.key)
    size = archive.stat().st_size if archive.exists() else http.fetch(item.url, archive, policy)
    try:
      refused = archives.extract(archive, manual_dir / item.folder)
    except (tarfile.TarError, EOFError, zlib.error):
      archive.unlink()  # Fetch it again next run rather than fail the same way.
      raise
    for member, reason in refused:
      report.add(f"{item.key}:{member}", "refused", reason)
    _done_marker(item, manual_dir).touch()
    archive.unlink()
    report.add(item.key, "ok", size=size)
  except Exception as error:  # pylint: disable=broad-except
    report.add(item.key, "failed", errors.classify(error))


def _plan_one(item: Item, policy: errors.RetryPolicy, report: report_lib.Report) -> None:
  try:
    size = http.content_length(item.url, policy)
  except Exception as error:  # pylint: disable=broad-except
    report.add(item.key, "failed", errors.classify(error))
    return
  report.add(item.key, "planned", size=size)


def run(
  manual_dir: pathlib.Path,
  version: str,
  splits: list[str],
  base_url: str,
  num_workers: int,
  policy: errors.RetryPolicy,
  dry_run: bool,
  report: report_lib.Report,
  classes: tuple[str, ...] | None = None,
) -> None:
  """Fills manual_dir from the mirror (only `classes`, if given).

  With dry_run it prints each missing file's URL and size instead.
  """
  items = plan(manual_dir, version, splits, base_url, policy, dry_run, report, classes)
  if dry_run:
    todo = [item for item in items if not _is_done(item, manual_dir)]
    pool.run([lambda item=item: _plan_one(item, policy, report) for item in todo], num_workers, "file")
    for item in todo:
      row = report.previous(item.key)
      if row["status"] == "planned":
        print(f"{item.url}\t{row['bytes']}")
  else:
    pool.run([lambda item=item: _fetch(item, manual_dir, policy, report) for item in items], num_workers, "file")
