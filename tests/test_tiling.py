"""Resize modes 'pad' and 'tile': geometry, stitching, metrics, train stream,
and a tiny tile run through train, evaluate, predict and export."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import ndimage

from conftest import REPO, copy_in_mode, run_script, write_tree
from tasad_jax.config import schema
from tasad_jax.core import metrics, tiling
from tasad_jax.inference import whole_image
from tasad_jax.runtime.errors import UserInputError

S = 32  # configs/tiny.py's image_size: the tile side.


def _geometry(mode, **kwargs):
  return tiling.Geometry(mode=mode, size=S, **kwargs)


def _runner(mode, tile_map, batch_size=4, **kwargs):
  """An ImageRunner over a fake network: tile_map(tiles [B, S, S, 3]) -> maps
  [B, S, S]; tile scores are the tile maxima, image scores the map maxima."""
  def tile_fn(x):
    maps = tile_map(x)
    return {'cas_map': maps, 'cas_score': maps.max(axis=(1, 2))}
  return whole_image.ImageRunner(tile_fn, lambda m: float(m.max()),
                                     _geometry(mode, **kwargs), batch_size)


def _brightness(x):
  return x.mean(axis=-1)


def _box_mean_zero_padded(x):
  """A 3x3 mean with zero padding, as a network's border effects would be."""
  return np.stack([ndimage.uniform_filter(m, 3, mode='constant')
                   for m in x.mean(axis=-1)])


@pytest.mark.parametrize('length,stride', [(32, 16), (33, 16), (100, 16),
                                           (100, 32), (70, 7)])
def test_tiles_cover_every_pixel_and_the_last_is_flush(length, stride):
  starts = tiling.tile_starts(length, S, stride)
  assert starts[0] == 0 and starts[-1] == length - S
  assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
  plan = _geometry('tile', stride=stride).plan(length, 20)
  assert plan.canvas == (length, S) and (tiling.weights(plan, 'hann') > 0).all()


@pytest.mark.parametrize('mode,blend', [('pad', 'hann'), ('tile', 'hann'),
                                        ('tile', 'mean')])
@pytest.mark.parametrize('shape', [(20, 32), (32, 9), (45, 70), (100, 33),
                                   (13, 17)])
def test_constant_image_gives_a_constant_map_of_its_size(mode, blend, shape):
  runner = _runner(mode, _brightness, blend=blend)
  images = [np.full(shape + (3,), 94, np.uint8)] * 2
  # As the predictor: to the working size, maps back at the input's size.
  out = runner.run(whole_image.to_working(images, runner.geometry),
                   sizes=[shape] * 2)
  for m in out['cas_map']:
    assert m.shape == shape
    np.testing.assert_allclose(m, 94 / 255, rtol=1e-6)
  np.testing.assert_allclose(out['cas_score'], 94 / 255, rtol=1e-6)


@pytest.mark.parametrize('blend', ['hann', 'mean'])
def test_defect_across_tile_boundaries_is_found_whole(blend):
  image = np.zeros((100, 90, 3), np.float32)
  defect = np.zeros((100, 90), bool)
  defect[40:57, 26:50] = True  # Across the tile edges at 32 and 48 (stride 16).
  image[defect] = 1.0
  runner = _runner('tile', _box_mean_zero_padded, blend=blend, stride=16)
  stitched = runner.run([image])['cas_map'][0]
  whole = _box_mean_zero_padded(image[None])[0]  # The map without tiles.
  # The window all but removes the tiles' border effects; the mean blurs them.
  assert np.abs(stitched - whole).max() < {'hann': 0.01, 'mean': 0.34}[blend]
  found, count = ndimage.label(stitched > 0.4)
  assert count == 1 and np.array_equal(found > 0, defect)


