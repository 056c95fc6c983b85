"""Images/s of two-stage inference: the one-program device path vs the host path.

  python bench/inference.py [--sizes demo paper] [--batch 8]

For each setting (demo: 128x128, width 16; paper: 256x256, width 128) prints a
JSON line with `size`, `device_images_per_s` (CAS -> FAS input -> FAS -> map ->
score, one jitted program) and `host_images_per_s` (the same with the FAS input
made on the host by scikit-image, as TASAD's reference does). Networks are
randomly initialised: speed does not depend on the weights. No TensorFlow.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from tasad_jax.config.presets import default  # pylint: disable=g-import-not-at-top
from tasad_jax.fine import fas
from tasad_jax.inference import two_stage
from tasad_jax.core import sharding

SETTINGS = {'tiny': (32, 4), 'demo': (128, 16), 'paper': (256, 128)}


def images_per_s(runner, images, repeats):
  runner(images)  # Compile.
  start = time.perf_counter()
  for _ in range(repeats):
    runner(images)
  return repeats * len(images) / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', nargs='+', default=['demo', 'paper'],
                      choices=sorted(SETTINGS))
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  mesh = sharding.make_mesh()
  for name in args.sizes:
    size, width = SETTINGS[name]
    config = default.get_config()
    config.data.image_size, config.model.width = size, width
    fine_stage = fas.FineStage(config)
    coarse = fine_stage.coarse
    variables = [coarse.inference_variables(coarse.create_state(mesh)),
                 fine_stage.inference_variables(fine_stage.create_state(mesh))]
    params = fas.refine_params(config, training=False)
    images = np.random.default_rng(0).random(
        (args.batch, size, size, 3)).astype(np.float32)
    rates = {}
    for on_device in (True, False):
      runner = two_stage.TwoStage(fine_stage, *variables, params, mesh,
                                  on_device=on_device)
      rates[on_device] = images_per_s(runner, images, args.repeats)
    print(json.dumps({
        'bench': 'inference', 'setting': name, 'size': size, 'width': width,
        'batch': args.batch, 'backend': jax.default_backend(),
        'device_images_per_s': round(rates[True], 2),
        'host_images_per_s': round(rates[False], 2),
        'speedup': round(rates[True] / rates[False], 3)}), flush=True)


if __name__ == '__main__':
  main()
