"""Resumable, size-checked HTTP downloads with urllib (no extra dependency).

A download goes to `{dest}.part` and is renamed only once its size matches what the server
announced, so an existing `dest` is always complete and a `.part` file is resumed with a Range
request. Transient failures (5xx, 429, dropped connections) are retried by the caller's policy.
"""

import os
import pathlib
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request

from kinetics_tfds.download import errors

TIMEOUT_S = 60
PART = ".part"  # Suffix of a download in progress.
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class IncompleteDownload(IOError):
  """The body was shorter or longer than announced; the retry resumes from what arrived."""


def quote_url(url: str) -> str:
  """Escapes spaces and other unsafe characters (CVDF lists hold raw K600 class names)."""
  return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def file_name(url: str) -> str:
  """The unescaped last path component: the archive's name on disk."""
  return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def read_text(url: str, policy: errors.RetryPolicy) -> str:
  """The body of a small text resource (a shard list)."""

  def attempt() -> str:
    with urllib.request.urlopen(quote_url(url), timeout=TIMEOUT_S) as response:
      return response.read().decode("utf-8")

  return policy.call(attempt, url)


def content_length(url: str, policy: errors.RetryPolicy) -> int | None:
  """The size a HEAD request announces, or None when the server does not say."""

  def attempt() -> int | None:
    request = urllib.request.Request(quote_url(url), method="HEAD")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
      length = response.headers.get("Content-Length")
      return int(length) if length is not None else None

  return policy.call(attempt, url)


def fetch(url: str, dest: pathlib.Path, policy: errors.RetryPolicy) -> int:
  """Downloads url to dest, resuming `{dest}.part`; returns the file's size in bytes."""
  part = dest.with_name(dest.name + PART)
  dest.parent.mkdir(parents=True, exist_ok=True)
  policy.call(lambda: _fetch_once(url, part), url)
  os.replace(part, dest)
  return dest.stat().st_size


def _fetch_once(url: str, part: pathlib.Path) -> None:
  have = part.stat().st_size if part.exists() else 0
  headers = {"Range": f"bytes={have}-"} if have else {}
  request = urllib.request.Request(quote_url(url), headers=headers)
  try:
    response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
  except urllib.error.HTTPError as error:
    if error.code == 416:  # The .part file is not a prefix of this resource: start over.
      part.unlink()
      raise IncompleteDownload(f"range not satisfiable at byte {have}, restarting") from error
    raise
  with response:
    if response.status == 206:
      content_range = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
      if not content_range or int(content_range.group(1)) != have:
        part.unlink()
        raise IncompleteDownload(f"asked for bytes from {have}, got {content_range and content_range.group(0)}")
      expected = None if content_range.group(2) == "*" else int(content_range.group(2))
      mode = "ab"
    else:  # The server ignored the Range header and sends everything.
      length = response.headers.get("Content-Length")
      expected = int(length) if length is not None else None
      mode = "wb"
    with open(part, mode) as out:
      shutil.copyfileobj(response, out, 1 << 20)
  size = part.stat().st_size
  if expected is not None and size != expected:
    raise IncompleteDownload(f"incomplete download: {size} of {expected} bytes")
