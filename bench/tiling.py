"""Peak host memory of tiling and stitching a large image, by tile batch size.

  python bench/tiling.py [--height 2000] [--width 1200] [--tile 256]
                         [--batches 4 16 64]

Runs `whole_image.ImageRunner` ('tile', Hann blending, stride tile/2) on
one uint8 image with a stand-in network (a NumPy 3x3 mean of the tiles, two
outputs like CAS and CAS+FAS) and prints a JSON line per batch size: the
tracemalloc peak of the run (NumPy buffers: the canvas, the tile batch, the
stitching sums and weights, the maps), the image's own bytes, and what all
of its tiles with their maps would take at once. The peak grows with the batch
(B tiles in flight), not with the number of tiles; the network itself only
ever sees one batch. No JAX program, no TensorFlow.
"""

import argparse
import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy import ndimage

from tasad_jax.inference import whole_image  # pylint: disable=g-import-not-at-top
from tasad_jax.core import tiling

MB = 2 ** 20


def stand_in(tiles: np.ndarray) -> dict[str, np.ndarray]:
  """Two maps and scores per tile, as the two-stage program returns."""
  grey = tiles.mean(axis=-1)
  cas = ndimage.uniform_filter(grey, (1, 3, 3), mode='constant')
  return {'cas_map': cas, 'cas_score': cas.max(axis=(1, 2)),
          'tasad_map': cas + grey, 'tasad_score': (cas + grey).max(axis=(1, 2))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--height', type=int, default=2000)
  parser.add_argument('--width', type=int, default=1200)
  parser.add_argument('--tile', type=int, default=256)
  parser.add_argument('--batches', type=int, nargs='+', default=[4, 16, 64])
  args = parser.parse_args()
  image = np.random.default_rng(0).integers(
      0, 256, (args.height, args.width, 3), dtype=np.uint8)
  geometry = tiling.Geometry(mode='tile', size=args.tile)
  tiles = len(geometry.plan(args.height, args.width).tiles)
  tile_bytes = args.tile ** 2 * (3 + 2) * 4  # float32 RGB tile + two maps.
  for batch in args.batches:
    runner = whole_image.ImageRunner(
        stand_in, lambda m: float(m.max()), geometry, batch)
    tracemalloc.start()
    start = time.perf_counter()
    out = runner.run([image])
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out['tasad_map'][0].shape == image.shape[:2]
    print(json.dumps({
        'bench': 'tiling', 'height': args.height, 'width': args.width,
        'tile': args.tile, 'stride': geometry.tile_stride, 'tiles': tiles,
        'batch': batch, 'seconds': round(seconds, 3),
        'peak_mb': round(peak / MB, 1),
        'image_mb': round(image.nbytes / MB, 1),
        'batch_tiles_mb': round(batch * tile_bytes / MB, 1),
        'all_tiles_at_once_mb': round(tiles * tile_bytes / MB, 1)}),
          flush=True)


if __name__ == '__main__':
  main()
