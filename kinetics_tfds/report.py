r"""A report on a prepared Kinetics dataset: what was built, what was skipped and why, and what the frames look like.

  python -m kinetics_tfds.report --dataset=kinetics400/small_10fps_128 --data_dir=~/tensorflow_datasets \
      --out=k400_report

writes `report.html` (one self-contained page, the figures inlined), the figures as PNGs and
`report.json` with every number and figure's data in the page. Per split: annotated, built and
skipped clips by reason (from `skipped_clips.csv`), clips per class (how many classes have none,
the thinnest of the others named), clip length in frames and source fps, bytes on disk per split
and per clip; and a contact sheet of frames from a few clips of classes spread over those that
have clips, to see at a glance that orientation, colour and crop are right. The records are read
once, through `kinetics_tfds.pipeline.records` (JPEG strings, nothing decoded); only the contact
sheet's frames are decoded. Copies of Kinetics differ (K400 validation
has 19,906 rows, people report 17,747 to 19,818 usable clips): this says what yours holds.
"""

from __future__ import annotations

import base64
import collections
from collections.abc import Sequence
import dataclasses
import heapq
import html
import json
import os
import pathlib
import re

from absl import app
import cv2
import matplotlib
from matplotlib import figure as mpl_figure  # Figures without pyplot: no global state, no display needed.
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from kinetics_tfds import annotations
from kinetics_tfds import command
from kinetics_tfds import subsets
from kinetics_tfds.build import skipped as skipped_lib

HTML_FILE, JSON_FILE, SHEET_FILE = "report.html", "report.json", "contact_sheet.png"
TILE_HEIGHT = 96  # Contact sheet frames are resized to this height, aspect kept (cv2.INTER_AREA).
_BAND = 18  # Pixels of caption above each contact-sheet row.
_MIN_SHEET_WIDTH = 400  # Room for a caption above a narrow (portrait, or one-frame) clip.
_THINNEST = 10  # Classes named as the thinnest, of those with clips.
_UNLABELED = "(unlabeled)"  # The contact sheet's caption for a clip of an unlabeled test split.


@dataclasses.dataclass
class _Tile:
  key: str
  label: str
  frame_indices: list[int]
  jpegs: list[bytes]


