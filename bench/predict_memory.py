"""Peak memory and time of predict.py on large images, in 'tile' mode.

  python bench/predict_memory.py [--sizes 9000x9000 20000x4000] [--tile 128]
                                 [--stride 0] [--workdir W]

Trains a throwaway tile-mode model in a temporary folder (the tiny config's
networks, `--tile`-pixel tiles, 2 + 2 steps: its weights do not matter, its
shapes and programs do), or takes a copy of `--workdir` switched to 'tile'
at its own image size, writes each image as a JPEG of random texture, and
runs `predict.py` on it in a fresh process, printing a JSON line per image:
its size, the seconds of the whole command (start-up and compiles
included), the images per second, and the process's peak resident memory
(`ru_maxrss`). A single image per call is the worst case of
`batch_predict.MAX_BATCH_PIXELS`. No TensorFlow in the predicting process.
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

MB = 2 ** 20
# Runs predict.py in this process and prints its peak RSS (KiB on Linux).
MEASURE = '''import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
  code = e.code or 0
else:
  code = 0
print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code,
      file=sys.stderr)
'''


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', nargs='+', default=['9000x9000', '20000x4000'],
                      help='HEIGHTxWIDTH of each image')
  parser.add_argument('--tile', type=int, default=128)
  parser.add_argument('--stride', type=int, default=0,
                      help='pixels between tiles (0: half a tile); memory '
                      'does not depend on it, time does')
  parser.add_argument('--workdir', default='',
                      help='a trained workdir to copy instead of training')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'model')
    if args.workdir:
      workdirs.tile_copy(args.workdir, workdir, stride=args.stride)
    else:
      workdirs.train(workdir, args.tile, args.stride)
    rng = np.random.default_rng(0)
    for size in args.sizes:
      h, w = (int(v) for v in size.split('x'))
      folder = os.path.join(tmp, size)
      os.makedirs(folder)
      texture = rng.integers(60, 200, (h // 8 + 1, w // 8 + 1), np.uint8)
      image = Image.fromarray(texture).resize((w, h), Image.BILINEAR)
      image.convert('RGB').save(os.path.join(folder, 'image.jpg'), quality=90)
      del image
      start = time.perf_counter()
      result = subprocess.run(
          [sys.executable, '-c', MEASURE, os.path.join(REPO, 'predict.py'),
           f'--workdir={workdir}', f'--input={folder}',
           f'--output={os.path.join(tmp, "out_" + size)}'],
          capture_output=True, text=True, check=False,
          env=workdirs.SHELL_ENV)
      seconds = time.perf_counter() - start
      rss, code = result.stderr.split('MAXRSS')[-1].split()[:2]
      if code != '0':
        sys.exit(f'predict.py failed on {size}:\n{result.stderr[-3000:]}')
      print(json.dumps({
          'bench': 'predict_memory', 'height': h, 'width': w,
          'megapixels': round(h * w / 1e6, 1), 'stride': args.stride,
          'seconds': round(seconds, 1),
          'peak_rss_mb': round(int(rss) / 1024, 0)}), flush=True)


if __name__ == '__main__':
  main()
