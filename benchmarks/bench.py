"""`make bench`: is training ever waiting on the input pipeline, and how fast is full-resolution inference?

Section `pipeline`, for the default model on CHASE_DB1-sized images (the shared CHASE_DB1 copy when
present, synthetic 960x960 fundus images otherwise), 256 px patches, batch 4, augmentation `light`:
  1. images/s of the input pipeline alone (decode cache -> patch -> augment -> batch);
  2. training steps/s fed by that pipeline;
  3. training steps/s fed from batches already in memory (the same batches, materialised first);
and prints 2 / 3: a ratio of 1.0 means the pipeline costs training nothing. Training runs at the precision
`trainer.precision=auto` picks on this machine, so the ratio holds at the step rate training really has.

Section `precision`: training steps/s of the default model and of the recipes' ResNet-18 U-Net, and
whole-image inference of a 999x960 and a 3504x2336 image, in float32 and in mixed precision (the one `auto`
picks here, or the one it turned down), with the ratios.

Section `inference`, for the CHASE_DB1 recipe's network (experiments/chase_db1_vessels.yaml) on a
999x960 and a 3504x2336 image: ms per image for tiles (stride half a window), tiles (stride = window)
and whole, each against the raw forward time of the same pixels (the padded image in one pass); then
F1/AUC of each mode on the CHASE_DB1 test images (threshold chosen on validation per mode) with a
model from `--run-id` or trained for `--train-minutes` inside the bench.

Section `photograph` (`benchmarks/photograph.py`): one 4288x2848 IDRiD photograph through `predict`'s path with the
lesion recipe's network (or `--run-id`'s), without and with flip averaging: seconds and peak memory.

Section `serving` (`benchmarks/serving.py`): one CHASE_DB1 photograph in process and through
`retina-seg-serve`, 4 clients against 1 and against 2 workers (skipped with a message when the CHASE_DB1 copy
is absent).

    python -m benchmarks.bench [--sections pipeline precision inference photograph serving] [--steps 30]
                               [--chase-root PATH] [--idrid-root PATH] [--photo-size 4288x2848]
                               [--run-id ID --tracking-uri URI] [--xla] [--serving-seconds 60]
                               [hydra overrides...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from benchmarks.photograph import SHARED_IDRID, photograph_section
from retina_seg.config import PROJECT_ROOT, InferenceConfig, InferenceMode, validate
from retina_seg.data.augment import build_augmentation
from retina_seg.data.loading import load_splits
from retina_seg.data.pipeline import training_dataset, validation_set
from retina_seg.inference.metrics import choose_thresholds, evaluate
from retina_seg.inference.predictor import Predictor
from retina_seg.model.factory import build_model
from retina_seg.model.precision import resolve
from retina_seg.tracking.reload import load_logged_model
from retina_seg.training.fit import FitOutputs, compile_model, fit
from retina_seg.training.validation import Validation

SHARED_CHASE = PROJECT_ROOT.parent / "shared" / "data" / "CHASE_DB1"
BASE = ["augmentation=light", "data.sampling=patches", "image_size=256", "trainer.batch_size=4"]


SIZES = ((999, 960), (3504, 2336))  # (width, height): CHASE_DB1 and HRF


def compose_bench_config(chase_root: Path, overrides: list[str], base: list[str] = BASE):
    from hydra import compose, initialize_config_dir

    from retina_seg.config import CONF_DIR

    if chase_root.is_dir():
        data = ["data=chase_db1", f"data.root={chase_root}"]
    else:
        data = ["data=synthetic", "data.native_size=960", "data.num_images=28", "data.sampling=patches"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose(config_name="config", overrides=[*base, *data, *overrides]))


def timed_fit(model: tf.keras.Model, dataset: tf.data.Dataset, steps: int) -> float:
    """Steps per second of model.fit over `steps` steps (after a warm-up fit that traces the graph)."""
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - start)


def pipeline_section(args, overrides: list[str]) -> None:
    config = compose_bench_config(args.chase_root, overrides)
    batch, size = config.trainer.batch_size, config.image_size
    started = time.perf_counter()
    train = load_splits(config.data, config.preprocess, config.seed, cache_dir=config.cache_dir)["train"]
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
    precision = resolve(config.trainer.precision)  # the step rate training runs at on this machine
    model = build_model(config.backbone.name, config.arch, len(config.data.channels), size, config.encoder_weights,
                        config.batchnorm_momentum, config.preprocess.normalization, precision)
    compile_model(model, config.trainer, config.loss, precision)
    memory_steps = timed_fit(model, in_memory, args.steps)
    pipeline_steps = timed_fit(model, pipeline, args.steps)

    print(f"retina-seg input pipeline benchmark: {config.arch.name.value} {config.backbone.name}, "
          f"{size} px patches, batch {batch}, augmentation {config.augmentation.name}, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} inter-op threads, "
          f"precision {precision.name} ({precision.reason})")
    print(f"  data          {source}, decoded and cached in {load_seconds:.1f} s")
    print(f"  pipeline only {pipeline_images_per_s:8.1f} images/s ({pipeline_images_per_s / batch:.1f} batches/s)")
    print(f"  training      {pipeline_steps:8.3f} steps/s fed by the pipeline")
    print(f"  training      {memory_steps:8.3f} steps/s fed from in-memory tensors")
    print(f"  ratio         {pipeline_steps / memory_steps:8.3f} (pipeline / in-memory; target >= 0.95)")


def compared_precisions(auto) -> list[str]:
    """float32 and the mixed precision in question: the one `auto` picks, or the one it turned down
    (bfloat16 on a CPU), so that the figure shows why."""
    if auto.mixed:
        return ["32", auto.name]
    return ["32", "16-mixed" if tf.config.list_physical_devices("GPU") else "bf16-mixed"]


def precision_section(args, overrides: list[str]) -> None:
    """Training steps/s of the default model and of the recipes' ResNet-18 U-Net, and whole-image inference of
    a CHASE_DB1-sized and an HRF-sized photograph, in float32 and in mixed precision; ratios from one run."""
    auto = resolve("auto")
    names = compared_precisions(auto)
    print(f"retina-seg precision benchmark: {' vs '.join(names)}; precision=auto picks {auto.name} ({auto.reason})")
    rng = np.random.default_rng(0)
    for label, extra in (("default model", []), ("recipes' network", ["experiment=chase_db1_vessels"])):
        config = compose_bench_config(args.chase_root, [*extra, *overrides], base=["trainer.batch_size=4"])
        size, batch, channels = config.image_size, config.trainer.batch_size, len(config.data.channels)
        images = rng.random((batch * 2, size, size, 3), np.float32)
        masks = (rng.random((batch * 2, size, size, channels)) > 0.9).astype(np.float32)
        batches = tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch).repeat()
        rates = {}
        for name in names:
            precision = resolve(name)
            model = build_model(config.backbone.name, config.arch, channels, size, config.encoder_weights,
                                config.batchnorm_momentum, config.preprocess.normalization, precision)
            compile_model(model, config.trainer, config.loss, precision)
            rates[name] = timed_fit(model, batches, args.precision_steps)
        shown = ", ".join(f"{name} {rate:.3f}" for name, rate in rates.items())
        print(f"  training   {label:18s} {config.arch.name.value} {config.backbone.name} {size} px, batch {batch}: "
              f"steps/s {shown}; ratio {rates[names[1]] / rates[names[0]]:.2f}x", flush=True)
    config = compose_bench_config(args.chase_root, ["experiment=chase_db1_vessels", *overrides], base=[])
    model = build_model(config.backbone.name, config.arch, len(config.data.channels), config.image_size,
                        config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
    for width, height in args.sizes:
        image = timing_image(None, width, height, config.seed)
        times = {}
        for name in names:
            settings = dataclasses.replace(config.inference, mode=InferenceMode.whole, precision=name)
            predictor = Predictor(model, config.image_size, config.data.sampling, settings)
            times[name] = best_ms(partial(predictor, image), args.repeats, not args.no_warm_up)[0]
        shown = ", ".join(f"{name} {ms:.0f} ms" for name, ms in times.items())
        print(f"  inference  {width}x{height} whole image, {config.backbone.name}: {shown}; "
              f"ratio {times[names[0]] / times[names[1]]:.2f}x", flush=True)


def serving_section(args, overrides: list[str]) -> None:
    """The serving benchmark on the default model's settings and the first CHASE_DB1 test photograph."""
    photos = sorted(args.chase_root.glob("Image_*.jpg"))
    if not photos or args.serving_seconds <= 0:
        print(f"  serving       skipped: no CHASE_DB1 photograph in {args.chase_root}" if not photos
              else "  serving       skipped (--serving-seconds 0)")
        return
    from hydra import compose, initialize_config_dir

    from benchmarks.serving import run_serving_bench
    from retina_seg.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=chase_db1", f"data.root={args.chase_root}", *overrides])
    run_serving_bench(validate(cfg), cfg, photos[-1], args.serving_seconds)


