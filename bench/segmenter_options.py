"""Parameters and FLOPs of the TASAD segmenter for its config.model options.

  python bench/segmenter_options.py [--bases 128 16] [--size 256]

Prints one JSON line per base width w, skip ('none', 'concat', 'add') and
levels (2, 3, 4): the parameter count of the Flax module (`jax.eval_shape`
of its init, so nothing is computed) and GFLOP (multiply-adds x 2 of the
convolutions) of one forward pass of a size x size image. The paper's net is
w 128, skip 'none', levels 2. Also checks that `segmenter.conv_layout`, which
`forward_flops` counts, has the module's parameters. No TensorFlow.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from tasad_jax.models import segmenter  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--bases', type=int, nargs='+', default=[128, 16])
  parser.add_argument('--size', type=int, default=256)
  args = parser.parse_args()
  for width in args.bases:
    for levels in segmenter.LEVELS:
      for skip in segmenter.SKIPS:
        model = segmenter.Segmenter(width=width, skip=skip, levels=levels)
        shapes = jax.eval_shape(lambda m=model: m.init(
            jax.random.key(0), jnp.zeros((1, args.size, args.size, 3))))
        params = segmenter.count_params(shapes['params'])
        layout = segmenter.conv_layout(width, levels, skip=skip)
        if segmenter.layout_params(layout) != params:
          raise SystemExit(f'conv_layout disagrees with the module: {model}')
        print(json.dumps({
            'bench': 'segmenter_options', 'width': width, 'skip': skip,
            'levels': levels, 'size': args.size, 'params': params,
            'gflop': round(segmenter.segmenter_flops(model, args.size) / 1e9,
                           3)}), flush=True)


if __name__ == '__main__':
  main()