def test_metrics_never_count_padding():
  # A non-square image whose defect touches its top edge: 'pad' repeats the
  # edge into the padding above, where the map is then high too.
  image = np.full((20, 32, 3), 0.2, np.float32)
  mask = np.zeros((20, 32), bool)
  mask[:4, 10:20] = True
  image[mask] = 0.9
  normal = np.full((32, 12, 3), 0.2, np.float32)
  runner = _runner('pad', _brightness)
  maps = runner.run([image, normal])['cas_map']
  assert [m.shape for m in maps] == [(20, 32), (32, 12)]
  masks = tiling.ragged([mask, np.zeros((32, 12), bool)])
  scored = metrics.evaluate_maps(maps, masks, [1.0, 0.0], [1, 0])
  assert scored['pixel_ap'] == 1.0 and scored['pixel_f1_max'] == 1.0
  # Counting the padding (the whole square and the mask padded with zeros)
  # would find false positives there.
  plan = runner.geometry.plan(20, 32)
  square = _brightness(tiling.canvas(image, plan)[None])[0]
  padded_mask = np.zeros((S, S), bool)
  padded_mask[plan.top:plan.top + 20] = mask
  assert metrics.average_precision(square, padded_mask) < 0.8
  # Ragged input pools the pixels as arrays do.
  rng = np.random.default_rng(0)
  a, b = rng.random((2, 2, 9, 7)), rng.random((2, 2, 9, 7)) > 0.7
  as_arrays = metrics.evaluate_maps(a, b, [0.2, 0.8], [0, 1])
  as_lists = metrics.evaluate_maps(tiling.ragged(list(a)), list(b), [0.2, 0.8],
                                   [0, 1])
  assert as_arrays == as_lists


def test_geometry_fields_are_checked():
  for kwargs, field in [({'mode': 'crop'}, 'resize'), ({'scale': 0.0}, 'scale'),
                        ({'stride': S + 1}, 'tile_stride'),
                        ({'blend': 'max'}, 'tile_blend'),
                        ({'max_side': -1}, 'max_side')]:
    with pytest.raises(UserInputError, match=field):
      tiling.Geometry(**dict({'mode': 'tile', 'size': S}, **kwargs)).check()
  g = _geometry('tile', scale=0.5, max_side=40)
  assert g.working_size(200, 101) == (100, 50) and g.eval_size(100, 50) == (40, 20)
  assert _geometry('pad').working_size(200, 101) == (S, 16)


def test_library_modules_import_without_tensorflow():
  code = ('import sys, tasad_jax.core.tiling, tasad_jax.inference.whole_image, '
          'tasad_jax.inference.two_stage; print([m for m in ("tensorflow", '
          '"tensorflow_datasets", "clu", "ml_collections") if m in sys.modules])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=REPO, timeout=120, check=True)
  assert out.stdout.strip() == '[]', out.stderr


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tiling') / 'data')
  write_tree(root, 'widget')
  return root


def _config(tree, mode):
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.root, config.data.category = tree, 'widget'
  config.data.resize = mode
  return config


def test_unsupported_combinations_are_refused(tree):
  for field, value in (('loader', 'tfds'), ('labelled_anomalies', 'test:1')):
    config = _config(tree, 'tile')
    config.data[field] = value
    with pytest.raises(UserInputError, match=f'config.data.{field}'):
      schema.check(config)


def test_train_stream_crops_tiles_and_keeps_anomalies_off_padding(tree):
  from tasad_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  for mode in ('tile', 'pad'):
    config = _config(tree, mode)
    config.anomaly.normal_probability = 0.0
    data = pipeline.load_train_data(config, 'cas')
    stream = pipeline.train_dataset(data, config, 'cas', batch_size=8,
                                          process_index=0, process_count=1)
    first, second = [next(stream.as_numpy_iterator()) for _ in range(2)]
    for key in first:  # The stream stays a pure function of (seed, index).
      np.testing.assert_array_equal(first[key], second[key])
    assert first['augmented'].shape == (8, S, S, 3)
    np.testing.assert_array_equal(first['label'], first['mask'].max((1, 2, 3)))
    if mode == 'tile':  # Every crop is a piece of one of the images.
      for crop in np.round(first['image'] * 255).astype(np.uint8):
        assert any(_contains(x, crop) for x in data.images)
    else:  # Outside each image's box: no mask, and the image untouched.
      boards = data.images.astype(np.float32) / 255.0
      for i in range(8):
        j = next(k for k, b in enumerate(boards)
                 if np.allclose(b, first['image'][i]))
        top, left, h, w = data.boxes[j]
        outside = np.ones((S, S), bool)
        outside[top:top + h, left:left + w] = False
        assert not first['mask'][i, outside].any()
        np.testing.assert_array_equal(first['augmented'][i][outside],
                                      first['image'][i][outside])


def _contains(image, crop):
  windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)
  return bool((windows == crop).all(axis=(-3, -2, -1)).any())


@pytest.fixture(scope='module')
def tile_workdir(tree, tmp_path_factory):
  """A tile-mode workdir of the tiny config (both stages, thresholds): its
  steps are the programs of every tiny run, compiled once per session."""
  from tasad_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config = _config(tree, 'tile')
  workdir = str(tmp_path_factory.mktemp('tile_run') / 'run')
  trainer.train_and_evaluate(config, workdir)
  return config, workdir


