"""Runs an exported network the way a user without retina-seg would: `python standalone.py <export folder>
<input.npy> <output.npy>`; only TensorFlow or onnxruntime, never retina_seg, is imported."""

import json
import sys
from pathlib import Path

import numpy as np

folder, image = Path(sys.argv[1]), np.load(sys.argv[2])
spec = json.loads((folder / "inference.json").read_text())
path = folder / spec["file"]
if spec["format"] == "savedmodel":
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    prob = loaded.serve(tf.constant(image)).numpy()
elif spec["format"] == "tflite":
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    prob = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
else:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prob = session.run(None, {spec["input"]["name"]: image})[0]
assert "retina_seg" not in sys.modules and "segmentation_models" not in sys.modules
np.save(sys.argv[3], prob)
