"""`make bench` runs end to end: pipeline throughput and its ratio; inference modes against the raw forward pass;
one photograph's seconds and peak memory; float32 against mixed precision."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from retina_seg.config import PROJECT_ROOT

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


def test_bench_reports_pipeline_and_training_throughput(tmp_path):
    args = [sys.executable, "-m", "benchmarks.bench", "--sections", "pipeline", "--steps", "2",
            "--chase-root", str(tmp_path / "absent"),
            "image_size=64", "backbone=resnet18", "data.num_images=6", "data.native_size=128",
            f"data.root={tmp_path}/cache"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "synthetic (" in done.stdout and "128x128" in done.stdout
    numbers = re.findall(r"^\s+(?:pipeline only|training|ratio)\s+([\d.]+)", done.stdout, re.MULTILINE)
    assert len(numbers) == 4 and all(float(n) > 0 for n in numbers), done.stdout
    pipeline_steps, memory_steps, ratio = (float(n) for n in numbers[1:])
    assert abs(ratio - pipeline_steps / memory_steps) < 0.01


@pytest.fixture(scope="module")
def inference_and_photograph(tmp_path_factory):
    """One bench process for the two inference sections (a process start and TensorFlow's import saved)."""
    absent = tmp_path_factory.mktemp("bench") / "absent"
    args = [sys.executable, "-m", "benchmarks.bench", "--sections", "inference", "photograph", "--sizes", "130x100",
            "--repeats", "1", "--chase-root", str(absent), "--photo-size", "200x136", "--idrid-root", str(absent),
            "image_size=64", "inference.memory_budget_mb=64"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_times_every_inference_mode_against_the_raw_forward_pass(inference_and_photograph):
    out = inference_and_photograph
    assert "unet resnet18, 64 px window" in out and "raw forward of 160x128 in one pass" in out
    modes = "tiles, stride window/2|tiles, stride window|whole"
    rows = dict(re.findall(rf"^\s+130x100\s+({modes})\s+[\d.]+ ms\s+([\d.]+)x raw", out, re.MULTILINE))
    assert set(rows) == {"tiles, stride window/2", "tiles, stride window", "whole"}, out
    assert all(float(ratio) > 0 for ratio in rows.values())
    assert "agreement     skipped: no CHASE_DB1 copy" in out


def test_bench_measures_one_photograph_without_and_with_flips_each_in_its_own_process(inference_and_photograph):
    out = inference_and_photograph
    assert "one 200x136 photograph (noise: no IDRiD copy" in out
    rows = re.findall(r"^\s+(without|with)\s+flips\s+first call\s+([\d.]+) s, second\s+([\d.]+) s; "
                      r"peak RSS ([\d.]+) GB \(([\d.]+) GB before the photograph\); probabilities 200x136x4",
                      out, re.MULTILINE)
    assert [row[0] for row in rows] == ["without", "with"], out
    assert all(float(peak) >= float(before) > 0 for *_, peak, before in rows)


def test_bench_compares_float32_with_mixed_precision_in_one_run(tmp_path):
    args = [sys.executable, "-m", "benchmarks.bench", "--sections", "precision", "--precision-steps", "1",
            "--sizes", "130x100", "--repeats", "1", "--chase-root", str(tmp_path / "absent"), "image_size=64",
            f"data.root={tmp_path}/cache", "data.num_images=4", "data.native_size=64"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    picked = re.search(r"precision=auto picks (32|bf16-mixed|16-mixed) \(auto: ", done.stdout)
    assert picked, done.stdout
    trained = re.findall(r"training .+ steps/s 32 ([\d.]+), (bf16-mixed|16-mixed) ([\d.]+); ratio ([\d.]+)x",
                         done.stdout)
    assert len(trained) == 2, done.stdout  # the default model and the recipes' network
    for float32, _, mixed, ratio in trained:
        assert abs(float(ratio) - float(mixed) / float(float32)) < 0.01
    inferred = re.search(r"inference\s+130x100 whole image, resnet18: 32 ([\d.]+) ms, \S+ ([\d.]+) ms; ratio ([\d.]+)x",
                         done.stdout)
    assert inferred and abs(float(inferred[3]) - float(inferred[1]) / float(inferred[2])) < 0.02, done.stdout