def test_tile_and_pad_evaluate_on_a_tiny_tree(tile_workdir):
  from tasad_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  config, workdir = tile_workdir
  with open(os.path.join(workdir, 'thresholds.json')) as f:
    assert np.isfinite(json.load(f)['pixel'])
  for mode in ('tile', 'pad'):  # The tile-trained weights, padded too.
    config = config.copy_and_resolve_references()
    config.data.resize = mode
    config.eval.max_side = 40
    report = evaluate.evaluate(config, workdir, ['widget'])
    assert report['resize']['mode'] == mode and report['num_images'] == 5
    for key in metrics.METRIC_KEYS:
      assert 0.0 <= report['tasad'][key] <= 1.0, (mode, key)
    assert os.path.isfile(os.path.join(workdir, 'eval', 'report.html'))
  # Scored from the stitched coarse map: the coarse stage's image metrics.
  config.model.fine_score = 'coarse'
  report = evaluate.evaluate(config, workdir, ['widget'])
  assert report['tasad']['image_auroc'] == report['cas']['image_auroc']


@pytest.mark.parametrize('fine_score', ['combined', 'coarse'])
def test_every_mode_predicts_and_exports_the_live_maps(tile_workdir, tmp_path,
                                                       fine_score):
  """One whole-image path: for every resize mode and image score, the
  exported program gives `predict`'s maps and scores."""
  import tasad_jax  # pylint: disable=g-import-not-at-top
  from tasad_jax.deploy import export  # pylint: disable=g-import-not-at-top
  from tasad_jax.inference import whole_image  # pylint: disable=g-import-not-at-top
  _, trained = tile_workdir
  rng = np.random.default_rng(0)
  for mode, (h, w), whole in (('squash', (S, S), 0), ('tile', (40, 52), 4096),
                             ('tile', (40, 52), 0), ('pad', (S, 20), 0)):
    # 'tile' whole (one canvas of 64 x 64) and by tiles (whole_image_pixels=0).
    model = tasad_jax.load(copy_in_mode(trained, str(tmp_path / f'{mode}{whole}'),
                                        mode, whole, fine_score=fine_score))
    images = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    live = model.predict(list(images) + [np.full((70, 45), 128, np.uint8)])
    assert [m.shape for m in live['anomaly_maps']] == [(h, w)] * 2 + [(70, 45)]
    path = str(tmp_path / f'{mode}{whole}.stablehlo')
    export.export_stablehlo(model, path, h, w)
    with open(path, 'rb') as f:
      maps, scores = jax.export.deserialize(f.read()).call(
          images / np.float32(255.0))
    np.testing.assert_allclose(maps, np.stack(live['anomaly_maps'][:2]),
                               atol=1e-5, err_msg=mode)
    np.testing.assert_allclose(scores, live['scores'][:2], atol=1e-5,
                               err_msg=mode)
    if fine_score == 'coarse':  # The two-stage score is the coarse stage's.
      x, _ = model.preprocess(list(images))
      both = whole_image.run_images(model.runner, model.geometry, x, 4,
                                    [m.shape[:2] for m in x])
      np.testing.assert_allclose(both['tasad_score'], both['cas_score'],
                                 atol=1e-6, err_msg=mode)


def test_tile_and_pad_predict_folders_and_refuse_a_missing_size(tile_workdir,
                                                                tmp_path):
  from tasad_jax.inference import batch_predict  # pylint: disable=g-import-not-at-top
  _, trained = tile_workdir
  rng = np.random.default_rng(0)
  for mode in ('tile', 'pad'):
    workdir = copy_in_mode(trained, str(tmp_path / mode), mode)
  result = run_script(  # Export needs the image size: one line, status 2.
      'export.py', f'--workdir={workdir}', f'--output={tmp_path / "x.stablehlo"}',
      config=None)
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert '--height and --width' in lines[0]
  photos = tmp_path / 'photos'
  photos.mkdir()
  for i, size in enumerate([(50, 80), (31, 33)]):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(
        photos / f'{i}.png')
  counts = batch_predict.predict_files(str(tmp_path / 'tile'), str(photos),
                                       str(tmp_path / 'out'), batch_size=2)
  assert counts == {'images': 2, 'scored': 2, 'failed': 0}
  masks = sorted(os.listdir(tmp_path / 'out' / 'masks'))
  assert masks == ['0.png.png', '1.png.png']  # The input's name, extension kept.
  assert Image.open(tmp_path / 'out' / 'masks' / '0.png.png').size == (80, 50)