def best_ms(call, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """(wall, CPU) ms of the fastest of `repeats` calls after one untimed warm-up (tracing). The
    minimum is the figure least disturbed by other work; the process CPU time (all threads) measures
    the work itself and stays comparable when the machine is shared."""
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return tuple(1000 * value for value in min(times))


def inference_modes(settings: InferenceConfig, window: int, xla: bool) -> dict[str, InferenceConfig]:
    modes = {
        "tiles, stride window/2": dataclasses.replace(settings, mode=InferenceMode.tiles, stride=None),
        "tiles, stride window": dataclasses.replace(settings, mode=InferenceMode.tiles, stride=window),
        "whole": dataclasses.replace(settings, mode=InferenceMode.whole),
    }
    if xla:
        modes["whole, XLA"] = dataclasses.replace(modes["whole"], jit_compile=True)
    return modes


def timing_image(train_image: np.ndarray | None, width: int, height: int, seed: int) -> np.ndarray:
    """A fundus photograph scaled to (width, height) when one is at hand, else noise: timing does not
    depend on the content."""
    if train_image is not None:
        return cv2.resize(train_image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def train_briefly(config, splits: dict, minutes: float) -> tf.keras.Model:
    """The recipe's network trained on the recipe's data for `minutes` (the best validation epoch)."""
    model = build_model(config.backbone.name, config.arch, len(config.data.channels), config.image_size,
                        config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
    compile_model(model, config.trainer, config.loss)
    trainer = dataclasses.replace(config.trainer, time_limit_minutes=minutes)
    batch = trainer.batch_size
    train = training_dataset(splits["train"], batch, config.image_size, True, config.data.foreground_share,
                             build_augmentation(config.augmentation, config.seed), config.seed)
    validation = Validation(*validation_set(splits["val"], config.image_size, trainer.validation_windows,
                                            config.data.foreground_share, config.seed + 1),
                            config.data.channels, batch)
    with tempfile.TemporaryDirectory() as folder:
        outputs = FitOutputs(Path(folder) / "weights.h5", Path(folder) / "history.csv")
        steps = trainer.steps_per_epoch or math.ceil(len(splits["train"]) / batch)
        history = fit(model, train, validation, steps, trainer, outputs, [])
    print(f"  model         trained for {minutes:g} min: {len(history)} epochs, best val F-score "
          f"{history['val_f1-score'].max():.3f}")
    return model


def agreement(model: tf.keras.Model, config, splits: dict, modes: dict) -> None:
    """Test F1 / AUC per mode, each with its own validation threshold, as a run would report them."""
    channels = config.data.channels
    reference = None
    for label, settings in modes.items():
        predictor = Predictor(model, config.image_size, config.data.sampling, settings)
        thresholds = choose_thresholds([predictor(i) for i in splits["val"].images], splits["val"], channels)
        _, summary = evaluate([predictor(i) for i in splits["test"].images], splits["test"], channels, thresholds)
        f1, auc = summary["test_f1"], summary["test_auc"]
        reference = reference or (f1, auc)
        print(f"  {label:24s} F1 {f1:.4f} ({f1 - reference[0]:+.4f})  AUC {auc:.4f} ({auc - reference[1]:+.4f})")


def inference_section(args, overrides: list[str]) -> None:
    config = compose_bench_config(args.chase_root, ["experiment=chase_db1_vessels", *overrides], base=[])
    have_data = args.chase_root.is_dir()
    splits = load_splits(config.data, config.preprocess, config.seed) if have_data else None
    if args.run_id:
        logged = load_logged_model(args.run_id, args.tracking_uri)
        model, config = logged.model, dataclasses.replace(logged.config, data=config.data)
        source = f"run {args.run_id}"
    else:
        model = build_model(config.backbone.name, config.arch, len(config.data.channels), config.image_size,
                            config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
        source = "untrained weights for timing"
    window = config.image_size
    modes = inference_modes(config.inference, window, args.xla)
    print(f"retina-seg inference benchmark: {config.arch.name.value} {config.backbone.name}, {window} px window, "
          f"inference.batch_size {config.inference.batch_size}, memory budget {config.inference.memory_budget_mb} MB;"
          f" best of {args.repeats}, ms per image ({source})", flush=True)
    photo = splits["train"].images[0] if have_data else None
    for width, height in args.sizes:
        image = timing_image(photo, width, height, config.seed)
        raw = Predictor(model, window, config.data.sampling, modes["whole"])
        padded = np.pad(image, ((0, -height % 32), (0, -width % 32), (0, 0)), mode="symmetric")[None]
        raw_wall, raw_cpu = best_ms(partial(raw.predict, padded), args.repeats, not args.no_warm_up)
        print(f"  {width}x{height}   raw forward of {padded.shape[2]}x{padded.shape[1]} in one pass "
              f"{raw_wall:9.0f} ms  (CPU {raw_cpu:.0f} ms)")
        for label, settings in modes.items():
            predictor = Predictor(model, window, config.data.sampling, settings)
            wall, cpu = best_ms(partial(predictor, image), args.repeats, not args.no_warm_up)
            tile = predictor.whole_tile(height, width) if settings.mode is InferenceMode.whole else None
            how = f"  (tiles of {tile} px: over the memory budget)" if tile else ""
            print(f"  {width}x{height}   {label:24s} {wall:9.0f} ms  {wall / raw_wall:6.2f}x raw  "
                  f"(CPU {cpu:.0f} ms, {cpu / raw_cpu:.2f}x raw){how}", flush=True)
    if not have_data:
        print(f"  agreement     skipped: no CHASE_DB1 copy at {args.chase_root} (--chase-root PATH)")
        return
    if not args.run_id:
        model = train_briefly(config, splits, args.train_minutes)
    print(f"  agreement on CHASE_DB1 test ({len(splits['test'])} images; difference to tiles, stride window/2):")
    agreement(model, config, splits, {label: m for label, m in modes.items() if not m.jit_compile})


def size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    parser.add_argument("--precision-steps", type=int, default=5, help="timed training steps per precision")
    parser.add_argument("--chase-root", type=Path, default=SHARED_CHASE)
    parser.add_argument("--sizes", type=size, nargs="*", default=list(SIZES), help="WIDTHxHEIGHT images to time")
    parser.add_argument("--idrid-root", type=Path, default=SHARED_IDRID, help="IDRiD copy for the photograph section")
    parser.add_argument("--photo-size", type=size, default=(4288, 2848), help="WIDTHxHEIGHT of the lesion photograph")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions per inference measurement")
    parser.add_argument("--run-id", help="a trained run: the inference section's agreement (default: train "
                        "briefly), the photograph section's lesion model (default: the recipe's, untrained)")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    parser.add_argument("--train-minutes", type=float, default=8.0)
    parser.add_argument("--xla", action="store_true", help="also time whole-image inference XLA-compiled")
    parser.add_argument("--serving-seconds", type=float, default=60, help="4-client load test length (0: skip)")
    parser.add_argument("--no-warm-up", action="store_true", help="time the first call (tracing included)")
    args, overrides = parser.parse_known_args()
    for section in args.sections:
        SECTIONS[section](args, overrides)


SECTIONS = {"pipeline": pipeline_section, "precision": precision_section, "inference": inference_section,
            "photograph": photograph_section, "serving": serving_section}

if __name__ == "__main__":
    main()
