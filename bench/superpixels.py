"""SLIC in JAX vs scikit-image: quality on real defects, and speed.

  python bench/superpixels.py --root ../shared/data/magnetic_tile --category . \
      [--size 256] [--images 40]

Quality on the defect images of an MVTec-layout category (ground-truth masks):
boundary recall (share of mask-boundary pixels within 2 px of a superpixel
boundary) and achievable segmentation accuracy (ASA: each superpixel labelled
with its majority class). Speed: per image, batch 8, after compilation, for
SLIC alone and for the whole FAS input (histogram filter, median, SLIC, crop).
Prints one JSON line per measurement.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from tasad_jax.fine import selection, slic  # pylint: disable=g-import-not-at-top
from tasad_jax.data import mvtec


def boundary_recall(labels, mask, tolerance=2):
  edges = find_boundaries(mask.astype(int), mode='inner')
  if not edges.any():
    return None
  near = ndimage.binary_dilation(find_boundaries(labels), iterations=tolerance)
  return float(near[edges].mean())


def asa(labels, mask):
  counts = np.zeros((labels.max() + 1, 2))
  np.add.at(counts, (labels.ravel(), mask.ravel().astype(int)), 1)
  return float(counts.max(axis=1).sum() / mask.size)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', required=True)
  parser.add_argument('--category', required=True)
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--images', type=int, default=40)
  parser.add_argument('--n_segments', type=int, default=250)
  args = parser.parse_args()
  category = mvtec.scan_category(args.root, args.category)
  defects = [s for s in category.test if s.label][::max(
      1, sum(s.label for s in category.test) // args.images)][:args.images]
  data = mvtec.load_samples(defects, args.size)
  images = data['image'].astype(np.float32) / 255.0
  masks = data['mask'][..., 0]
  params = selection.RefineParams(n_segments=args.n_segments)
  device_slic = jax.jit(lambda x: slic.slic(x, params.n_segments,
                                             params.compactness, params.sigma))
  ours = np.concatenate([np.asarray(device_slic(jnp.asarray(images[i:i + 8])))
                         for i in range(0, len(images), 8)])
  theirs = np.stack([selection.superpixels(img, params) for img in images])
  for name, labels in (('jax', ours), ('skimage', theirs)):
    recalls = [r for r in (boundary_recall(l, m) for l, m in zip(labels, masks))
               if r is not None]
    print(json.dumps({
        'bench': 'superpixel_quality', 'impl': name, 'size': args.size,
        'images': len(images), 'boundary_recall': round(np.mean(recalls), 4),
        'asa': round(np.mean([asa(l, m) for l, m in zip(labels, masks)]), 5),
        'segments_per_image': round(float(np.mean(
            [len(np.unique(l)) for l in labels])), 1)}), flush=True)

  batch = jnp.asarray(images[:8])
  coarse = np.asarray(masks[:8, ..., None], np.float32) * 0.5
  fas = jax.jit(lambda c, x: selection.fas_inputs_device(c, x, params)[0])

  def timed(fn, repeats=3):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeats / len(batch)

  host_slic = timed(lambda: [selection.superpixels(img, params) for img in images[:8]])
  host_fas = timed(lambda: selection.fas_inputs(coarse, images[:8], params,
                                             num_threads=1))
  print(json.dumps({
      'bench': 'superpixel_speed', 'backend': jax.default_backend(),
      'size': args.size, 'batch': 8,
      'jax_slic_ms': round(1e3 * timed(lambda: device_slic(batch)), 2),
      'skimage_slic_ms': round(1e3 * host_slic, 2),
      'jax_fas_input_ms': round(1e3 * timed(lambda: fas(jnp.asarray(coarse), batch)), 2),
      'host_fas_input_ms': round(1e3 * host_fas, 2)}), flush=True)


if __name__ == '__main__':
  main()
