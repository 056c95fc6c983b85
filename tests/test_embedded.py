"""The embedded default dataset: layout, determinism, exact masks."""

import filecmp
import os

import numpy as np

from tasad_jax.data import embedded, mvtec


def test_build_is_deterministic_and_in_mvtec_layout(tmp_path):
  kwargs = dict(seed=3, num_train=3, num_test_good=2, num_per_defect=2, size=64)
  a = embedded.build(str(tmp_path / 'a'), **kwargs)
  b = embedded.build(str(tmp_path / 'b'), **kwargs)
  cmp = filecmp.dircmp(a, b)
  files = []
  for dirpath, _, names in os.walk(os.path.join(a, 'brick')):
    files += [os.path.relpath(os.path.join(dirpath, n), a) for n in names]
  assert len(files) == 3 + 2 + 2 * 2 * len(embedded.DEFECT_TYPES)
  match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
  assert not mismatch and not errors and not cmp.left_only
  category = mvtec.scan_category(a, embedded.CATEGORY)
  assert category.defect_types == tuple(sorted(embedded.DEFECT_TYPES))
  assert len(category.train) == 3


def test_masks_cover_exactly_the_defects():
  for defect in embedded.DEFECT_TYPES:
    for i in range(6):
      normal, image, mask = embedded.make_sample(0, 'test/' + defect, i, defect)
      changed = np.any(image != normal, axis=-1)
      assert mask.sum() >= 12, (defect, i)
      np.testing.assert_array_equal(changed, mask.astype(bool))
      # The defect is visible, not a change of one grey level.
      diff = np.abs(image.astype(int) - normal.astype(int)).max(-1)
      assert np.median(diff[mask > 0]) >= 20, (defect, i)


def test_good_images_differ_from_each_other():
  a = embedded.make_sample(0, 'train/good', 0)[1]
  b = embedded.make_sample(0, 'train/good', 1)[1]
  assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_embedded_root_builds_once_into_the_cache(monkeypatch, tmp_path):
  monkeypatch.setenv('TASAD_JAX_CACHE', str(tmp_path / 'cache'))
  calls = []
  real_build = embedded.build
  monkeypatch.setattr(embedded, 'build', lambda dest, seed: calls.append(dest)
                      or real_build(dest, seed, 2, 1, 1, 32))
  root = embedded.embedded_root()
  assert root.startswith(str(tmp_path / 'cache'))
  assert os.path.isdir(os.path.join(root, 'brick', 'train', 'good'))
  assert embedded.embedded_root() == root
  assert len(calls) == 1
  leftovers = [n for n in os.listdir(tmp_path / 'cache') if n.startswith('.')]
  assert not leftovers
