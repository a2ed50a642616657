"""The benchmarks run end to end at tiny shapes and print their one JSON line: the figures are for a quiet machine,
not for tests."""

import math

from conftest import benchmark_summary


def test_input_pipeline_benchmark(tmp_path):
  summary = benchmark_summary(
    "input_pipeline.py",
    *("--num_clips=4", "--seconds=1", "--num_frames=8", "--image_size=32", "--batch_size=2"),
    *("--steps=1", "--full_decode_steps=1", "--warmup_steps=1", "--passes=1", "--rounds=1"),
    f"--work_dir={tmp_path}",
  )
  assert (summary["num_frames"], summary["image_size"], summary["source_frames_per_clip"]) == (8, 32, 25)
  ratios = ("ratio_to_limit", "speedup_vs_full_decode", "cpu_ratio_to_limit", "tf_free_per_core_ratio_to_pipeline")
  for name in ratios:
    assert math.isfinite(summary[name]) and summary[name] > 0, name
  assert set(summary["cpu_ms_per_clip"]) == {"pipeline", "limit", "full_decode", "read_and_sample", "tf_free"}
  assert (tmp_path / "data").is_dir() and (tmp_path / "data_array_record").is_dir()


def test_build_benchmark(tmp_path):
  summary = benchmark_summary(
    "build.py",
    *("--sizes=160x120", "--headline_size=160x120", "--seconds=1", "--clips_per_size=1", "--repeats=1"),
    *("--scaling_clips=2", "--memory_clips=2,3", "--main_cpu_clips=1,2", "--workers=2"),
    f"--work_dir={tmp_path}",
  )
  assert summary["headline_size"] == "160x120" and set(summary["by_size"]) == {"160x120"}
  for name in ("ratio_to_floor", "clips_per_s_per_core", "main_cpu_ms_per_clip", "scaling_efficiency"):
    assert math.isfinite(summary[name]) and summary[name] > 0, name
  assert set(summary["peak_rss_mb_by_clips"]) == {"2", "3"} and summary["workers"] == 2
