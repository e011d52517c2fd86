"""The machine a run trains on, as run tags (`hardware.*`): a run's time means little without its CPU, cores,
memory, GPU, TensorFlow build and precision, and two runs' times compare fairly only on the same ones.
(Use over time, CPU and memory percentages, is MLflow's own system-metrics logging: tracking.system_metrics.)"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import tensorflow as tf


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def tensorflow_build() -> str:
    """e.g. '2.21.0 (CPU build)' or '2.21.0 (CUDA 12.5, cuDNN 9)'."""
    info = tf.sysconfig.get_build_info()
    if not info.get("is_cuda_build"):
        return f"{tf.__version__} (CPU build)"
    return f"{tf.__version__} (CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')})"


def hardware_tags(precision: str) -> dict[str, str]:
    """Tags naming this machine: `precision` is what training computes at (trainer.precision as resolved)."""
    return {"hardware.cpu": cpu_model(), "hardware.cores": str(os.cpu_count()),
            "hardware.cores_usable": str(len(os.sched_getaffinity(0))),
            "hardware.memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
            "hardware.gpu": ", ".join(gpu_names()) or "none", "hardware.tensorflow": tensorflow_build(),
            "hardware.precision": precision}
