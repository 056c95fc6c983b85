"""Portable forms of the fine stage's input, and the ONNX and TFLite exports.

The fine stage's input is written without scatters, sorts or data-dependent
gathers so that the whole program exports; these tests hold it to the forms
it replaced (kept here as references) bit for bit, and the exported files to
the live JAX program in ONNX Runtime, OpenVINO and LiteRT.
"""

import csv
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import assert_one_error_line, copy_in_mode, run_script
import tasad_jax
from tasad_jax.core import scoring
from tasad_jax.deploy import export, exported_model
from tasad_jax.fine import selection, slic
from tasad_jax.inference import programs
from tasad_jax.runtime.errors import UserInputError


def _reference_seeds(coarse, params, boxes=None):
  """Steps 1-3 as first written: scatter-add histogram, bool table lookup,
  clamped gathers, a sort for the median."""
  r = jnp.clip(jnp.nan_to_num(jnp.abs(coarse) * 255.0, nan=0.0, posinf=255.0),
               0, 255).astype(jnp.int32)
  n, h, w = r.shape
  valid = (jnp.ones(r.shape, bool) if boxes is None
           else selection.box_mask(boxes, h, w))
  counts = jax.vmap(lambda v, m: jnp.zeros(256, jnp.int32).at[v.ravel()].add(
      m.ravel().astype(jnp.int32)))(r, valid)
  keep = counts <= params.histogram_fraction * counts.max(axis=1, keepdims=True)
  r = jnp.where(jnp.take_along_axis(keep, r.reshape(n, -1), axis=1)
                .reshape(r.shape), r, 0)
  boxes = (jnp.asarray([[0, 0, h, w]] * n, jnp.int32) if boxes is None
           else boxes)
  top, left = boxes[:, 0, None], boxes[:, 1, None]
  bottom, right = top + boxes[:, 2, None] - 1, left + boxes[:, 3, None] - 1
  window = []
  for dy in (-1, 0, 1):
    ys = jnp.clip(jnp.arange(h)[None] + dy, top, bottom)
    rows = jnp.take_along_axis(r, ys[:, :, None], axis=1)
    for dx in (-1, 0, 1):
      xs = jnp.clip(jnp.arange(w)[None] + dx, left, right)
      window.append(jnp.take_along_axis(rows, xs[:, None, :], axis=2))
  median = jnp.sort(jnp.stack(window, -1), axis=-1)[..., 4]
  return (median > params.seed_threshold) & valid


def _reference_regions(labels, seed_map):
  """Step 4 as first written: a scatter-max table of the seeded labels,
  looked up per pixel."""
  n = labels.shape[0]
  flat = labels.reshape(n, -1)
  kept = jax.vmap(lambda l, s: jnp.zeros(flat.shape[1] + 1, bool).at[l].max(s))(
      flat, seed_map.reshape(n, -1))
  return jnp.take_along_axis(kept, flat, axis=1).reshape(labels.shape)


