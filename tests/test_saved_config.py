"""Saved configs: a workdir written by an earlier version loads as trained.

`tests/data/config_b957c31.json` is the `config.json` that main wrote for
`configs/tiny.py` before the package moved into subpackages (commit b957c31).
"""

import json
import os
import shutil

import numpy as np
import pytest

import tasad_jax
from tasad_jax.config import saved
from tasad_jax.config.presets import tiny
from tasad_jax.runtime.errors import UserInputError

MAIN = os.path.join(os.path.dirname(__file__), 'data', 'config_b957c31.json')
# Fields added after the first workdirs were written; each one's default is
# the behaviour of the code before it, so a workdir without them loads as it
# was trained. The model's skip, levels and widths came after MAIN was
# written: it lacks them already.
ADDED = (('data', 'layout'), ('data', 'resize'), ('data', 'scale'),
         ('data', 'tile_stride'), ('data', 'tile_blend'),
         ('data', 'labelled_anomalies'), ('data', 'labelled_rate'),
         ('eval', 'max_side'), ('model', 'norm'), ('model', 'norm_groups'),
         ('model', 'fine_score'), ('model', 'score_window'),
         ('model', 'skip'), ('model', 'levels'), ('model', 'widths'),
         ('train', 'lr_schedule'), ('train', 'lr_warmup'), ('coarse',))


def _main_config() -> dict:
  with open(MAIN) as f:
    return json.load(f)


def _as_json(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def test_main_config_upgrades_to_the_current_config():
  assert _as_json(saved.upgrade(_main_config())) == _as_json(tiny.get_config())


def test_an_older_config_gets_the_defaults_of_later_fields():
  old = _main_config()
  for path in ADDED:
    section = old
    for key in path[:-1]:
      section = section[key]
    section.pop(path[-1], None)
  assert 'norm' not in old['model'] and 'coarse' not in old
  assert _as_json(saved.upgrade(old)) == _as_json(tiny.get_config())


def test_an_older_workdir_predicts_as_the_current_one(tiny_workdir, tmp_path):
  old = _main_config()
  for section, *field in ADDED:
    if field:
      old[section].pop(field[0], None)
  copy = str(tmp_path / 'old')
  shutil.copytree(tiny_workdir, copy)
  with open(os.path.join(copy, saved.FILE), 'w') as f:
    json.dump(old, f)
  images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), np.uint8)
  want = tasad_jax.load(tiny_workdir).predict(images)
  got = tasad_jax.load(copy).predict(images)
  np.testing.assert_array_equal(got['anomaly_maps'], want['anomaly_maps'])
  np.testing.assert_array_equal(got['scores'], want['scores'])
  np.testing.assert_array_equal(got['decisions'], want['decisions'])


@pytest.mark.parametrize('content,expected', [
    ('{"model": 3}', 'config.model: a section'),
    ('[1, 2]', 'not a JSON object'),
    ('{"model": ', 'unreadable config'),
])
def test_a_broken_saved_config_names_the_file(tmp_path, content, expected):
  (tmp_path / saved.FILE).write_text(content)
  with pytest.raises(UserInputError, match=expected) as raised:
    saved.load(str(tmp_path))
  assert str(tmp_path / saved.FILE) in str(raised.value)
