"""`make bench`: is training ever waiting on the input pipeline?

Measures, in one process and one run, for the default model on CHASE_DB1-sized images (the shared
CHASE_DB1 copy when present, synthetic 960x960 fundus images otherwise), 256 px patches, batch 4,
augmentation `light`:
  1. images/s of the input pipeline alone (decode cache -> patch -> augment -> batch);
  2. training steps/s fed by that pipeline;
  3. training steps/s fed from batches already in memory (the same batches, materialised first);
and prints 2 / 3: a ratio of 1.0 means the pipeline costs training nothing.

    python -m retina_seg.bench [--steps 30] [--chase-root PATH] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tensorflow as tf

from retina_seg.config import PROJECT_ROOT, validate
from retina_seg.data.augment import build_augmentation
from retina_seg.data.loading import load_splits
from retina_seg.data.pipeline import training_dataset
from retina_seg.model.factory import build_model
from retina_seg.training.fit import compile_model

SHARED_CHASE = PROJECT_ROOT.parent / "shared" / "data" / "CHASE_DB1"
BASE = ["augmentation=light", "data.sampling=patches", "image_size=256", "trainer.batch_size=4"]


def compose_bench_config(chase_root: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from retina_seg.config import CONF_DIR

    if chase_root.is_dir():
        data = ["data=chase_db1", f"data.root={chase_root}"]
    else:
        data = ["data=synthetic", "data.native_size=960", "data.num_images=28", "data.sampling=patches"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose(config_name="config", overrides=[*BASE, *data, *overrides]))


def timed_fit(model: tf.keras.Model, dataset: tf.data.Dataset, steps: int) -> float:
    """Steps per second of model.fit over `steps` steps (after a warm-up fit that traces the graph)."""
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    parser.add_argument("--chase-root", type=Path, default=SHARED_CHASE)
    args, overrides = parser.parse_known_args()

    config = compose_bench_config(args.chase_root, overrides)
    batch, size = config.trainer.batch_size, config.image_size
    started = time.perf_counter()
    train = load_splits(config.data, config.preprocess, config.seed)["train"]
    load_seconds = time.perf_counter() - started
    source = f"{config.data.name} ({len(train)} training images, {train.images[0].shape[1]}x{train.images[0].shape[0]})"

    pipeline = training_dataset(train, batch, size, True, config.data.foreground_share,
                                build_augmentation(config.augmentation, config.seed), config.seed)
    for _ in pipeline.take(3):  # warm up threads
        pass
    start = time.perf_counter()
    batches = [b for b in pipeline.take(args.steps)]
    pipeline_images_per_s = args.steps * batch / (time.perf_counter() - start)

    in_memory = tf.data.Dataset.from_tensor_slices(
        (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))).batch(batch).repeat()
    model = build_model(config.backbone.name, config.arch, len(config.data.channels), size, config.encoder_weights,
                        config.batchnorm_momentum, config.preprocess.normalization)
    compile_model(model, config.trainer, config.loss)
    memory_steps = timed_fit(model, in_memory, args.steps)
    pipeline_steps = timed_fit(model, pipeline, args.steps)

    print(f"retina-seg input pipeline benchmark: {config.arch.name.value} {config.backbone.name}, "
          f"{size} px patches, batch {batch}, augmentation {config.augmentation.name}, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} inter-op threads")
    print(f"  data          {source}, decoded and cached in {load_seconds:.1f} s")
    print(f"  pipeline only {pipeline_images_per_s:8.1f} images/s ({pipeline_images_per_s / batch:.1f} batches/s)")
    print(f"  training      {pipeline_steps:8.3f} steps/s fed by the pipeline")
    print(f"  training      {memory_steps:8.3f} steps/s fed from in-memory tensors")
    print(f"  ratio         {pipeline_steps / memory_steps:8.3f} (pipeline / in-memory; target >= 0.9)")


if __name__ == "__main__":
    main()
