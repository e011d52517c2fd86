"""Runs an exported network (or ensemble) the way a user without retina-seg would: `python standalone.py <export
folder> <input.npy> <output.npy>`; only TensorFlow or onnxruntime, never retina_seg, is imported."""

import json
import sys
from pathlib import Path

import numpy as np

folder, image = Path(sys.argv[1]), np.load(sys.argv[2])
spec = json.loads((folder / "inference.json").read_text())


def run(path: Path) -> np.ndarray:
    if spec["format"] == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept: its variables die with it
        return loaded.serve(tf.constant(image)).numpy()
    if spec["format"] == "tflite":
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {spec["input"]["name"]: image})[0]


# one network, or a cross-validation ensemble whose members' probabilities are averaged (inference.json's `combine`)
prob = np.mean([run(folder / member) for member in spec.get("members", [spec.get("file")])], axis=0)
assert "retina_seg" not in sys.modules and "segmentation_models" not in sys.modules
np.save(sys.argv[3], prob)
