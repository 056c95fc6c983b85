"""Weak supervision: choosing real defects, mixing them into the train stream,
and leaving them out of the evaluated test set."""

import json
import os

import numpy as np
import pytest

from conftest import write_tree
from tasad_jax.config.presets import tiny
from tasad_jax.data import splits
from tasad_jax.data import pipeline, weak_labels
from tasad_jax.runtime.errors import UserInputError


def _config(root, spec, rate=0.5):
  config = tiny.get_config()
  config.data.root, config.data.category = root, 'widget'
  config.data.labelled_anomalies, config.data.labelled_rate = spec, rate
  return config


def test_labelled_test_images_never_reach_the_evaluated_set(tmp_path):
  root = str(tmp_path / 'data')
  write_tree(root)
  for d in ('crack', 'hole'):  # 5 images of each type in all.
    for i in range(3):
      os.link(os.path.join(root, 'widget', 'test', 'crack', '000.png'),
              os.path.join(root, 'widget', 'test', d, f'x{i}.png'))
      os.link(os.path.join(root, 'widget', 'ground_truth', 'crack', '000_mask.png'),
              os.path.join(root, 'widget', 'ground_truth', d, f'x{i}_mask.png'))
  config = _config(root, 'test:2')
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  used = weak_labels.load(config)
  weak_labels.record(config, workdir, used)
  with open(os.path.join(workdir, weak_labels.RECORD)) as f:
    files = json.load(f)['files']
  assert len(files) == 4 and sorted(used['defect_type']) == ['crack'] * 2 + ['hole'] * 2
  assert used['label'].all() and used['image'].shape == (4, 32, 32, 3)
  split = splits.load_split(config, 'test')
  real = lambda paths: {os.path.realpath(p) for p in paths}  # pylint: disable=unnecessary-lambda-assignment
  assert set(files) <= real(split['path'])
  # Whether evaluation reads the workdir's record, the config, or both.
  unconfigured = _config(root, '')
  for c, w in ((config, workdir), (unconfigured, workdir),
               (config, str(tmp_path / 'elsewhere'))):
    rest, n = weak_labels.exclude(c, w, split)
    assert n == 4 and len(rest['path']) == len(split['path']) - 4
    assert not set(files) & real(rest['path'])
    assert set(rest) == set(split)
  # Another seed chooses other images (all but one of a type at most).
  config.seed = 1
  counts = {}
  for defect, label in zip(split['defect_type'], split['label']):
    counts[defect] = counts.get(defect, 0) + int(label > 0)
  assert weak_labels.choose_from_test(split, 9, 1).size == sum(
      max(n - 1, 0) for d, n in counts.items() if n)
  assert weak_labels.exclude(unconfigured, str(tmp_path / 'none'), split)[1] == 0


def test_labelled_folder_and_bad_fields(tmp_path):
  root, extra = str(tmp_path / 'data'), str(tmp_path / 'extra')
  write_tree(root)
  write_tree(extra, category='more', seed=1)
  folder = os.path.join(extra, 'more')
  loaded = weak_labels.load(_config(root, folder))
  assert sorted(loaded['defect_type']) == ['crack', 'crack', 'hole']
  split = splits.load_split(_config(root, folder), 'test')
  assert weak_labels.exclude(_config(root, folder), str(tmp_path), split)[1] == 0
  with pytest.raises(UserInputError, match='config.data.labelled_anomalies'):
    weak_labels.load(_config(root, 'test:two'))
  with pytest.raises(UserInputError, match='not found'):
    weak_labels.load(_config(root, str(tmp_path / 'missing')))
  with pytest.raises(UserInputError, match='config.data.labelled_rate'):
    weak_labels.load(_config(root, 'test:1', rate=1.5))


def test_stream_mixes_real_defects_at_the_rate_per_sample_seed(tmp_path):
  config = tiny.get_config()
  config.data.labelled_anomalies, config.data.labelled_rate = 'test:1', 0.3
  real = weak_labels.load(config)
  data = pipeline.load_train_data(config, 'cas', labelled=real)

  def batches(start, n, d=data):
    it = pipeline.train_dataset(d, config, 'cas', batch_size=8,
                                      start_step=start, process_index=0,
                                      process_count=1).as_numpy_iterator()
    return [next(it) for _ in range(n)]

  mixed = batches(0, 6)
  flags = np.concatenate([b['real'] for b in mixed])
  assert 0.1 < flags.mean() < 0.5
  masks = {m.tobytes() for m in (real['mask'] > 0).astype(np.float32)}
  for b in mixed:
    for i in np.flatnonzero(b['real']):
      assert b['label'][i] == 1 and b['mask'][i].tobytes() in masks
      np.testing.assert_array_equal(b['image'][i], b['augmented'][i])
  # A pure function of (seed, stage, index): resuming at step 4 gives the same.
  for key in ('augmented', 'mask', 'real'):
    np.testing.assert_array_equal(batches(4, 1)[0][key], mixed[4][key])
  # The other samples are the pseudo-anomalies of a run without real defects.
  plain = batches(0, 6, pipeline.load_train_data(config, 'cas'))
  for a, b in zip(mixed, plain):
    keep = a['real'] == 0
    np.testing.assert_array_equal(a['augmented'][keep], b['augmented'][keep])
    assert not b['real'].any()
