"""The validation split carved from the training images (tasad_jax/data/synthetic_validation.py)."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import assert_one_error_line, run_script, write_tree
from tasad_jax.config.presets import tiny
from tasad_jax.evaluation import evaluate
from tasad_jax.data import holdout
from tasad_jax.data import synthetic_validation
from tasad_jax.data import imageio, mvtec
from tasad_jax.runtime.errors import UserInputError


def _config(root, fraction=0.5):
  config = tiny.get_config()
  config.data.root, config.data.category = root, 'widget'
  config.threshold.holdout_fraction = fraction
  return config


def _files(folder):
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for d, _, names in os.walk(folder):
    for name in names:
      with open(os.path.join(d, name), 'rb') as f:
        out[os.path.relpath(os.path.join(d, name), folder)] = f.read()
  return out


def test_split_is_the_threshold_hold_out_with_exact_defect_masks(tmp_path):
  root = str(tmp_path / 'data')
  write_tree(root)
  config = _config(root)
  out = str(tmp_path / 'val')
  counts = synthetic_validation.write_split(config, out)

  # The held-out images are the ones training keeps for its thresholds.
  train = mvtec.scan_category(root, 'widget').train
  _, held = holdout.split_holdout(np.arange(len(train)), 0.5, config.seed)
  np.testing.assert_array_equal(
      held, holdout.holdout_indices(len(train), 0.5, config.seed)[1])
  assert counts['good'] == len(held) == 2
  assert sum(counts[k] for k in synthetic_validation.KINDS) == len(held)
  split = mvtec.scan_category(out, 'widget')
  good = sorted((s for s in split.test if s.label == 0), key=lambda s: s.path)
  bad = sorted((s for s in split.test if s.label == 1), key=lambda s: s.path)
  for sample, index in zip(good, held):
    np.testing.assert_array_equal(imageio.read_image(sample.path),
                                  imageio.read_image(train[index].path))
  for sample in bad:
    original = imageio.read_image(
        os.path.join(out, 'widget', 'test', 'good',
                     os.path.basename(sample.path)))
    image, mask = imageio.read_image(sample.path), imageio.read_mask(
        sample.mask_path) > 0
    assert image.shape == original.shape and mask.shape == image.shape[:2]
    changed = np.any(image != original, axis=-1)
    assert changed.any() and mask.any()
    assert not (changed & ~mask).any()  # Nothing changes outside the mask.
    assert changed.sum() >= 0.5 * mask.sum()

  # Deterministic: the same bytes again, and in place of the old folder.
  again = str(tmp_path / 'again')
  synthetic_validation.write_split(config, again)
  assert _files(again) == _files(out)
  synthetic_validation.write_split(config, out)
  assert _files(again) == _files(out)


@pytest.mark.parametrize('kind', synthetic_validation.KINDS)
def test_each_kind_has_its_size_and_stays_inside_the_image(kind):
  rng = np.random.default_rng(0)
  textures = rng.integers(0, 256, (2, 64, 64, 3), np.uint8)
  image = np.full((180, 300, 3), 128, np.uint8)
  fractions = []
  for seed in range(20):
    out, mask = synthetic_validation.defect(image, kind, np.random.default_rng(seed),
                                  textures)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(out[..., 0] == out[..., 2])  # Grey stays grey.
    fractions.append(mask.mean())
    if kind == 'shade':  # Low contrast: at most 15% of the way to black/white.
      change = np.abs(out[mask].astype(int) - 128)
      assert change.max() <= 0.15 * 128 + 1 and change.min() >= 0.06 * 127 - 1
  if kind == 'shade':  # Larger than a tile of most models.
    assert 0.09 < min(fractions) and max(fractions) < 0.41, fractions
  else:
    assert 0 < min(fractions) and max(fractions) < 0.06, fractions


def test_kinds_are_chosen_and_a_bad_one_is_one_line(tmp_path):
  root = str(tmp_path / 'data')
  write_tree(root)
  counts = synthetic_validation.write_split(
      _config(root), str(tmp_path / 'val'), kinds=('shade',))
  assert counts == {'good': 2, 'shade': 2}
  result = run_script('validation_split.py', f'--output={tmp_path / "v"}',
                      f'--config.data.root={root}',
                      '--config.data.category=widget', '--kinds=pore,dent')
  assert_one_error_line(result, '--kinds')
  assert not os.path.exists(tmp_path / 'v')


def test_nothing_held_out_is_one_line(tmp_path):
  root = str(tmp_path / 'data')
  write_tree(root)
  with pytest.raises(UserInputError, match='holdout_fraction'):
    synthetic_validation.write_split(_config(root, 0.0), str(tmp_path / 'val'))
  result = run_script('validation_split.py', f'--output={tmp_path / "v"}',
                      f'--config.data.root={root}',
                      '--config.data.category=widget',
                      '--config.threshold.holdout_fraction=0.0')
  assert_one_error_line(result, 'config.threshold.holdout_fraction')
  assert not os.path.exists(tmp_path / 'v' / 'widget')


def test_a_trained_workdir_evaluates_on_its_validation_split(tiny_workdir,
                                                             tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(tiny_workdir, workdir)
  config = tiny.get_config()
  counts = synthetic_validation.write_split(config, str(tmp_path / 'val'))
  config.data.root = str(tmp_path / 'val')
  config.eval.folder = 'eval_validation'
  evaluate.evaluate(config, workdir, [config.data.category])
  with open(os.path.join(workdir, 'eval_validation', 'metrics.json')) as f:
    report = json.load(f)
  assert not os.path.exists(os.path.join(workdir, 'eval'))
  assert report['num_images'] == 2 * counts['good']
  assert set(report['tasad']['per_defect']) == {
      k for k in synthetic_validation.KINDS if counts[k]}
