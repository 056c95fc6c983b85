"""Images per second of an exported model in JAX, ONNX Runtime and LiteRT.

  python bench/runtimes.py --workdir W [--onnx model.onnx] [--height H --width W]
                           [--batches 1 8] [--repeats 5] [--input FOLDER]

Exports the workdir's whole program to ONNX (`export.py --format=onnx`; or
takes `--onnx`, a file already exported from it) and to TFLite for each
batch size (`--format=tflite --batch=B`), then for each batch size prints a
JSON line per runtime (`jax`: the jitted export program; `onnxruntime`;
`litert`: the TFLite file in `ai_edge_litert`, XNNPACK on CPU): `ms_per_batch` and `images_per_s` of the
compiled program on random images, or on the images of `--input` (resized
to the program's size, repeated to fill a batch; the median of `--repeats`
calls after a warm-up call), and how far its maps and scores are from JAX's
(`max_map_diff`, `pixels_off`: the share of map values more than 1e-5 away,
`max_score_diff`). Then, for a two-stage model, a `runtimes_parity` line per
runtime and batch with the same distances when the files exported with
`--superpixels_input` are given JAX's superpixels (everything but SLIC), and
`fine_active`: the share of images whose fine stage kept a superpixel
(squash models). A last line says where ONNX Runtime's time goes: its
profile's share of each operator type at the largest batch (the networks are
`Conv`, the fine stage's superpixels mostly the elementwise, reduction and
`MatMul` nodes).

OpenVINO is not timed here: its usage telemetry forks a process, which a
process running JAX must not do (the tests run it in a process of its own).
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top

import timing  # pylint: disable=g-import-not-at-top


def ort_profile(path: str, images: np.ndarray) -> dict[str, float]:
  """ONNX Runtime's share of time by operator type on one call."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  options.log_severity_level = 3
  options.enable_profiling = True
  with tempfile.TemporaryDirectory() as folder:
    options.profile_file_prefix = os.path.join(folder, 'profile')
    session = ort.InferenceSession(path, options)
    session.run(None, {'images': images})
    with open(session.end_profiling()) as f:
      events = json.load(f)
  by_op = collections.Counter()
  for event in events:
    if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
      by_op[event['args']['op_name']] += event['dur']
  total = sum(by_op.values()) or 1
  return {op: round(t / total, 3) for op, t in by_op.most_common(8)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--onnx', default='', help='The workdir exported already.')
  parser.add_argument('--height', type=int, default=0)
  parser.add_argument('--width', type=int, default=0)
  parser.add_argument('--batches', type=int, nargs='+', default=[1, 8])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--input', default='', help='A folder of images (else '
                      'random images).')
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
  import tasad_jax  # pylint: disable=g-import-not-at-top
  from tasad_jax.deploy import export  # pylint: disable=g-import-not-at-top

  model = tasad_jax.load(args.workdir)
  h, w = export.image_shape(model.geometry, args.height, args.width)
  with tempfile.TemporaryDirectory() as folder:
    path = args.onnx
    if not path:
      path = os.path.join(folder, 'model.onnx')
      start = time.perf_counter()
      export.export_onnx(model, path, h, w)
      print(json.dumps({'bench': 'runtimes_export', 'seconds': round(
          time.perf_counter() - start, 1), 'mb': round(
              os.path.getsize(path) / 1e6, 2)}), flush=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options)
    program = jax.jit(export.program(model, h, w))
    runtimes = {
        'jax': lambda x: [np.asarray(v) for v in program(x)],
        'onnxruntime': lambda x: session.run(None, {'images': x}),
    }
    pool = (load_images(args.input, h, w, max(args.batches)) if args.input
            else np.random.default_rng(0).random(
                (max(args.batches), h, w, 3)).astype(np.float32))
    parity = model.runner.fas is not None
    if parity:
      fed_path = os.path.join(folder, 'fed.onnx')
      export.export_onnx(model, fed_path, h, w, superpixels_input=True)
      fed = ort.InferenceSession(fed_path, options)
      with_superpixels = jax.jit(export.program(model, h, w, 'output'))
    for batch in args.batches:
      images = np.resize(pool, (batch,) + pool.shape[1:])
      tflite = os.path.join(folder, f'model_{batch}.tflite')
      export.export_tflite(model, tflite, h, w, batch)
      lite = interpreter.Interpreter(model_path=tflite).get_signature_runner()
      runtimes['litert'] = lambda x, lite=lite: [
          v for _, v in sorted(lite(images=x).items())]  # maps, scores.
      reference = runtimes['jax'](images)
      for name, run in runtimes.items():
        seconds = timing.median_seconds(lambda: run(images), 1, args.repeats)  # pylint: disable=cell-var-from-loop
        maps, scores = run(images)
        diff = np.abs(np.asarray(maps) - reference[0])
        print(json.dumps({
            'bench': 'runtimes', 'runtime': name, 'batch': batch,
            'size': f'{h}x{w}', 'ms_per_batch': round(1e3 * seconds, 2),
            'images_per_s': round(batch / seconds, 2),
            'max_map_diff': float(diff.max()),
            'pixels_off': float(np.mean(diff > 1e-5)),
            'max_score_diff': float(np.abs(np.asarray(scores)
                                           - reference[1]).max())}),
              flush=True)
      if parity:
        print_parity(model, export, fed, folder, with_superpixels, images, h, w)
    print(json.dumps({'bench': 'runtimes_profile', 'runtime': 'onnxruntime',
                      'batch': args.batches[-1],
                      'share_by_op': ort_profile(path, images)}))


def load_images(folder: str, height: int, width: int, count: int
                ) -> np.ndarray:
  """Up to `count` images of a folder (sorted), RGB in [0, 1], resized to
  height x width as `predict.py --model` does."""
  from tasad_jax.data import imageio  # pylint: disable=g-import-not-at-top
  paths = sorted(os.path.join(folder, n) for n in os.listdir(folder))
  paths = [p for p in paths if imageio.is_image_file(p)][:count]
  if not paths:
    raise SystemExit(f'{folder}: no images (--input)')
  return np.stack([imageio.resize_image(imageio.read_image(p), (height, width))
                   for p in paths]).astype(np.float32) / 255.0


def print_parity(model, export, fed, folder: str, with_superpixels,
                 images: np.ndarray, h: int, w: int) -> None:
  """`runtimes_parity` lines: the files exported with `superpixels_input`
  against JAX, given JAX's superpixels."""
  from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
  maps, scores, superpixels = (np.asarray(v) for v in with_superpixels(images))
  feed = {'images': images, 'superpixels': superpixels}
  tflite = os.path.join(folder, f'fed_{len(images)}.tflite')
  export.export_tflite(model, tflite, h, w, len(images), superpixels_input=True)
  lite = interpreter.Interpreter(model_path=tflite).get_signature_runner()
  active = None
  if model.geometry.mode == 'squash':
    active = float(np.mean(np.any(model.runner(images)['fas_input'] != 0,
                                  axis=(1, 2, 3))))
  for name, out in (('onnxruntime', fed.run(None, feed)),
                    ('litert', [v for _, v in sorted(lite(**feed).items())])):
    diff = np.abs(np.asarray(out[0]) - maps)
    print(json.dumps({
        'bench': 'runtimes_parity', 'runtime': name, 'superpixels': 'jax',
        'batch': len(images), 'size': f'{h}x{w}', 'fine_active': active,
        'max_map_diff': float(diff.max()),
        'pixels_off': float(np.mean(diff > 1e-5)),
        'max_score_diff': float(np.abs(np.asarray(out[1]) - scores).max())}),
          flush=True)


if __name__ == '__main__':
  main()
