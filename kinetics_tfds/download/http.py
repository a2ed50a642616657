"""Resumable, size-checked HTTP downloads with urllib (no extra dependency).

A download goes to `{dest}.part` and is renamed only once its size matches what the server
announced, so an existing `dest` is always complete and a `.part` file is resumed with a Range
request. Transient failures (5xx, 429, dropped connections) are retried by the caller's policy.
What a server sends is bounded: a shard list by size (MAX_LIST_BYTES), every attempt by the policy's
deadline, and a redirect is followed only to the host asked.
"""

import io
import os
import pathlib
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from kinetics_tfds.download import errors

TIMEOUT_S = 60  # Per read; a whole attempt has the RetryPolicy's deadline_s.
MAX_LIST_BYTES = 16 << 20  # A shard list: the largest real one (K400 train) is ~100 KB.
PART = ".part"  # Suffix of a download in progress.
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class _SameHost(urllib.request.HTTPRedirectHandler):
  """Follows a redirect only to the host asked: a mirror must not send the downloader elsewhere."""

  def redirect_request(self, req, fp, code, msg, headers, newurl):
    if urllib.parse.urlsplit(newurl)[:2] != urllib.parse.urlsplit(req.full_url)[:2]:
      raise errors.OtherHost(f"{req.full_url} redirects to another host: {newurl}")
    return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameHost)


def quote_url(url: str) -> str:
  """Escapes spaces and other unsafe characters (CVDF lists hold raw K600 class names)."""
  return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def file_name(url: str) -> str:
  """The unescaped last path component: the archive's name on disk."""
  return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def read_text(url: str, policy: errors.RetryPolicy, max_bytes: int = MAX_LIST_BYTES) -> str:
  """The body of a small text resource (a shard list), of at most max_bytes."""

  def attempt() -> str:
    with _OPENER.open(quote_url(url), timeout=TIMEOUT_S) as response:
      body = io.BytesIO()
      _copy(response, body, url, time.monotonic() + policy.deadline_s, max_bytes)
      return body.getvalue().decode("utf-8")

  return policy.call(attempt, url)


def _copy(response, out, url: str, deadline: float, max_bytes: int | None) -> None:
  """Copies a body as it arrives (read1 returns what one read brings), so that a trickling server meets the
  deadline and an endless one the size cap."""
  written = 0
  while chunk := response.read1(1 << 20):
    written += len(chunk)
    if max_bytes is not None and written > max_bytes:
      raise errors.TooLarge(f"{url}: more than {max_bytes} bytes, more than it can be")
    out.write(chunk)
    if time.monotonic() > deadline:
      raise TimeoutError(f"{url}: timed out, not complete by the deadline of its attempt")


def content_length(url: str, policy: errors.RetryPolicy) -> int | None:
  """The size a HEAD request announces, or None when the server does not say."""

  def attempt() -> int | None:
    request = urllib.request.Request(quote_url(url), method="HEAD")
    with _OPENER.open(request, timeout=TIMEOUT_S) as response:
      length = response.headers.get("Content-Length")
      return int(length) if length is not None else None

  return policy.call(attempt, url)


def fetch(url: str, dest: pathlib.Path, policy: errors.RetryPolicy, max_bytes: int | None = None) -> int:
  """Downloads url to dest, resuming `{dest}.part`; returns the file's size in bytes (at most max_bytes)."""
  part = dest.with_name(dest.name + PART)
  dest.parent.mkdir(parents=True, exist_ok=True)
  try:
    policy.call(lambda: _fetch_once(url, part, time.monotonic() + policy.deadline_s, max_bytes), url)
  except errors.TooLarge:
    part.unlink()
    raise
  os.replace(part, dest)
  return dest.stat().st_size


def _fetch_once(url: str, part: pathlib.Path, deadline: float, max_bytes: int | None) -> None:
  have = part.stat().st_size if part.exists() else 0
  headers = {"Range": f"bytes={have}-"} if have else {}
  request = urllib.request.Request(quote_url(url), headers=headers)
  try:
    response = _OPENER.open(request, timeout=TIMEOUT_S)
  except urllib.error.HTTPError as error:
    if error.code == 416:  # The .part file is not a prefix of this resource: start over.
      part.unlink()
      raise errors.IncompleteDownload(f"range not satisfiable at byte {have}, restarting") from error
    raise
  with response:
    if response.status == 206:
      content_range = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
      if not content_range or int(content_range.group(1)) != have:
        part.unlink()
        raise errors.IncompleteDownload(f"asked for bytes from {have}, got {content_range and content_range.group(0)}")
      expected = None if content_range.group(2) == "*" else int(content_range.group(2))
      mode = "ab"
    else:  # The server ignored the Range header and sends everything.
      length = response.headers.get("Content-Length")
      expected = int(length) if length is not None else None
      mode, have = "wb", 0
    with open(part, mode) as out:
      _copy(response, out, url, deadline, None if max_bytes is None else max_bytes - have)
  size = part.stat().st_size
  if expected is not None and size != expected:
    raise errors.IncompleteDownload(f"incomplete download: {size} of {expected} bytes")
