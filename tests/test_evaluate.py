"""End to end: tiny train, evaluate, metrics.json, heat maps, bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import assert_one_error_line, run_script, write_tree
from tasad_jax.config import schema
from tasad_jax.evaluation import evaluate
from tasad_jax.core import metrics, scoring
from tasad_jax.runtime.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_workdir):
  """The session's tiny two-stage run (trained on the embedded data), to be
  evaluated on a written MVTec-layout tree: what it was trained on does not
  matter to how evaluation reads a tree and writes its outputs."""
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp('e2e')
  root = str(base / 'mvtec')
  write_tree(root, category='widget')
  config = tiny.get_config()
  config.data.root = root
  config.data.category = 'widget'
  workdir = str(base / 'run')
  shutil.copytree(tiny_workdir, workdir)
  return config, workdir


def _evaluate_cli(config, workdir, *extra):
  return run_script('evaluate.py', f'--workdir={workdir}',
                    f'--config.data.root={config.data.root}',
                    f'--config.data.category={config.data.category}', *extra)


def test_train_evaluate_writes_metrics_and_heatmaps(trained):
  config, workdir = trained
  result = _evaluate_cli(config, workdir)
  assert result.returncode == 0, result.stderr
  assert 'image_auroc' in result.stdout and 'tasad' in result.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['category'] == 'widget' and report['image_size'] == 32
  assert report['num_images'] == 5
  for method in ('cas', 'tasad'):
    for key in metrics.METRIC_KEYS:
      assert 0.0 <= report[method][key] <= 1.0, (method, key)
    assert set(report[method]['per_defect']) == {'crack', 'hole'}
  heatmaps = os.listdir(os.path.join(workdir, 'eval', 'heatmaps'))
  assert heatmaps and all(h.endswith('.png') for h in heatmaps)
  assert sorted(report['heatmaps']) == sorted(heatmaps)
  first = open(os.path.join(workdir, 'eval', 'metrics.json'), 'rb').read()
  evaluate.evaluate(config, workdir, [config.data.category])  # Same code in-process.
  assert open(os.path.join(workdir, 'eval', 'metrics.json'), 'rb').read() == first


def test_scores_are_the_max_of_the_21x21_mean():
  rng = np.random.default_rng(0)
  maps = rng.random((2, 30, 30, 1)).astype(np.float32)
  padded = np.pad(maps[..., 0], ((0, 0), (10, 10), (10, 10)))
  expected = [max(padded[i, y:y + 21, x:x + 21].sum() / 441
                  for y in range(30) for x in range(30)) for i in range(2)]
  np.testing.assert_allclose(scoring.max_of_mean_filter(maps), expected, rtol=1e-5)


def test_score_window_scales_with_the_image_size(tiny_config, tmp_path):
  """config.model.score_window=0: the paper's 21 pixels at 256² scaled (odd);
  the coarse method scores with that window."""
  assert [scoring.window_for(0, s) for s in (256, 128, 64, 32)] == [21, 11, 5, 3]
  assert scoring.window_for(7, 128) == 7
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  tiny_config.model.score_window = 0  # 32² images: a 3x3 window.
  maps = np.random.default_rng(1).random((2, 32, 32, 1)).astype(np.float32)
  padded = np.pad(maps[..., 0], ((0, 0), (1, 1), (1, 1)))
  expected = [max(padded[i, y:y + 3, x:x + 3].mean() for y in range(32)
                  for x in range(32)) for i in range(2)]
  scores = methods.get(tiny_config).image_score(maps, {'map': maps})
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  tiny_config.model.score_window = -1
  with pytest.raises(UserInputError, match='config.model.score_window'):
    schema.check(tiny_config)


def test_coarse_stage_only_is_evaluated_and_said(trained, tmp_path):
  config, workdir = trained
  cas_only = str(tmp_path / 'cas_only')
  shutil.copytree(os.path.join(workdir, 'checkpoints', 'cas'),
                  os.path.join(cas_only, 'checkpoints', 'cas'))
  report = evaluate.evaluate(config, cas_only, [config.data.category])
  assert 'cas' in report and 'tasad' not in report
  assert 'coarse stage' in report['note']


def test_several_categories_give_a_mean_row(trained, tmp_path):
  config, workdir = trained
  parent = tmp_path / 'runs'
  for name in ('widget', 'widget2'):
    shutil.copytree(workdir, str(parent / name),
                    ignore=shutil.ignore_patterns('eval'))
  shutil.copytree(os.path.join(config.data.root, 'widget'),
                  os.path.join(config.data.root, 'widget2'), dirs_exist_ok=True)
  result = run_script('evaluate.py', f'--workdir={parent}',
                      f'--config.data.root={config.data.root}',
                      '--config.data.category=all')
  assert result.returncode == 0, result.stderr
  with open(parent / 'eval' / 'summary.json') as f:
    summary = json.load(f)
  names = [c['category'] for c in summary['categories']]
  assert names == ['widget', 'widget2', 'mean']
  index = (parent / 'eval' / 'index.html').read_text(encoding='utf-8')
  for name in ('widget', 'widget2'):
    assert f'href="../{name}/eval/report.html"' in index
    assert (parent / name / 'eval' / 'report.html').is_file()
  assert 'mean' in result.stdout


@pytest.mark.parametrize('case,expected', [
    ('no_checkpoint', 'no CAS checkpoint'),
    ('other_width', 'config.model.width'),
    ('other_size', 'config.data.image_size'),
    ('no_defects', 'no defect images'),
    ('no_good', 'no good test image'),
])
def test_bad_evaluation_input_is_one_line(trained, tmp_path, case, expected):
  """Each case raises one line naming what is wrong; one goes through
  evaluate.py for the exit status (the wrapper itself: test_cli)."""
  config, workdir = trained
  run = str(tmp_path / 'run')
  shutil.copytree(workdir, run, ignore=shutil.ignore_patterns('eval'))
  root = str(tmp_path / 'data')
  shutil.copytree(config.data.root, root)
  config = config.copy_and_resolve_references()
  config.data.root = root
  base = os.path.join(root, 'widget')
  if case == 'no_checkpoint':
    shutil.rmtree(os.path.join(run, 'checkpoints'))
  elif case == 'other_width':
    config.model.width = 8
  elif case == 'other_size':
    config.data.image_size = 48
  elif case == 'no_defects':
    for d in ('crack', 'hole'):
      shutil.rmtree(os.path.join(base, 'test', d))
  elif case == 'no_good':
    shutil.rmtree(os.path.join(base, 'test', 'good'))
  if case == 'other_width':
    result = _evaluate_cli(config, run, '--config.model.width=8')
    assert_one_error_line(result, expected)
  else:
    with pytest.raises(UserInputError) as raised:
      evaluate.evaluate(config, run, [config.data.category])
    assert expected in str(raised.value) and '\n' not in str(raised.value)
  assert not os.path.exists(os.path.join(run, 'eval'))


def test_fine_score_coarse_keeps_the_coarse_image_score(trained, tmp_path):
  """config.model.fine_score='coarse': the two-stage model scores images as
  its coarse stage does, and its maps (so its pixel metrics) do not change."""
  config, workdir = trained
  run = str(tmp_path / 'run')
  shutil.copytree(workdir, run, ignore=shutil.ignore_patterns('eval'))
  combined = evaluate.evaluate(config, run, [config.data.category])
  coarse = config.copy_and_resolve_references()
  coarse.model.fine_score = 'coarse'
  report = evaluate.evaluate(coarse, run, [config.data.category])
  for key in ('image_auroc', 'image_ap'):
    assert report['tasad'][key] == report['cas'][key] == combined['cas'][key]
  for key in ('pixel_auroc', 'pixel_ap', 'aupro'):  # Another program: ulps.
    assert report['tasad'][key] == pytest.approx(combined['tasad'][key],
                                                 abs=1e-6), key
  from tasad_jax.inference import two_stage  # pylint: disable=g-import-not-at-top
  from tasad_jax.core import sharding
  images = np.random.default_rng(0).integers(
      0, 256, (5, config.data.image_size, config.data.image_size, 3), np.uint8)
  for on_device in (True, False):  # The jitted program and the host path.
    coarse.refine.on_device = on_device
    out = two_stage.TwoStage.from_workdir(coarse, run, sharding.make_mesh()
                                          ).run(images, 5)
    np.testing.assert_array_equal(out['tasad_score'], out['cas_score'])
  coarse.model.fine_score = 'max'
  with pytest.raises(UserInputError, match=r"config.model.fine_score: 'max'"):
    evaluate.evaluate(coarse, run, [config.data.category])


def test_host_and_device_fas_inputs_give_close_metrics(trained):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  split_metrics = {}
  for on_device in (True, False):
    config.refine.on_device = on_device
    split_metrics[on_device] = evaluate.evaluate(
        config, workdir, [config.data.category])
  assert split_metrics[True]['cas'] == split_metrics[False]['cas']
  for key in metrics.METRIC_KEYS:
    assert abs(split_metrics[True]['tasad'][key]
               - split_metrics[False]['tasad'][key]) < 0.05, key


def test_short_last_batch_reuses_the_compiled_program(trained):
  """Many images in batches: the remainder runs padded through the program
  of a full batch, and every row's outputs are those of one large batch."""
  from tasad_jax.inference import two_stage  # pylint: disable=g-import-not-at-top
  from tasad_jax.core import sharding
  config, workdir = trained
  runner = two_stage.TwoStage.from_workdir(config, workdir, sharding.make_mesh())
  images = np.random.default_rng(0).integers(
      0, 256, (5, config.data.image_size, config.data.image_size, 3), np.uint8)
  in_threes = runner.run(images, 3)  # Batches of 3 and 2 (padded to 3).
  assert runner._program._cache_size() == 1  # pylint: disable=protected-access
  at_once = runner.run(images, 5)
  assert set(in_threes) == set(at_once) and len(in_threes['tasad_score']) == 5
  for key, value in at_once.items():
    np.testing.assert_allclose(in_threes[key], value, atol=1e-5, err_msg=key)