def open_dataset(dataset: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared dataset's newest version, read from its folder: configs of one's own need no registration."""
  name, _, config = dataset.partition("/")
  if not config:
    config = tfds.builder_cls(name).DEFAULT_CONFIG_NAME
  folder = pathlib.Path(data_dir).expanduser() / name / config
  versions = sorted(
    (p for p in folder.glob("*") if (p / "dataset_info.json").exists()),
    key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.name)),
  )
  if not versions:
    raise FileNotFoundError(
      f"{folder}: no prepared dataset; build it first (tfds build {name} --imports kinetics_tfds --config {config})"
    )
  return tfds.builder_from_directory(os.fspath(versions[-1]))


def reason_kind(reason: str) -> str:
  """A skip reason without its details (`truncated or corrupt: decoded 3 of 250` -> `truncated or corrupt`).

  Exclusions and subsets keep their whole reason: it names the set or the rule.
  """
  if reason.startswith(("excluded", "outside subset")):
    return reason
  return re.sub(r"\s*'.*$", "", reason.split(":")[0])


def _spread(items: Sequence, count: int) -> list:
  """`count` items spread evenly over `items`, in order."""
  if len(items) <= count:
    return list(items)
  return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def _histogram(values: Sequence[float], bins: int = 20) -> dict:
  if not values:
    return {"edges": [], "counts": []}
  counts, edges = np.histogram(np.asarray(values, np.float64), bins=bins)
  return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[pathlib.Path]:
  return sorted(pathlib.Path(builder.data_dir).glob(f"{builder.name}-{split}.*"))


def collect(builder: tfds.core.DatasetBuilder, sheet_classes: int, sheet_clips: int, sheet_frames: int) -> dict:
  """Every number in the report, from one pass over each split's records and the skipped-clips file."""
  names = builder.info.features["label"].names
  try:
    skipped = skipped_lib.read(builder.data_dir)
  except FileNotFoundError:
    skipped = []
  from kinetics_tfds import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow: not for --help)

  # The contact sheet and the class counts come from the first split that has clips. Which classes have clips is
  # known only at the end of its pass (a partial build or a subset may have a few), so each class keeps its tiles:
  # at most sheet_clips x sheet_frames JPEG frames.
  built_splits = [s for s in annotations.SPLITS if s in builder.info.splits]
  sheet_split = next((s for s in built_splits if builder.info.splits[s].num_examples), None)
  sheet: dict[str, list] = collections.defaultdict(list)  # label -> heap of (-rank, key, tile)
  splits = {}
  per_class: dict[str, collections.Counter] = {}
  for split in builder.info.splits:
    frames, fps, clip_bytes, classes = [], [], [], collections.Counter()
    records = tfds.as_numpy(pipeline.records(builder, split))
    for example in tqdm.tqdm(records, total=builder.info.splits[split].num_examples, desc=split, unit="clip"):
      jpegs, key = example["video"], example["key"].decode()
      label = names[example["label"]] if example["label"] >= 0 else None
      frames.append(len(jpegs))
      fps.append(float(example["source_fps"]))
      clip_bytes.append(int(sum(len(j) for j in jpegs)))
      classes[label] += 1
      if split == sheet_split:
        _offer(sheet[label], key, label or _UNLABELED, jpegs, sheet_clips, sheet_frames)
    reasons = collections.Counter(reason_kind(r.reason) for r in skipped if r.split == split)
    disk = sum(p.stat().st_size for p in _split_files(builder, split))
    built = len(frames)
    splits[split] = {
      "annotated": built + sum(reasons.values()),
      "built": built,
      "skipped": sum(reasons.values()),
      "skipped_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
      "bytes_on_disk": disk,
      "bytes_on_disk_per_clip": round(disk / built) if built else 0,
      "frames_total": int(sum(frames)),
      "frames_min": int(min(frames, default=0)),
      "frames_max": int(max(frames, default=0)),
      "frames_histogram": _histogram(frames),
      "source_fps": dict(sorted(collections.Counter(round(f, 3) for f in fps).items())),
      "jpeg_bytes_per_clip_histogram": _histogram(clip_bytes),
    }
    per_class[split] = classes
  for split in {r.split for r in skipped} - set(splits):  # A split with no clip built at all.
    reasons = collections.Counter(reason_kind(r.reason) for r in skipped if r.split == split)
    splits[split] = {
      "annotated": sum(reasons.values()),
      "built": 0,
      "skipped": sum(reasons.values()),
      "skipped_by_reason": dict(reasons),
    }
  counts = {name: {split: per_class[split][name] for split in per_class} for name in names}
  thin_split = sheet_split or ""
  with_clips = [n for n in names if counts[n].get(thin_split, 0)]
  thinnest = sorted(with_clips, key=lambda n: (counts[n][thin_split], n))[:_THINNEST]
  shown = _spread([label for label in [*names, None] if label in sheet], sheet_classes)
  tiles = [tile for label in shown for _, _, tile in sorted(sheet[label], reverse=True)]
  return {
    "dataset": f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''}",
    "version": str(builder.version),
    "data_dir": os.fspath(builder.data_dir),
    "num_classes": len(names),
    "splits": splits,
    "clips_per_class": counts,
    "class_counts_split": thin_split,
    "classes_without_clips": len(names) - len(with_clips),
    "thinnest_classes": [{"class": n, "clips": counts[n][thin_split]} for n in thinnest],
    "_tiles": tiles,
  }


