"""Time to score a category: 200 test images at 256x256 (13M pixels).

  python bench/metrics.py [--images 200] [--size 256]

Prints one JSON line with the seconds `evaluate_maps` takes for all metrics
together (image AUROC/AP, pixel AUROC/AP/F1-max, AUPRO).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy import ndimage

from tasad_jax.core import metrics  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=200)
  parser.add_argument('--size', type=int, default=256)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  n, s = args.images, args.size
  labels = (np.arange(n) >= n // 3).astype(int)
  blobs = ndimage.gaussian_filter(rng.normal(size=(n, s, s)), (0, 6, 6))
  masks = (blobs > 2.5 * blobs.std()) & labels[:, None, None].astype(bool)
  maps = (masks + rng.normal(0, 0.7, masks.shape)).astype(np.float32)
  scores = maps.reshape(n, -1).max(1)
  start = time.perf_counter()
  result = metrics.evaluate_maps(maps, masks, scores, labels)
  seconds = time.perf_counter() - start
  print(json.dumps({'bench': 'metrics', 'images': n, 'size': s,
                    'pixels': int(maps.size), 'seconds': round(seconds, 3),
                    'anomalous_pixel_share': round(float(masks.mean()), 4),
                    **{k: round(v, 4) for k, v in result.items()}}))


if __name__ == '__main__':
  main()
