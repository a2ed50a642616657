"""Safe extraction of the mirror's tarballs, which are not all well formed.

Shards may be gzipped or plain tar (k400 `part_120.tar.gz` once was), nest clips under deep folders,
or carry macOS `._*` AppleDouble files (a K600 class tarball did; github cvdfoundation/kinetics-dataset).
A member that would land outside the target (absolute path, `..`, a link pointing out, a device
file) is refused and returned so it can be reported; nothing of it is written. tarfile's 'data'
filter then checks every written member a second time.

Expansion is bounded: clips barely compress, so an archive whose members add up to more than
MAX_EXPANSION times its own size (and over MIN_LIMIT_BYTES) is a decompression bomb, not a shard;
the files it had created are removed (not those it overwrote: other shards' files) and ExpansionLimit raised.
"""

import os
import pathlib
import tarfile

MAX_EXPANSION = 10
MIN_LIMIT_BYTES = 64 << 20


class ExpansionLimit(tarfile.TarError):
  """The archive expands to more than MAX_EXPANSION times its size."""


def _refusal(member: tarfile.TarInfo, root: str) -> str | None:
  """Why the member must not be extracted below root, or None when it is safe."""
  if os.path.isabs(member.name) or member.name.startswith(("/", "\\")):
    return "absolute-path"
  destination = os.path.realpath(os.path.join(root, member.name))
  if os.path.commonpath([root, destination]) != root:
    return "path-outside-target"
  if member.issym() or member.islnk():
    base = os.path.dirname(destination) if member.issym() else root
    if os.path.isabs(member.linkname):
      return "link-outside-target"
    target = os.path.realpath(os.path.join(base, member.linkname))
    if os.path.commonpath([root, target]) != root:
      return "link-outside-target"
  elif not (member.isfile() or member.isdir()):
    return "special-file"
  return None


def extract(archive: pathlib.Path, target: pathlib.Path) -> list[tuple[str, str]]:
  """Extracts the safe members of a tar or tar.gz; returns (member name, reason) for refused ones."""
  target.mkdir(parents=True, exist_ok=True)
  root = os.path.realpath(target)
  limit = max(MAX_EXPANSION * archive.stat().st_size, MIN_LIMIT_BYTES)
  refused, written, total = [], [], 0
  with tarfile.open(archive, "r:*") as tar:
    for member in tar:
      if os.path.basename(member.name.rstrip("/")).startswith("._"):
        continue
      reason = _refusal(member, root)
      total += member.size if member.isfile() else 0
      if not reason and total > limit:
        for path in written:
          os.remove(path)
        raise ExpansionLimit(
          f"{archive.name} expands beyond {limit} bytes ({MAX_EXPANSION}x its size): a decompression bomb, not a shard"
        )
      if not reason:
        path = os.path.join(root, member.name)
        existed = os.path.lexists(path)  # Another shard's file of the same name: never this one's to remove.
        try:
          tar.extract(member, root, filter="data")
          if member.isfile() and not existed:
            written.append(path)
        except tarfile.FilterError as error:
          reason = type(error).__name__
      if reason:
        refused.append((member.name, reason))
  return refused
