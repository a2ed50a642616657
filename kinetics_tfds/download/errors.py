"""Failure reasons for the report, and retrying the ones that may pass on a second try."""

from collections.abc import Callable
import dataclasses
import re
import time
from typing import TypeVar

from absl import logging

_T = TypeVar("_T")

# Checked in order: the first pattern found in the lower-cased error message names the reason.
# yt-dlp reports YouTube's refusals only as text, so the text is all there is to go on.
_REASONS = (
  # YouTube's bot check is its rate limit under another name: retried like a 429.
  ("http-429", ("confirm you're not a bot", "confirm you’re not a bot")),
  ("expansion-limit", ("decompression bomb",)),
  ("private", ("private video", "video is private")),
  ("copyright", ("copyright",)),
  ("country-blocked", ("in your country", "geo restrict", "geo-restrict")),
  ("age-gated", ("confirm your age", "age-restricted", "inappropriate for some users")),
  (
    "removed",
    (
      "video unavailable",
      "has been removed",
      "account associated with this video has been terminated",
      "no longer available",
      "does not exist",
    ),
  ),
  (
    "corrupt",
    (
      "corrupt",
      "moov atom not found",
      "invalid data found",
      "not a gzip file",
      "truncated",
      "could not be opened successfully",
      "unexpected end of data",
      "compressed file ended",
      "decompress",
      "cannot decode",
    ),
  ),
  (
    "network",
    (
      "timed out",
      "timeout",
      "connection",
      "urlopen error",
      "incompleteread",
      "incomplete download",
      "remote end closed",
      "name resolution",
      "network is unreachable",
      "broken pipe",
    ),
  ),
)
_HTTP_STATUS = re.compile(r"http error (\d{3})")
_TRANSIENT = ("network", "http-429", "http-5")


class DownloadError(IOError):
  """A failure of our own making, whose report reason is its class's, not guessed from its message."""

  reason = "other"


class IncompleteDownload(DownloadError):
  """The body was shorter or longer than announced, or not the range asked for: a retry resumes or restarts."""

  reason = "network"


class TooLarge(DownloadError):
  """A body larger than what it can be (a shard list of megabytes): not retried."""

  reason = "too-large"


class OtherHost(DownloadError):
  """A redirect to another host than the one asked: refused, as a list line naming one is."""

  reason = "other-host"


def classify(error: BaseException | str) -> str:
  """Maps an exception or error message to one report reason (removed, network, http-404, ...)."""
  if isinstance(error, DownloadError):
    return error.reason
  message = f"{type(error).__name__}: {error}".lower() if isinstance(error, BaseException) else error.lower()
  status = _HTTP_STATUS.search(message)
  if status:
    return f"http-{status.group(1)}"
  for reason, patterns in _REASONS:
    if any(pattern in message for pattern in patterns):
      return reason
  return "other"


def is_transient(reason: str) -> bool:
  """Rate limits, server errors and dropped connections are worth retrying; the rest is not."""
  return reason.startswith(_TRANSIENT)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """Exponential backoff: waits base_delay_s, 2*base_delay_s, ... between attempts, each of at most deadline_s
  (a server that trickles a byte at a time must not hold a download forever)."""

  attempts: int = 5
  base_delay_s: float = 2.0
  deadline_s: float = 4 * 3600.0

  def call(self, fn: Callable[[], _T], what: str) -> _T:
    """Returns fn(), retrying it on transient failures; re-raises the last failure."""
    attempt = 0
    while True:
      try:
        return fn()
      except Exception as error:  # pylint: disable=broad-except
        attempt += 1
        reason = classify(error)
        if not is_transient(reason) or attempt >= self.attempts:
          raise
        delay = self.base_delay_s * 2 ** (attempt - 1)
        logging.info("%s: %s (%s), retrying in %.1f s", what, reason, error, delay)
        time.sleep(delay)
