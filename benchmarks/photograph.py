"""`make bench` section `photograph`: one full-size lesion photograph through `predict`'s path (the Segmenter: the
recipe's preprocessing, scale and windows), without and with flip averaging: seconds and peak memory.

Each setting runs in a fresh process, so that its peak resident memory (the kernel's high-water mark of that
process: TensorFlow, the model and the photograph's buffers) is its own and not the previous setting's.
The model is the one of `--run-id` (a lesion run; its own inference settings but the flips), or the IDRiD
recipe's network with untrained weights: the time and memory depend on the network and the photograph's size,
not on the weights.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

from retina_seg.config import PROJECT_ROOT

SHARED_IDRID = PROJECT_ROOT.parent / "shared" / "data" / "IDRiD"
PHOTOS = "A. Segmentation/1. Original Images/a. Training Set"


@dataclasses.dataclass(frozen=True)
class Job:
    run_id: str | None
    tracking_uri: str
    overrides: tuple[str, ...]  # hydra overrides for the recipe's network when there is no run
    photo: Path | None  # a real photograph, else noise of `size`
    size: tuple[int, int]  # (width, height)
    flips: bool

    def segmenter(self):
        flip = f"inference.flip_tta={str(self.flips).lower()}"
        if self.run_id:
            from retina_seg.tracking.reload import load_segmenter

            return load_segmenter(self.run_id, self.tracking_uri, overrides=[flip])
        from hydra import compose, initialize_config_dir

        from retina_seg.config import CONF_DIR, validate
        from retina_seg.model.factory import build_model
        from retina_seg.tracking.reload import LoggedModel, segmenter_of

        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            config = validate(compose(config_name="config", overrides=[
                "experiment=idrid_lesions", f"data.root={SHARED_IDRID}", flip, *self.overrides]))
        channels = config.data.channels
        model = build_model(config.backbone.name, config.arch, len(channels), config.image_size,
                            config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
        untrained = LoggedModel([model], config, dict.fromkeys(channels, 0.5), fov_width=None, experiment_id=None)
        return segmenter_of(untrained, config.inference)

    def image(self) -> np.ndarray:
        from benchmarks.bench import timing_image
        from retina_seg.data.loading import read_image

        return timing_image(read_image(self.photo) if self.photo else None, *self.size, seed=0)


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(job: Job) -> dict:
    """In a fresh process: the first call (tracing included, what one `predict` of one photograph pays) and a
    second one (a server's steady state), the resident memory before the photograph and the process's peak."""
    segmenter = job.segmenter()
    image = job.image()
    before = resident_mb()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        prob, scale = segmenter.predict(image)
        seconds.append(time.perf_counter() - start)
    return {"first": seconds[0], "second": seconds[1], "before_mb": before, "shape": prob.shape, "scale": scale,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def photograph_section(args, overrides: list[str]) -> None:
    photos = sorted((args.idrid_root / PHOTOS).glob("IDRiD_*.jpg"))
    photo = photos[0] if photos else None
    source = f"run {args.run_id}" if args.run_id else "the idrid_lesions recipe's network, untrained weights"
    width, height = args.photo_size
    print(f"retina-seg photograph benchmark: one {width}x{height} photograph "
          f"({photo.name if photo else 'noise: no IDRiD copy at ' + str(args.idrid_root)}) through predict's path, "
          f"{source}; each setting in a fresh process", flush=True)
    spawn = multiprocessing.get_context("spawn")
    for flips in (False, True):
        job = Job(args.run_id, args.tracking_uri, tuple(overrides), photo, (width, height), flips)
        with spawn.Pool(1) as pool:
            figures = pool.apply(measure, (job,))
        rows, cols, channels = figures["shape"]
        print(f"  {'with' if flips else 'without':7s} flips  first call {figures['first']:7.1f} s, second "
              f"{figures['second']:7.1f} s; peak RSS {figures['peak_mb'] / 1024:.2f} GB "
              f"({figures['before_mb'] / 1024:.2f} GB before the photograph); probabilities {cols}x{rows}x{channels}, "
              f"seen at {figures['scale']:.3f}x", flush=True)
