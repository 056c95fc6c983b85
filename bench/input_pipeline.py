"""Images/s of the pseudo-anomaly train stream, after warm-up.

  python bench/input_pipeline.py [--size 256] [--batch 32] [--batches 30]

Prints one JSON line per stage. The reference generator runs scikit-image SLIC
per sample (~90 ms at 256x256, holding the GIL); here SLIC maps are cached and
the per-sample work is TensorFlow graph ops in a parallel tf.data map.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tasad_jax.config.presets import demo  # pylint: disable=g-import-not-at-top
from tasad_jax.data import splits
from tasad_jax.data import pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--warmup', type=int, default=5)
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  config = demo.get_config()
  config.data.image_size = args.size
  train_images = splits.load_split(config, 'train')['image']
  cas = pipeline.load_train_data(config, 'cas', train_images)
  fas = pipeline.load_train_data(config, 'fas', train_images, cas.sources)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  for stage, data in (('cas', cas), ('fas', fas)):
    it = pipeline.train_dataset(
        data, config, stage, batch_size=args.batch, process_index=0,
        process_count=1).as_numpy_iterator()
    for _ in range(args.warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    rate = args.batches * args.batch / (time.perf_counter() - start)
    print(json.dumps({
        'bench': 'input_pipeline', 'stage': stage, 'size': args.size,
        'batch': args.batch, 'cpu_cores': cores,
        'images_per_s': round(rate, 1),
        'images_per_s_per_core': round(rate / cores, 1)}), flush=True)


if __name__ == '__main__':
  main()