def _inputs(rng, n, h, w):
  images = rng.random((n, h, w, 3)).astype(np.float32)
  images[:, h // 4:h // 2, w // 3:w // 2] *= 0.3
  coarse = (rng.random((n, h, w, 1)) ** 4 * 0.3
            * (rng.random((n, h, w, 1)) < 0.3)).astype(np.float32)
  coarse[:, h // 3:h // 2, w // 4:w // 2] += 0.3
  coarse[:, -1, 0] = np.nan  # A bad pixel on the map's edge.
  boxes = np.stack([[rng.integers(0, 4), rng.integers(0, 5), h - 6, w - 7]
                    for _ in range(n)]).astype(np.int32)
  return images, coarse, jnp.asarray(boxes)


@pytest.mark.parametrize('boxed', [False, True])
def test_portable_fine_input_equals_the_scatter_forms_bit_for_bit(boxed):
  images, coarse, boxes = _inputs(np.random.default_rng(0), 3, 36, 44)
  boxes = boxes if boxed else None
  for params in (selection.RefineParams(0.95, 30, 24),
                 selection.RefineParams(1.0, 0, 24)):
    seeds = jax.jit(lambda c: selection.seeds_device(c[..., 0], params, boxes))
    reference = jax.jit(lambda c: _reference_seeds(c[..., 0], params, boxes))
    np.testing.assert_array_equal(seeds(coarse), reference(coarse))
    assert 0 < np.asarray(seeds(coarse)).mean() < 1
    # The dense kept-superpixel regions against the label-table lookup.
    run = jax.jit(lambda c, x, choice=None, unroll=False:
                  selection.fas_inputs_device(c, x, params, choice, boxes,
                                              unroll),
                  static_argnames='unroll')
    choice = jax.jit(lambda x: slic.assign(x, params.n_segments))(images)
    labels = slic.labels(choice, 36, 44, params.n_segments)
    dense, region = run(coarse, images)
    table = _reference_regions(labels, seeds(coarse))
    if boxes is not None:
      table &= selection.box_mask(boxes, 36, 44)
    np.testing.assert_array_equal(region, table)
    assert 0 < np.asarray(region).mean() < 1
    for given in (run(coarse, images, choice), run(coarse, images, unroll=True)):
      for got, want in zip(given, (dense, region)):  # Superpixels given, and
        np.testing.assert_array_equal(got, want)  # SLIC's loop written out.


def test_median_network_is_the_sorted_middle():
  values = np.random.default_rng(1).integers(0, 6, (9, 5000))  # Many ties.
  got = selection._median9(list(jnp.asarray(values)))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, np.sort(values, axis=0)[4])


def test_mean_filter_sums_equal_reduce_window_bit_for_bit():
  maps = (np.random.default_rng(4).random((2, 45, 70, 1)) ** 3).astype(np.float32)
  for window in (3, 4, 21):
    want = maps
    for dims in ((1, window, 1, 1), (1, 1, window, 1)):
      want = jax.lax.reduce_window(want, 0.0, jax.lax.add, dims, (1, 1, 1, 1),
                                   'SAME')
    got = jax.jit(scoring._window_sums, static_argnums=1)(maps, window)  # pylint: disable=protected-access
    np.testing.assert_array_equal(got, want)


def test_matrix_resize_is_jax_image_resize():
  x = np.random.default_rng(2).random((2, 30, 41, 3)).astype(np.float32)
  for h, w in ((32, 32), (17, 64)):
    got = programs._resize(jnp.asarray(x), programs._resize_matrix(30, h),  # pylint: disable=protected-access
                           programs._resize_matrix(41, w))  # pylint: disable=protected-access
    want = jax.image.resize(x, (2, h, w, 3), 'linear', antialias=True)
    np.testing.assert_allclose(got, want, atol=1e-6)


# OpenVINO in a process of its own: its usage telemetry forks a process to
# send a report unless the user declined, which a process running JAX must
# not do; with HOME unset to a missing folder it finds no consent and sends
# nothing.
_OPENVINO = """
import sys
import numpy as np
import openvino as ov
data = np.load(sys.argv[2])
# float32 as exported: on CPUs with bfloat16 units (AVX512_BF16, AMX)
# OpenVINO's default is to run in bfloat16, which moves maps by ~1e-3.
compiled = ov.Core().compile_model(sys.argv[1], 'CPU',
                                   {'INFERENCE_PRECISION_HINT': 'f32'})
out = {}
for key in [k for k in data if '_' not in k]:
  feed = {'images': data[key]}
  if key + '_superpixels' in data:
    feed['superpixels'] = data[key + '_superpixels']
  out[key + '_maps'], out[key + '_scores'] = compiled(feed).values()
np.savez(sys.argv[3], **out)
"""


def _openvino(path, batches, folder):
  """OpenVINO's (maps, scores) of a file for each batch of feeds."""
  np.savez(folder / 'in.npz', **{
      f'{i}{"" if k == "images" else "_" + k}': v
      for i, b in enumerate(batches) for k, v in b.items()})
  env = dict(os.environ, HOME=str(folder / 'no_home'))
  result = subprocess.run(
      [sys.executable, '-c', _OPENVINO, path, str(folder / 'in.npz'),
       str(folder / 'out.npz')], capture_output=True, text=True, timeout=300,
      check=False, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  out = np.load(folder / 'out.npz')
  return [(out[f'{i}_maps'], out[f'{i}_scores']) for i in range(len(batches))]


def _runtimes(path, tflite, batches, folder):
  """{runtime: [(maps, scores) of each batch]} of an ONNX file in ONNX
  Runtime and OpenVINO, and of a TFLite file (fixed batch: the first's) in
  LiteRT; a batch is a feed, {'images': ...} and with a model exported with
  `superpixels_input` {'superpixels': ...}."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  options.log_severity_level = 3  # Not its shape-merge warnings.
  session = ort.InferenceSession(path, options)
  lite = interpreter.Interpreter(model_path=tflite).get_signature_runner()
  out = lite(**batches[0])
  return {'onnxruntime': [session.run(None, b) for b in batches],
          'openvino': _openvino(path, batches, folder),
          'litert': [(out['anomaly_maps'], out['scores'])]}


# `predict.py --model` with JAX and TensorFlow made unimportable.
_PREDICT_WITHOUT_JAX = """
import sys
sys.modules['jax'] = sys.modules['tensorflow'] = None
from tasad_jax.cli import predict
predict.run(['predict.py'] + sys.argv[1:])
"""


@pytest.mark.parametrize('mode', ['squash', 'tile'])
def test_exports_equal_the_live_program(tiny_seeded, tiny_onnx, tmp_path,
                                       mode):
  """The two-stage program in ONNX Runtime, OpenVINO and LiteRT against
  JAX, squash (S x S) and a tile model on one canvas (another size than the
  training's)."""
  import onnx  # pylint: disable=g-import-not-at-top
  if mode == 'squash':  # `export.export(tiny_seeded, path, 'onnx')`
    workdir, path, (h, w) = tiny_seeded, tiny_onnx, (32, 32)
  else:
    workdir = copy_in_mode(tiny_seeded, str(tmp_path / 'tile'), 'tile')
    path, (h, w) = str(tmp_path / 'model.onnx'), (40, 52)
    assert export.export(workdir, path, 'onnx', h, w) == (h, w)
  tflite = str(tmp_path / 'model.tflite')
  assert export.export(workdir, tflite, 'tflite', *((0, 0) if mode == 'squash'
                                                    else (h, w)), batch=3) == (h, w)
  model = tasad_jax.load(workdir)
  meta = {p.key: p.value for p in onnx.load(path).metadata_props}
  assert meta['tasad_jax.input'].startswith(f'images: float32 [batch, {h}, {w}, 3]')
  assert float(meta['tasad_jax.image_threshold']) == model.thresholds['image']
  x = np.random.default_rng(3).random((3, h, w, 3)).astype(np.float32)
  live = jax.jit(export.program(model, h, w, 'output'))(x)
  if mode == 'squash':  # The export program is the predictor's,
    out = model.runner(x)
    np.testing.assert_allclose(live[0], out['tasad_map'], atol=1e-6)
    kept = np.mean(out['fas_input'] != 0, axis=(1, 2, 3))
    assert (kept > 0.1).all() and (kept < 0.9).all()  # and keeps superpixels.
  batches = ({'images': x}, {'images': x[:1]})  # The batch is symbolic.
  for name, outputs in _runtimes(path, tflite, batches, tmp_path).items():
    for batch, (maps, scores) in zip(batches, outputs):
      # The networks and scores agree to float round-off (~1e-8 here). SLIC
      # runs in the runtime too: a pixel whose colour distance to two
      # centres ties to within ~1e-6 may join the other superpixel, which
      # changes the FAS input there, so up to 1% of pixels may differ more.
      n = len(batch['images'])
      diff = np.abs(maps - np.asarray(live[0][:n]))
      assert np.mean(diff > 1e-5) <= 0.01, (name, diff.max())
      np.testing.assert_allclose(scores, live[1][:n], atol=1e-3, err_msg=name)
  # With JAX's superpixels fed in, everything else agrees to 1e-5.
  for fmt, batch in (('onnx', 0), ('tflite', 3)):
    assert export.export(workdir, str(tmp_path / f'fed.{fmt}'), fmt,
                         *((0, 0) if mode == 'squash' else (h, w)),
                         batch=batch or 1, superpixels_input=True) == (h, w)
  fed = [{'images': x, 'superpixels': np.asarray(live[2])},
         {'images': x[:1], 'superpixels': np.asarray(live[2][:1])}]
  for name, outputs in _runtimes(str(tmp_path / 'fed.onnx'),
                                 str(tmp_path / 'fed.tflite'), fed,
                                 tmp_path).items():
    for batch, (maps, scores) in zip(fed, outputs):
      n = len(batch['images'])
      np.testing.assert_allclose(maps, live[0][:n], atol=1e-5, err_msg=name)
      np.testing.assert_allclose(scores, live[1][:n], atol=1e-5, err_msg=name)
  for fmt in ('onnx', 'tflite'):  # Not a model to serve.
    with pytest.raises(UserInputError, match='--superpixels_input'):
      exported_model.ExportedModel(str(tmp_path / f'fed.{fmt}'))
  if mode == 'tile':  # Each file alone scores a folder, as the workdir does.
    photos = tmp_path / 'photos'
    photos.mkdir()
    images = list((x * 255).round().astype(np.uint8))
    for i, image in enumerate(images):
      Image.fromarray(image).save(photos / f'{i}.png')
    want = model.predict(images)
    for name, file in (('onnx', path), ('tflite', tflite)):
      out = tmp_path / f'out_{name}'
      result = subprocess.run(
          [sys.executable, '-c', _PREDICT_WITHOUT_JAX, f'--model={file}',
           f'--input={photos}', f'--output={out}'],
          capture_output=True, text=True, timeout=300, check=False)
      assert result.returncode == 0, result.stderr[-2000:]
      with open(out / 'scores.csv', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
      np.testing.assert_allclose([float(r['score']) for r in rows],
                                 want['scores'], atol=1e-3, err_msg=name)
      assert [r['decision'] for r in rows] == [str(int(d)) for d in
                                               want['decisions']]
      assert len(os.listdir(out / 'masks')) == 3


@pytest.mark.parametrize('mode', ['tiles', 'pad', 'coarse'])
def test_other_programs_export(tiny_seeded, tmp_path, mode):
  """The other programs in ONNX Runtime against JAX: a tile model above its
  whole-image bound (tiles in a loop, blended), a pad model (resized to its
  working size and back), and a model without its fine stage."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / mode)
  if mode == 'coarse':
    shutil.copytree(tiny_seeded, workdir)
    shutil.rmtree(os.path.join(workdir, 'checkpoints', 'fas'))
    h, w = 32, 32
  else:
    copy_in_mode(tiny_seeded, workdir, 'tile' if mode == 'tiles' else 'pad',
                 whole_image_pixels=0)
    h, w = 40, 52
  path = str(tmp_path / 'model.onnx')
  assert export.export(workdir, path, 'onnx', *((0, 0) if mode == 'coarse'
                                                else (h, w))) == (h, w)
  model = tasad_jax.load(workdir)
  assert (model.runner.fas is None) == (mode == 'coarse')
  x = np.random.default_rng(5).random((2, h, w, 3)).astype(np.float32)
  live = jax.jit(export.program(model, h, w))(x)
  options = ort.SessionOptions()
  options.log_severity_level = 3
  maps, scores = ort.InferenceSession(path, options).run(None, {'images': x})
  diff = np.abs(maps - np.asarray(live[0]))  # As the test above.
  assert np.mean(diff > 1e-5) <= 0.01, diff.max()
  np.testing.assert_allclose(scores, live[1], atol=1e-3)


@pytest.mark.parametrize('flags,expected', [
    (['--model={missing}'], 'missing.onnx: no such file (--model)'),
    (['--model={image}'], 'x.png: --model takes a .onnx or .tflite file'),
    (['--model={fake}'], 'fake.tflite: not a model its runtime can load'),
    (['--model={image}', '--workdir={tmp}'], 'give one of --workdir'),
    ([], 'give one of --workdir'),
])
def test_predict_refuses_a_bad_model_file_in_one_line(tmp_path, flags, expected):
  image = tmp_path / 'x.png'
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
  (tmp_path / 'fake.tflite').write_bytes(b'not a flatbuffer')
  names = {'missing': tmp_path / 'missing.onnx', 'image': image, 'tmp': tmp_path,
           'fake': tmp_path / 'fake.tflite'}
  result = run_script('predict.py', *[f.format(**names) for f in flags],
                      f'--input={image}', f'--output={tmp_path / "out"}',
                      config=None)
  assert_one_error_line(result, expected)
  assert not (tmp_path / 'out').exists()