def _offer(heap: list, key: str, label: str, jpegs, keep: int, num_frames: int) -> None:
  """Keeps the `keep` clips of a class with the lowest key hash, and only their sheet frames."""
  rank = subsets.rank(key)
  if len(heap) >= keep and -heap[0][0] <= int.from_bytes(rank, "big"):
    return
  indices = sorted({int(i) for i in np.linspace(0, len(jpegs) - 1, num_frames).round()})
  tile = _Tile(key, label, indices, [bytes(jpegs[i]) for i in indices])
  entry = (-int.from_bytes(rank, "big"), key, tile)
  if len(heap) >= keep:
    heapq.heapreplace(heap, entry)
  else:
    heapq.heappush(heap, entry)


def _decode(jpeg: bytes) -> np.ndarray:
  """RGB uint8, decoded as TFDS decodes a stored frame (tf.io.decode_jpeg)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (not for --help)

  return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def contact_sheet(tiles: Sequence[_Tile]) -> tuple[np.ndarray, list[dict]]:
  """One row per clip (a caption band, then its frames at TILE_HEIGHT), and where each frame is."""
  strips = []
  for tile in tiles:
    frames = []
    for jpeg in tile.jpegs:
      frame = _decode(jpeg)
      width = max(1, round(frame.shape[1] * TILE_HEIGHT / frame.shape[0]))
      frames.append(cv2.resize(frame, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA))
    strips.append(frames)
  if not strips:
    return np.full((1, 1, 3), 255, np.uint8), []
  width = max(_MIN_SHEET_WIDTH, *(sum(f.shape[1] for f in frames) for frames in strips))
  sheet = np.full(((_BAND + TILE_HEIGHT) * len(strips), width, 3), 255, np.uint8)
  placed = []
  for row, (tile, frames) in enumerate(zip(tiles, strips)):
    y = row * (_BAND + TILE_HEIGHT)
    cv2.putText(
      sheet, f"{tile.label}  {tile.key}", (2, y + _BAND - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
    )
    x = 0
    for index, frame in zip(tile.frame_indices, frames):
      sheet[y + _BAND : y + _BAND + TILE_HEIGHT, x : x + frame.shape[1]] = frame
      placed.append(
        {
          "key": tile.key,
          "label": tile.label,
          "frame": index,
          "x": x,
          "y": y + _BAND,
          "width": frame.shape[1],
          "height": TILE_HEIGHT,
        }
      )
      x += frame.shape[1]
  return sheet, placed


def _bar_figure(built_ax, skipped_ax, splits: dict) -> None:
  """Per split: built clips, and beside them, on a scale of their own, skipped clips stacked by reason; each bar
  labelled with its count. On one scale a few built clips vanish beside thousands of missing ones."""
  names = list(splits)
  bars = built_ax.barh(names, [splits[n]["built"] for n in names], color="tab:green")
  built_ax.bar_label(bars, padding=2, fontsize=8)
  built_ax.set_xlabel("built clips")
  built_ax.margins(x=0.25)
  kinds = sorted({k for s in splits.values() for k in s["skipped_by_reason"]})
  left = np.zeros(len(names))
  colors = matplotlib.colormaps["tab20"]
  for i, kind in enumerate(kinds):
    values = np.array([splits[n]["skipped_by_reason"].get(kind, 0) for n in names], np.float64)
    skipped_ax.barh(names, values, left=left, color=colors(i % 20), label=kind)
    left += values
  skipped_ax.set_xlabel("skipped clips, by reason")
  skipped_ax.margins(x=0.25)
  skipped_ax.tick_params(labelleft=False)
  if kinds:
    skipped_ax.bar_label(skipped_ax.containers[-1], labels=[str(int(v)) for v in left], padding=2, fontsize=8)
    skipped_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  else:
    skipped_ax.set_xticks([])
    skipped_ax.text(0.5, 0.5, "none", ha="center", va="center", transform=skipped_ax.transAxes)


def figures(data: dict, out: pathlib.Path) -> dict[str, str]:
  """The report's PNGs (matplotlib), by title -> file name."""
  splits = {s: v for s, v in data["splits"].items() if "frames_histogram" in v}
  made = {}

  def new(height: float):
    fig = mpl_figure.Figure(figsize=(8, height))
    return fig, fig.subplots()

  def save(fig, name: str, title: str) -> None:  # The page gives the title.
    fig.tight_layout()
    fig.savefig(out / name, dpi=80, bbox_inches="tight")  # With a legend beside the axes.
    made[title] = name

  kinds = {k for s in data["splits"].values() for k in s["skipped_by_reason"]}
  fig = mpl_figure.Figure(figsize=(8, 1.5 + 0.4 * len(data["splits"]) + 0.2 * len(kinds)))
  _bar_figure(*fig.subplots(1, 2, sharey=True), data["splits"])
  save(fig, "splits.png", "Annotated clips per split: built and skipped, by reason")

  split = data["class_counts_split"]
  if split:
    counts = sorted((v.get(split, 0), k) for k, v in data["clips_per_class"].items())
    fig, ax = new(3)
    ax.bar(range(len(counts)), [c for c, _ in counts], width=1.0, color="tab:blue")
    ax.set_xlabel("classes, sorted by clip count")
    ax.set_ylabel(f"{split} clips")
    save(fig, "classes.png", f"Clips per class ({split})")

  for key, name, xlabel, title in (
    ("frames_histogram", "frames.png", "frames per clip", "Clip length"),
    ("jpeg_bytes_per_clip_histogram", "clip_bytes.png", "JPEG bytes per clip", "Bytes per clip"),
  ):
    fig, ax = new(3)
    for split_name, values in splits.items():
      hist = values[key]
      if hist["counts"]:
        ax.stairs(hist["counts"], hist["edges"], label=split_name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips")
    ax.legend()
    save(fig, name, title)

  fig, ax = new(3)
  rates = sorted({r for values in splits.values() for r in values["source_fps"]})
  bar = 0.8 / max(1, len(splits))
  for i, (split_name, values) in enumerate(splits.items()):
    ax.bar(
      np.arange(len(rates)) + bar * i, [values["source_fps"].get(r, 0) for r in rates], width=bar, label=split_name
    )
  ax.set_xticks(np.arange(len(rates)) + bar * (len(splits) - 1) / 2, [f"{r:g}" for r in rates])
  ax.set_xlabel("source frame rate (fps)")
  ax.set_ylabel("clips")
  ax.legend()
  save(fig, "fps.png", "Source frame rates")
  return made


def _cell(value, path: str) -> str:
  """A number in the page, tagged with where report.json holds it."""
  return f'<td data-key="{html.escape(path)}">{value}</td>'


def _image(out: pathlib.Path, name: str, alt: str) -> str:
  data = base64.b64encode((out / name).read_bytes()).decode("ascii")
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def page(data: dict, made: dict[str, str], out: pathlib.Path) -> str:
  """The self-contained HTML page: tables of every count, the figures and the contact sheet inline."""
  columns = ("annotated", "built", "skipped", "bytes_on_disk", "bytes_on_disk_per_clip", "frames_min", "frames_max")
  rows = []
  for split, values in data["splits"].items():
    cells = "".join(_cell(values[c], f"splits.{split}.{c}") if c in values else "<td></td>" for c in columns)
    rows.append(f"<tr><th>{html.escape(split)}</th>{cells}</tr>")
  reasons = []
  for split, values in data["splits"].items():
    for kind, count in values["skipped_by_reason"].items():
      reasons.append(
        f"<tr><th>{html.escape(split)}</th><td>{html.escape(kind)}</td>"
        f"{_cell(count, f'splits.{split}.skipped_by_reason.{kind}')}</tr>"
      )
  thin = "".join(
    f"<tr><td>{html.escape(t['class'])}</td>{_cell(t['clips'], f'thinnest_classes.{i}.clips')}</tr>"
    for i, t in enumerate(data["thinnest_classes"])
  )
  header = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
  without_clips = (
    f'<span data-key="classes_without_clips">{data["classes_without_clips"]}</span> of {data["num_classes"]} classes '
    "have no clip here (report.json's clips_per_class names them); of the others, these have the fewest:"
    if data["classes_without_clips"]
    else f"All {data['num_classes']} classes have clips here; these have the fewest:"
  )
  images = "".join(f"<h2>{html.escape(title)}</h2>{_image(out, name, title)}" for title, name in made.items())
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(data["dataset"])}: dataset report</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:70em}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} img{{max-width:100%}}</style></head>
<body><h1>{html.escape(data["dataset"])} {html.escape(data["version"])}</h1>
<p>{html.escape(data["data_dir"])}: <span data-key="num_classes">{data["num_classes"]}</span> classes.
Skipped clips are listed, with their reasons, in skipped_clips.csv there.</p>
<table id="splits"><tr><th>split</th>{header}</tr>{"".join(rows)}</table>
<h2>Skipped clips by reason</h2><table id="reasons"><tr><th>split</th><th>reason</th><th>clips</th></tr>
{"".join(reasons)}</table>
<h2>Thinnest classes ({html.escape(data["class_counts_split"])})</h2>
<p>{without_clips}</p>
<table id="thinnest"><tr><th>class</th><th>clips</th></tr>{thin}</table>
{images}
</body></html>
"""


def write(
  builder: tfds.core.DatasetBuilder, out: str, sheet_classes: int = 8, sheet_clips: int = 2, sheet_frames: int = 6
) -> dict:
  """Writes report.html, report.json and the PNGs into `out`; returns what report.json holds."""
  folder = pathlib.Path(out).expanduser()
  folder.mkdir(parents=True, exist_ok=True)
  data = collect(builder, sheet_classes, sheet_clips, sheet_frames)
  sheet, data["contact_sheet"] = contact_sheet(data.pop("_tiles"))
  cv2.imwrite(os.fspath(folder / SHEET_FILE), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
  charts = list(figures(data, folder).items())
  shown = len({tile["label"] for tile in data["contact_sheet"]})
  title = (
    f"Contact sheet ({data['class_counts_split']}): frames evenly spaced through clips of {shown} of the "
    f"{data['num_classes'] - data['classes_without_clips']} classes with clips"
  )
  made = dict(charts[:1] + [(title, SHEET_FILE)] + charts[1:])  # The sheet right after the counts: look at it first.
  data["figures"] = made
  (folder / JSON_FILE).write_text(json.dumps(data, indent=1))
  (folder / HTML_FILE).write_text(page(data, made, folder))
  return data


@dataclasses.dataclass(frozen=True)
class Settings:
  dataset: str = command.setting(None, "A prepared dataset: kinetics400, or kinetics400/<config>.", required=True)
  data_dir: str = command.setting(None, "TFDS data folder the dataset was built into.", required=True)
  out: str = command.setting(None, "Folder for report.html, report.json and the PNGs.", required=True)
  sheet_classes: int = command.setting(
    8, "Classes on the contact sheet, spread evenly over those with clips.", lower_bound=1
  )
  sheet_clips: int = command.setting(2, "Clips per class on the contact sheet.", lower_bound=1)
  sheet_frames: int = command.setting(6, "Frames per clip, evenly spaced.", lower_bound=1)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = command.from_flags(Settings)
  command.import_tensorflow()
  try:
    builder = open_dataset(settings.dataset, settings.data_dir)
  except FileNotFoundError as error:
    raise app.UsageError(f"--dataset: {error}") from None
  data = write(builder, settings.out, settings.sheet_classes, settings.sheet_clips, settings.sheet_frames)
  summary = {s: {k: v[k] for k in ("annotated", "built", "skipped")} for s, v in data["splits"].items()}
  print(json.dumps({"report": os.path.join(settings.out, HTML_FILE), "splits": summary}))


def run_main() -> None:
  """`python -m kinetics_tfds.report`, installed as `kinetics-report`."""
  command.define_flags(Settings, __name__)  # Only when it runs, so the module imports as a library.
  command.run(main, __name__)


if __name__ == "__main__":
  run_main()
