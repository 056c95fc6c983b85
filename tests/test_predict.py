"""Using a trained model: thresholds, the Python API, predict.py, export."""

import csv
import os

import jax
import numpy as np
from PIL import Image
import pytest
from sklearn import metrics as skm

from conftest import run_script
import tasad_jax
from tasad_jax.deploy import export
from tasad_jax.core import metrics
from tasad_jax.data import holdout
from tasad_jax.inference import thresholds


@pytest.fixture
def workdir(tiny_workdir):
  return tiny_workdir


def test_holdout_is_disjoint_and_thresholds_are_written(workdir):
  images = np.arange(50)[:, None]
  kept, held = holdout.split_holdout(images, 0.1, seed=0)
  assert len(held) == 5 and len(kept) == 45
  assert not set(kept.ravel()) & set(held.ravel())
  assert len(holdout.split_holdout(images[:1], 0.1, 0)[1]) == 0
  values = thresholds.load(workdir)
  assert values['method'] == 'tasad' and values['target_false_alarm_rate'] == 0.01
  assert values['num_images'] == 20  # 10% of the 200 embedded train images.
  assert np.isfinite([values['image'], values['pixel']]).all()


def test_f1_optimal_threshold_matches_scikit_learn():
  rng = np.random.default_rng(0)
  labels = rng.random(300) < 0.3
  scores = rng.integers(0, 20, 300) / 20 + 0.3 * labels
  p, r, t = skm.precision_recall_curve(labels, scores)
  f1 = 2 * p * r / np.maximum(p + r, 1e-12)
  assert metrics.f1_optimal_threshold(scores, labels) == pytest.approx(t[np.argmax(f1[:-1])])


def test_predict_any_size_grey_and_float(workdir):
  model = tasad_jax.load(workdir)
  rng = np.random.default_rng(0)
  batch = rng.integers(0, 256, (3, 45, 70, 3), dtype=np.uint8)
  out = model.predict(batch)
  assert out['anomaly_maps'].shape == (3, 45, 70)
  assert out['scores'].shape == (3,) and out['decisions'].dtype == bool
  assert out['masks'].shape == (3, 45, 70) and out['masks'].dtype == bool
  as_float = model.predict(batch.astype(np.float32) / 255.0)
  np.testing.assert_allclose(as_float['scores'], out['scores'], rtol=1e-6)
  mixed = model.predict([batch[0, ..., 0], rng.random((20, 24, 4))])
  assert [m.shape for m in mixed['anomaly_maps']] == [(45, 70), (20, 24)]
  np.testing.assert_allclose(mixed['scores'][0], model.predict(
      np.repeat(batch[0, ..., :1], 3, -1))['scores'][0], rtol=1e-6)


def test_predict_cli_streams_a_folder_with_a_corrupt_file(workdir, tmp_path):
  folder = tmp_path / 'photos' / 'line 1'
  folder.mkdir(parents=True)
  rng = np.random.default_rng(1)
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (40 + i, 50), dtype=np.uint8)).save(
        folder / f'img {i}.png')
  (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnope')
  out = tmp_path / 'out'
  result = run_script('predict.py', f'--workdir={workdir}',
                      f'--input={tmp_path / "photos"}', f'--output={out}',
                      '--batch_size=2', config=None)
  assert result.returncode == 0, result.stderr
  with open(out / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6
  errors = [r for r in rows if r['error']]
  assert len(errors) == 1 and 'broken.png' in errors[0]['path']
  assert all(r['decision'] in ('0', '1') for r in rows if not r['error'])
  assert len(os.listdir(out / 'masks')) == 5 == len(os.listdir(out / 'heatmaps'))
  assert not (out / 'scores.csv.partial').exists()
  index = (out / 'index.html').read_text(encoding='utf-8')
  ranked = sorted((r for r in rows if not r['error']), key=lambda r: -float(r['score']))
  positions = [index.index(f'data-path="{r["path"]}"') for r in ranked]
  assert positions == sorted(positions) and 'broken.png' in index


def test_exports_give_the_live_maps(workdir, tmp_path):
  model = tasad_jax.load(workdir)
  x = np.random.default_rng(2).random((3, 32, 32, 3)).astype(np.float32)
  live = model.runner(x)
  path = str(tmp_path / 'model.stablehlo')
  export.export_stablehlo(model, path)
  with open(path, 'rb') as f:
    exported = jax.export.deserialize(f.read())
  for batch in (x, x[:1]):  # The batch dimension is symbolic.
    maps, scores = exported.call(batch)
    np.testing.assert_allclose(maps, live['tasad_map'][:len(batch)], atol=1e-5)
    np.testing.assert_allclose(scores, live['tasad_score'][:len(batch)], atol=1e-5)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / 'saved_model')
  export.export_saved_model(model, folder)
  served = tf.saved_model.load(folder).signatures['serving_default'](
      images=tf.constant(x))
  np.testing.assert_allclose(served['anomaly_maps'].numpy(), live['tasad_map'],
                             atol=1e-5)
  np.testing.assert_allclose(served['scores'].numpy(), live['tasad_score'],
                             atol=1e-5)
