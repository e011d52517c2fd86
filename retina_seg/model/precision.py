"""Numeric precision of a network: float32, or Keras' mixed policies (bfloat16 / float16 arithmetic, float32 weights).

A policy is a property of each layer, fixed when the layer is built, so it is applied to a model's
architecture (its JSON) rather than set process-wide: every layer computes in the mixed type except
the model's output layer (the final sigmoid), which stays float32, and so do the losses, metrics and
threshold search that read it. Weights are float32 under every policy, so one `<BACKBONE>_Retinal.json`
(always written in float32) and `.h5` reload at any precision.

`auto` picks `16-mixed` on a CUDA GPU with tensor cores (compute capability 7.0 or more), and on a CPU
`bf16-mixed` only when a bfloat16 convolution step (forward and gradients), measured here, is clearly faster
than the same step in float32; `32` otherwise. CPUs without bfloat16 units emulate it: measured on an AMD EPYC
(AVX2 only), a ResNet-18 U-Net's training step took 11x as long in bfloat16.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from functools import cache

import tensorflow as tf

POLICIES = {"32": "float32", "bf16-mixed": "mixed_bfloat16", "16-mixed": "mixed_float16"}
TENSOR_CORES = (7, 0)  # compute capability of NVIDIA's first GPUs with tensor cores (Volta)
BF16_GAIN = 1.3  # bfloat16 must be at least this much faster than float32 for `auto` to choose it


@dataclass(frozen=True)
class Resolved:
    """The precision a job runs at (`32`, `bf16-mixed` or `16-mixed`) and, in one line, why."""

    name: str
    reason: str

    @property
    def policy(self) -> str:
        return POLICIES[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "32"


def resolve(precision: str) -> Resolved:
    """`precision` as configured, with `auto` decided for this machine (see the module docstring)."""
    if precision != "auto":
        return Resolved(precision, "set in the config")
    return _auto()


@cache
def _auto() -> Resolved:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return choose(tuple(capability), None)
    return choose(None, bfloat16_speedup())


def choose(gpu_capability: tuple | None, bf16_gain: float | None) -> Resolved:
    """`auto`'s rule, from what this machine reports (the first GPU's compute capability, None without one)
    or measures (bfloat16 speed over float32 on the CPU)."""
    if gpu_capability is not None:
        major, minor = gpu_capability
        if gpu_capability >= TENSOR_CORES:
            return Resolved("16-mixed", f"auto: GPU with compute capability {major}.{minor} (tensor cores)")
        return Resolved("32", f"auto: GPU with compute capability {major}.{minor}, below 7.0 (no tensor cores)")
    if bf16_gain >= BF16_GAIN:
        return Resolved("bf16-mixed", f"auto: a bfloat16 convolution step ran {bf16_gain:.1f}x as fast as float32 "
                                      "on this CPU")
    return Resolved("32", f"auto: a bfloat16 convolution step ran {bf16_gain:.2f}x as fast as float32 on this CPU "
                          f"(no bfloat16 units; {BF16_GAIN}x needed)")


def bfloat16_speedup(repeats: int = 3) -> float:
    """float32 time / bfloat16 time of a training step's worth of one 3x3 convolution (forward and both
    gradients) on a 64x64x32 feature map, each the median of `repeats` interleaved runs after
    a warm-up (oneDNN builds its kernels on the first call). 0 when this TensorFlow has no bfloat16 kernel."""
    def step(images, kernel):
        with tf.GradientTape() as tape:
            tape.watch([images, kernel])
            loss = tf.reduce_sum(tf.nn.conv2d(images, kernel, 1, "SAME"))
        return tape.gradient(loss, [images, kernel])

    images = tf.random.stateless_uniform((1, 64, 64, 32), seed=(1, 2))
    kernel = tf.random.stateless_uniform((3, 3, 32, 32), seed=(3, 4))
    dtypes = (tf.float32, tf.bfloat16)
    runs = {dtype: tf.function(step) for dtype in dtypes}
    inputs = {dtype: (tf.cast(images, dtype), tf.cast(kernel, dtype)) for dtype in dtypes}
    times = {dtype: [] for dtype in dtypes}
    try:
        for round_ in range(repeats + 1):
            for dtype in dtypes:
                started = time.perf_counter()
                [gradient.numpy() for gradient in runs[dtype](*inputs[dtype])]
                if round_:
                    times[dtype].append(time.perf_counter() - started)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError):  # no bfloat16 kernel registered
        return 0.0
    return statistics.median(times[tf.float32]) / statistics.median(times[tf.bfloat16])


def _walk_layers(config: dict, policy, outputs_stay_float: bool) -> None:
    """Set the dtype policy of every layer of a functional model config in place; input layers keep their
    tensor type, output layers stay float32 (a nested model's own outputs too, when it is an output)."""
    outputs = {entry[0] for entry in config.get("output_layers", [])}
    for layer in config.get("layers", []):
        inner = layer.get("config", {})
        if layer["class_name"] == "InputLayer":
            continue
        is_output = outputs_stay_float and inner.get("name") in outputs
        if "layers" in inner:  # a nested model
            _walk_layers(inner, policy, is_output)
        if "dtype" in inner:
            inner["dtype"] = "float32" if is_output else policy


def at_precision(architecture: str, resolved: Resolved | str) -> str:
    """A model's JSON with every layer at `resolved`'s policy (the output layers float32); `32` gives the
    float32 JSON the run logs, whatever policy the model was built with."""
    name = resolved.name if isinstance(resolved, Resolved) else resolved
    model = json.loads(architecture)
    policy = "float32" if name == "32" else tf.keras.utils.serialize_keras_object(
        tf.keras.mixed_precision.Policy(POLICIES[name]))
    config = copy.deepcopy(model)
    _walk_layers(config["config"], policy, outputs_stay_float=True)
    return json.dumps(config)


def policy_of(model: tf.keras.Model) -> str:
    """The policy name its layers compute at (that of its first layer after the inputs)."""
    return next(layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)).dtype_policy.name


def at_precision_model(model: tf.keras.Model, resolved: Resolved) -> tf.keras.Model:
    """The same network with the same (float32) weights, its layers at `resolved`'s policy: `model` itself when
    it computes at that policy already, else a rebuild from its JSON."""
    if policy_of(model) == resolved.policy:
        return model
    rebuilt = tf.keras.models.model_from_json(at_precision(model.to_json(), resolved))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def loss_scaled(optimizer: tf.keras.optimizers.Optimizer, resolved: Resolved) -> tf.keras.optimizers.Optimizer:
    """float16 gradients underflow without loss scaling (bfloat16 has float32's range and needs none)."""
    if resolved.name == "16-mixed":
        return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer
