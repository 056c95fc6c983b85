"""The contract every registered coarse method keeps, in one test: with
TASAD's fine stage on top, it trains, resumes nothing half-done, evaluates,
predicts and exports through the same calls as the others. A new method
registered with `methods.registry` gets this test without writing it."""

import json
import os

import numpy as np
import pytest

import tasad_jax
from conftest import exported_stablehlo, write_easy_tree
from tasad_jax import methods
from tasad_jax.config.presets import tiny
from tasad_jax.core import metrics
from tasad_jax.evaluation import evaluate
from tasad_jax.inference import thresholds
from tasad_jax.methods import registry
from tasad_jax.training import trainer

registry.load_bundled()
# Fewer channels where a method's defaults (the paper's) are slow at tiny
# sizes on a CPU; a method not listed runs with its defaults.
SMALL = {
    'destseg': {'seg_channels': 32, 'top_k': 10},
    'cavga': {'encoder_layers': 2, 'latent_channels': 8,
              'decoder_channels': 16, 'disc_channels': 8},
    'anoseg': {'disc_width': 8},
}


@pytest.mark.parametrize('name', sorted(methods.REGISTRY))
def test_every_method_with_fas_trains_evaluates_predicts_and_exports(
    name, tmp_path, capsys):
  config = tiny.get_config()
  root_category = 'plain'
  write_easy_tree(str(tmp_path / 'data'), root_category)
  config.data.root, config.data.category = str(tmp_path / 'data'), root_category
  config.coarse.name = name
  for field, value in SMALL.get(name, {}).items():
    config.coarse[name][field] = value
  config.train.cas_steps, config.train.fas_steps = 2, 2
  config.train.checkpoint_every = 2
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir)
  trained = thresholds.load(workdir)
  assert set(trained['per_method']) == {'cas', 'tasad'}

  capsys.readouterr()
  report = evaluate.evaluate(config, workdir, [root_category])
  coarse_label, two_stage_label = methods.method_class(name).row_labels()
  rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
  assert [root_category, coarse_label] in rows, rows
  assert [root_category, two_stage_label] in rows, rows
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    assert json.load(f)['coarse'] == report['coarse'] == name
  for output in ('cas', 'tasad'):
    for key in metrics.METRIC_KEYS:
      assert 0.0 <= report[output][key] <= 1.0, (output, key)

  model = tasad_jax.load(workdir)
  assert model.runner.coarse.method == name and model.method == 'tasad'
  images = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), np.uint8)
  out = model.predict(images)
  assert out['anomaly_maps'].shape == (3, 40, 50)
  assert out['decisions'].shape == (3,) and out['masks'].shape == (3, 40, 50)
  assert np.isfinite(out['scores']).all()
  exported = exported_stablehlo(model, tmp_path)
  x = model.preprocess(images)[0]
  live = model.runner(x)
  maps, scores = exported.call(x)
  np.testing.assert_allclose(maps, live['tasad_map'], atol=1e-5)
  np.testing.assert_allclose(scores, live['tasad_score'], atol=1e-5)
