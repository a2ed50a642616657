"""The per-clip function as a Beam transform, for `tfds build --beam_pipeline_options`: TFDS writes the shards."""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from kinetics_tfds import annotations
from kinetics_tfds.build import examples
from kinetics_tfds.build import skipped

_TASK_LIST_PREFIX = ".tasks-"
_SKIPPED_PREFIX = ".skipped-"


def split_examples(data_dir: str, split: str, tasks: list[examples.Task]):
  """A transform yielding (key, example) for each task that builds; skipped clips go to text files beside the
  output, which `collect_skipped` merges after the run.

  The workers read the tasks from a file (one JSON line each, written beside the output): embedded in the pipeline
  with beam.Create they would be ~400 bytes per clip of job graph, over Dataflow's request limit for K700.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top  # Only Beam builds need it.

  task_list = tfds.core.Path(data_dir) / f"{_TASK_LIST_PREFIX}{split}.jsonl"
  task_list.write_text("".join(task.to_json() + "\n" for task in tasks))
  skipped_prefix = os.path.join(data_dir, f"{_SKIPPED_PREFIX}{split}")

  @beam.ptransform_fn
  def generate(root):
    results = (
      root
      | "ReadTasks" >> beam.io.ReadFromText(os.fspath(task_list))
      | "Spread" >> beam.Reshuffle()  # One file is read by one worker; clips go to all.
      | "Build" >> beam.Map(_build_from_json)
    )
    _ = (
      results
      | "Skipped" >> beam.Filter(lambda r: not _has_example(r))
      | "SkipLines" >> beam.Map(skip_line)
      | "WriteSkips" >> beam.io.WriteToText(skipped_prefix)
    )
    return results | "Built" >> beam.Filter(_has_example) | "Keyed" >> beam.Map(_keyed_example)

  return generate()  # pylint: disable=no-value-for-parameter


def _build_from_json(line: str) -> examples.Result:
  return examples.build(examples.Task.from_json(line))


def _has_example(result: examples.Result) -> bool:
  return result.example is not None


def _keyed_example(result: examples.Result):
  return result.key, result.example


def skip_line(result: examples.Result) -> str:
  """A skipped clip as a Beam worker writes it: one CSV line."""
  return skipped.csv_line([result.split, result.key, result.reason])


def collect_skipped(data_dir: str) -> list[annotations.Rejected]:
  """The skipped clips Beam workers wrote; removes those files and the task lists."""
  for path in tfds.core.Path(data_dir).glob(f"{_TASK_LIST_PREFIX}*"):
    path.unlink()
  rows = []
  for path in tfds.core.Path(data_dir).glob(f"{_SKIPPED_PREFIX}*"):
    rows += skipped.read_rows(path)
    path.unlink()
  return rows
