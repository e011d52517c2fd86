"""What the JSON of a model built here can contain, as an allow-list for JSON read from elsewhere.

A Keras model JSON is code in disguise: each object names a module that tf-keras imports and a class it
instantiates, and a `Lambda` layer carries marshalled Python bytecode. A JSON read from a store or a folder is
therefore rebuilt only when every object in it is one that `model.factory` writes for the architectures and
backbones in `conf/` (both normalisations) or that `model.precision` writes (mixed policies), and every
`Lambda` runs one of the functions segmentation_models' own encoders use (SE-ResNet's `expand_dims`).
`tests/model/test_factory.py` builds every configured backbone and architecture and checks that this list
covers what they write, so a new backbone with a new layer class is caught there.
"""

from __future__ import annotations

import base64
import binascii
import marshal
from typing import Any, Iterator

from classification_models.models._common_blocks import expand_dims

# (module, class_name, registered_name) of every object the factory's models serialise to (tf-keras 2.21)
KNOWN_OBJECTS = frozenset({
    *(("keras.layers", name, None) for name in (
        "Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D", "DepthwiseConv2D",
        "GlobalAveragePooling2D", "InputLayer", "Lambda", "MaxPooling2D", "Multiply", "ReLU", "Reshape",
        "UpSampling2D", "ZeroPadding2D")),
    *(("keras.initializers", name, None) for name in ("GlorotUniform", "HeUniform", "Ones", "VarianceScaling",
                                                      "Zeros")),
    ("keras.mixed_precision", "Policy", None),  # mixed-precision layer policies
    ("tf_keras.src.engine.functional", "Functional", "Functional"),  # the model
    (None, "Functional", None),  # a model nested in the backbone-normalisation wrapper
    ("efficientnet.model", "FixedDropout", "FixedDropout"),
})
# the functions segmentation_models' encoders wrap in Lambda layers (SE-ResNet's squeeze-and-excitation blocks)
KNOWN_FUNCTIONS = (expand_dims,)


def objects(architecture: Any) -> Iterator[dict]:
    """Every serialised object (a dict with a `class_name`) in a model's JSON, at any depth."""
    if isinstance(architecture, dict):
        if "class_name" in architecture:
            yield architecture
        for value in architecture.values():
            yield from objects(value)
    elif isinstance(architecture, list):
        for value in architecture:
            yield from objects(value)


def unknown_objects(architecture: dict) -> list[str]:
    """The class names of the objects in `architecture` (a parsed model JSON) that no model built here contains,
    sorted; `Lambda (own function)` for a Lambda layer whose function is not one of KNOWN_FUNCTIONS."""
    found = set()
    for node in objects(architecture):
        kind = (node.get("module"), node["class_name"], node.get("registered_name"))
        if kind not in KNOWN_OBJECTS:
            found.add(str(node["class_name"]))
        elif node["class_name"] == "Lambda" and not _known_function(node.get("config", {})):
            found.add("Lambda (own function)")
    return sorted(found)


def _known_function(config: dict) -> bool:
    """Whether a Lambda layer's config runs one of KNOWN_FUNCTIONS, compared as code (the file name a code
    object records differs between installations; its bytecode, constants and names do not), with no defaults,
    closure or output-shape function of its own."""
    function = config.get("function")
    if config.get("function_type") != "lambda" or not isinstance(function, list) or len(function) != 3:
        return False
    if function[1:] != [None, None] or config.get("output_shape") is not None:
        return False
    try:  # unmarshalling builds a code object without running it
        code = marshal.loads(base64.decodebytes(str(function[0]).encode("ascii")))
    except (ValueError, EOFError, TypeError, binascii.Error):
        return False
    return any(code == known.__code__ for known in KNOWN_FUNCTIONS if known.__module__ == config.get("module"))
