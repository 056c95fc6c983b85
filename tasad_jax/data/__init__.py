"""Data: dataset readers and layouts (MVTec AD, VisA, folders, TFDS), anomaly
sources, pseudo-anomaly kinds, the tf.data train stream (the only TensorFlow
user), the synthetic validation split and weak labels."""
