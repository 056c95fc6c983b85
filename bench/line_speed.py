"""Seconds per image of 'tile' inference, whole images vs tiles.

  python bench/line_speed.py [--workdir W] [--images 40] [--size 600x400]
                             [--jitter 0.1] [--modes whole tiles]
                             [--input 'photos/*.jpg']

Copies a trained workdir switched to 'tile' (or trains a throwaway model:
the tiny config's networks at `--tile` and `--width`; its weights do not
matter, its shapes and programs do, though with them the fine stage's skip
is not what a trained model's would be), writes `--images` JPEGs of random
texture about HEIGHTxWIDTH (each side varied by up to `--jitter`, as a
product's images vary) or takes the first `--images` files of `--input`,
and for each mode ('whole': the default
`config.data.whole_image_pixels`; 'tiles': 0, every image by tiles) prints a
JSON line with:

* `predict_seconds`, `predict_s_per_image`: `predict.py` on the folder in a
  fresh process, start-up, compiles and writing included;
* `steady_s_per_image`: the predictor in this process, all images in one
  call after a first call on the same images (compiled);
* `compiles`: the XLA programs that first call compiled.

With both modes, a last line compares their outputs: per image, the Pearson
correlation of the two maps (median and lowest), their mean absolute
difference, and the Spearman correlation and mean absolute difference of
the image scores.

No TensorFlow in the predicting processes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image

import workdirs  # pylint: disable=g-import-not-at-top

MODES = {'whole': {}, 'tiles': {'whole_image_pixels': 0}}


def write_images(folder: str, count: int, height: int, width: int,
                 jitter: float, seed: int = 0) -> list[np.ndarray]:
  """JPEGs of smooth random grey texture; returns the decoded images."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder)
  images = []
  for i in range(count):
    h, w = (max(8, int(round(side * (1 + rng.uniform(-jitter, jitter)))))
            for side in (height, width))
    texture = rng.integers(60, 200, (h // 8 + 1, w // 8 + 1), np.uint8)
    image = Image.fromarray(texture).resize((w, h), Image.BILINEAR)
    path = os.path.join(folder, f'{i:04d}.jpg')
    image.convert('RGB').save(path, quality=90)
    images.append(np.asarray(Image.open(path).convert('RGB')))
  return images


def read_images(pattern: str, count: int, folder: str) -> list[np.ndarray]:
  """The first `count` images of a glob, copied into `folder`."""
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(pattern))[:count]
  if not paths:
    sys.exit(f'--input: no file matches {pattern!r}')
  os.makedirs(folder)
  images = []
  for i, path in enumerate(paths):
    shutil.copy(path, os.path.join(folder, f'{i:04d}{os.path.splitext(path)[1]}'))
    images.append(np.asarray(Image.open(path).convert('RGB')))
  return images


def agreement(a: dict, b: dict) -> dict:
  """How close two predictions of the same images are."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  pairs = list(zip(a['anomaly_maps'], b['anomaly_maps']))
  # A constant map has no correlation (an untrained model's may be one).
  corr = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in pairs
          if x.std() > 0 and y.std() > 0]
  spearman = stats.spearmanr(a['scores'], b['scores'])[0]
  rounded = lambda v, d: None if v != v else round(float(v), d)
  return {'map_corr_median': rounded(np.median(corr), 3) if corr else None,
          'map_corr_min': rounded(np.min(corr), 3) if corr else None,
          'map_mean_abs_diff': round(float(np.mean(
              [np.abs(x - y).mean() for x, y in pairs])), 5),
          'score_spearman': rounded(spearman, 3),
          'score_mean_abs_diff': round(float(np.abs(
              a['scores'] - b['scores']).mean()), 4),
          'score_mean': round(float(np.mean(b['scores'])), 4)}


def compiles_of(fn) -> int:
  """The XLA programs compiled while `fn()` runs."""
  import jax  # pylint: disable=g-import-not-at-top
  count = [0]

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      count[0] += 1
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  return count[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='',
                      help='a trained workdir to copy instead of training')
  parser.add_argument('--tile', type=int, default=128)
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--images', type=int, default=40)
  parser.add_argument('--size', default='600x400', help='HEIGHTxWIDTH')
  parser.add_argument('--jitter', type=float, default=0.1)
  parser.add_argument('--modes', nargs='+', default=list(MODES),
                      choices=list(MODES))
  parser.add_argument('--input', default='',
                      help='a glob of images to use instead of textures')
  args = parser.parse_args()
  height, width = (int(v) for v in args.size.split('x'))
  with tempfile.TemporaryDirectory() as tmp:
    trained = os.path.join(tmp, 'trained')
    if args.workdir:
      workdirs.tile_copy(args.workdir, trained)
    else:
      workdirs.train(trained, args.tile, width=args.width)
    folder = os.path.join(tmp, 'images')
    images = (read_images(args.input, args.images, folder) if args.input
              else write_images(folder, args.images, height, width,
                                args.jitter))
    import tasad_jax  # pylint: disable=g-import-not-at-top
    outputs = {}
    for mode in args.modes:
      workdir = os.path.join(tmp, mode)
      workdirs.tile_copy(trained, workdir, **MODES[mode])
      start = time.perf_counter()
      result = subprocess.run(
          [sys.executable, os.path.join(REPO, 'predict.py'),
           f'--workdir={workdir}', f'--input={folder}',
           f'--output={os.path.join(tmp, "out_" + mode)}'],
          capture_output=True, text=True, check=False, env=workdirs.SHELL_ENV)
      seconds = time.perf_counter() - start
      if result.returncode:
        sys.exit(f'predict.py failed ({mode}):\n{result.stderr[-3000:]}')
      model = tasad_jax.load(workdir)
      compiles = compiles_of(lambda: model.predict(images))
      start = time.perf_counter()
      outputs[mode] = model.predict(images)
      steady = (time.perf_counter() - start) / len(images)
      print(json.dumps({
          'bench': 'line_speed', 'mode': mode, 'images': len(images),
          'size': args.size, 'jitter': args.jitter,
          'stages': model.method, 'predict_seconds': round(seconds, 1),
          'predict_s_per_image': round(seconds / len(images), 3),
          'steady_s_per_image': round(steady, 4), 'compiles': compiles}),
            flush=True)
    if len(outputs) == 2:
      print(json.dumps(dict(bench='line_speed', mode='whole vs tiles',
                            **agreement(outputs['whole'], outputs['tiles']))))


if __name__ == '__main__':
  main()
