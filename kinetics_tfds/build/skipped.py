"""`skipped_clips.csv`: the clips a build left out and why, beside the dataset; `kinetics-report` reads it."""

from __future__ import annotations

import collections
from collections.abc import Sequence
import csv
import io

from absl import logging
import tensorflow_datasets as tfds

from kinetics_tfds import annotations

FILE = "skipped_clips.csv"


def csv_line(fields: Sequence[str]) -> str:
  """One CSV line, without its end. csv quotes a field that holds a character of the line end it writes: with
  CR LF, a key holding either (a JSON file's youtube_id may) stays one field when read back."""
  out = io.StringIO()
  csv.writer(out, lineterminator="\r\n").writerow(fields)
  return out.getvalue()[:-2]


def read_rows(path: tfds.core.Path) -> list[annotations.Rejected]:
  """The (split, key, reason) rows of a CSV file. Lines end at LF only (csv's newline=""): str.splitlines would
  also split a malformed row's key at U+001C-U+001E, U+0085 or U+2028."""
  return [annotations.Rejected(*row) for row in csv.reader(io.StringIO(path.read_bytes().decode(), newline=""))]


def write(data_dir: str, skipped: list[annotations.Rejected]) -> None:
  """Writes the skipped clips into a version folder, sorted, and logs their counts by split and reason."""
  rows = [[row.split, row.key, row.reason] for row in sorted(skipped, key=lambda r: (r.split, r.key, r.reason))]
  text = "".join(csv_line(fields) + "\n" for fields in [["split", "key", "reason"], *rows])
  (tfds.core.Path(data_dir) / FILE).write_bytes(text.encode())
  counts = collections.Counter((r.split, r.reason.split(":")[0]) for r in skipped)
  for (split, reason), count in sorted(counts.items()):
    logging.info("Skipped %s: %d clips, %s.", split, count, reason)
  logging.info("%d clips skipped in all; see %s.", len(skipped), FILE)


def read(data_dir: str) -> list[annotations.Rejected]:
  """The skipped clips a build recorded in its version folder."""
  return read_rows(tfds.core.Path(data_dir) / FILE)[1:]
