"""`download_report.csv`: one row per shard, annotation file, clip or refused archive member.

Rows are merged with the file an earlier run left (by key), so the report describes the whole
manual folder after a CVDF run, a YouTube top-up and any reruns. Things found already done are
counted but keep their earlier row.
"""

import collections
import csv
import json
import os
import pathlib
import threading

from absl import logging

FILE_NAME = "download_report.csv"
FIELDS = ("key", "status", "reason", "bytes")


class Report:
  """Thread-safe collector of outcomes; `close` writes the CSV and prints the counts."""

  def __init__(self, path: pathlib.Path | None):
    self._path = path
    self._rows: dict[str, dict[str, str]] = {}
    if path is not None and path.exists():
      with open(path, newline="", encoding="utf-8") as f:
        self._rows = {row["key"]: row for row in csv.DictReader(f)}
    self.counts: collections.Counter = collections.Counter()
    self._lock = threading.Lock()

  def previous(self, key: str) -> dict[str, str] | None:
    """The key's row from an earlier run (or this one), if any."""
    with self._lock:
      return self._rows.get(key)

  def add(self, key: str, status: str, reason: str = "", size: int | None = None) -> None:
    """Records one outcome: ok, skipped (done before), failed, refused or planned (dry run)."""
    with self._lock:
      self.counts[status] += 1
      if reason:
        self.counts[f"{status}:{reason}"] += 1
      if size:
        self.counts[f"{status}_bytes"] += size
      if status != "skipped":
        self._rows[key] = {"key": key, "status": status, "reason": reason, "bytes": "" if size is None else str(size)}
    if status in ("failed", "refused"):
      logging.warning("%s %s: %s", status, key, reason)

  def close(self) -> collections.Counter:
    """Writes the merged CSV (atomically) unless this is a dry run, and prints the counts as JSON."""
    if self._path is not None:
      self._path.parent.mkdir(parents=True, exist_ok=True)
      tmp = self._path.with_name(self._path.name + ".tmp")
      with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(self._rows[key] for key in sorted(self._rows))
      os.replace(tmp, self._path)
    print(json.dumps(dict(sorted(self.counts.items()))), flush=True)
    return self.counts
