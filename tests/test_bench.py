"""`make bench` runs end to end and reports the three measurements and their ratio."""

from __future__ import annotations

import re
import subprocess
import sys

from retina_seg.config import PROJECT_ROOT


def test_bench_reports_pipeline_and_training_throughput(tmp_path):
    args = [sys.executable, "-m", "retina_seg.bench", "--steps", "2", "--chase-root", str(tmp_path / "absent"),
            "image_size=64", "backbone=resnet18", "data.num_images=6", "data.native_size=128",
            f"data.root={tmp_path}/cache"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "synthetic (" in done.stdout and "128x128" in done.stdout
    numbers = re.findall(r"^\s+(?:pipeline only|training|ratio)\s+([\d.]+)", done.stdout, re.MULTILINE)
    assert len(numbers) == 4 and all(float(n) > 0 for n in numbers), done.stdout
    pipeline_steps, memory_steps, ratio = (float(n) for n in numbers[1:])
    assert abs(ratio - pipeline_steps / memory_steps) < 0.01
