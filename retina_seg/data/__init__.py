"""Data: dataset adapters that list files, reading and checking them into arrays, the synthetic set,
augmentation and the tf.data pipelines. Never imports model, training, inference or tracking."""
