"""The contract every registered coarse method keeps, in one test: with
TASAD's fine stage on top it trains (thresholds included), evaluates with
its own table rows, predicts images of any size and exports a program equal
to the live model. A method registered with `methods.registry` gets this test
without writing it (`method_runs` trains it with its defaults)."""

import json
import os

import numpy as np
import pytest

import tasad_jax
from conftest import exported_stablehlo
from method_runs import method_run
from tasad_jax import methods
from tasad_jax.config.presets import tiny
from tasad_jax.core import metrics
from tasad_jax.evaluation import evaluate
from tasad_jax.inference import thresholds
from tasad_jax.methods import registry

registry.load_bundled()


@pytest.mark.parametrize('name', sorted(methods.REGISTRY))
def test_every_method_with_fas_trains_evaluates_predicts_and_exports(
    name, request, tmp_path):
  if name == 'tasad_cas':  # TASAD's own: the session's tiny run.
    workdir = request.getfixturevalue('tiny_evaluated')
    config = tiny.get_config()
  else:
    config, workdir, _, _ = method_run(name)
  assert set(thresholds.load(workdir)['per_method']) == {'cas', 'tasad'}
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['coarse'] == name
  for output in ('cas', 'tasad'):
    for key in metrics.METRIC_KEYS:
      assert 0.0 <= report[output][key] <= 1.0, (output, key)
  rows = [line.split()[:2] for line in
          evaluate.format_table(report).splitlines()]
  for label in methods.method_class(name).row_labels():
    assert [config.data.category, label] in rows, rows

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
