"""Whatever a camera folder holds, the reader works or names the file."""

import io
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
from PIL import Image
import pytest

from tasad_jax.data import mvtec
from tasad_jax.runtime.errors import UserInputError


def _png(array, mode=None):
  buf = io.BytesIO()
  (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, 'PNG')
  return buf.getvalue()


def _jpeg(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, 'JPEG')
  return buf.getvalue()


def _content(kind, rng):
  h, w = rng.integers(2, 20, size=2)
  if kind == 'rgb':
    return _png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  if kind == 'grey_jpeg':
    return _jpeg(rng.integers(0, 256, (h, w), dtype=np.uint8))
  if kind == 'rgba':
    return _png(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
  if kind == 'grey16':
    return _png(rng.integers(0, 65535, (h, w), dtype=np.uint16))
  if kind == 'mask01':
    return _png((rng.random((h, w)) > 0.5).astype(np.uint8))
  if kind == 'empty':
    return b''
  if kind == 'truncated':
    return _png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[:30]
  if kind == 'text':
    return b'not an image at all'
  raise ValueError(kind)


KINDS = ['rgb', 'grey_jpeg', 'rgba', 'grey16', 'mask01', 'empty', 'truncated',
         'text']
NAMES = ['a', 'b c', 'é', '画像', 'x.y']


@st.composite
def trees(draw):
  """A random small category: (relative path, content kind) pairs."""
  files = []
  for folder in ('train/good', 'test/good', 'test/dent', 'ground_truth/dent'):
    for _ in range(draw(st.integers(0, 3))):
      name = draw(st.sampled_from(NAMES)) + draw(st.sampled_from(['', '1', '2']))
      if folder.startswith('ground_truth'):
        name += '_mask'
      ext = draw(st.sampled_from(['.png', '.jpg', '.bmp', '.txt', '']))
      files.append((f'{folder}/{name}{ext}', draw(st.sampled_from(KINDS))))
  return files


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees(), seed=st.integers(0, 2**16))
def test_reader_never_crashes_with_anything_but_its_own_error(tree, seed):
  rng = np.random.default_rng(seed)
  root = tempfile.mkdtemp()
  try:
    for path, kind in tree:
      full = os.path.join(root, 'cat', path)
      os.makedirs(os.path.dirname(full), exist_ok=True)
      with open(full, 'wb') as f:
        f.write(_content(kind, rng))
    try:
      category = mvtec.scan_category(root, 'cat')
      for split in (category.train, category.test):
        out = mvtec.load_samples(split, 16, num_threads=1)
        assert out['image'].shape == (len(split), 16, 16, 3)
        assert set(np.unique(out['mask'])) <= {0, 1}
    except UserInputError as e:
      assert '\n' not in str(e) and root in str(e)
  finally:
    shutil.rmtree(root)


def test_odd_but_valid_inputs_work(tmp_path):
  """One train image, spaces and non-ASCII names, a 0/1 mask of another size,
  RGBA and 16-bit images: all read."""
  base = tmp_path / 'my data' / 'pièce'
  (base / 'train' / 'good').mkdir(parents=True)
  (base / 'test' / 'good').mkdir(parents=True)
  (base / 'test' / 'scratch').mkdir(parents=True)
  (base / 'ground_truth' / 'scratch').mkdir(parents=True)
  rng = np.random.default_rng(0)
  (base / 'train' / 'good' / 'only one.png').write_bytes(
      _png(rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)))
  (base / 'test' / 'good' / 'g 1.png').write_bytes(
      _png(rng.integers(0, 65535, (30, 40), dtype=np.uint16)))
  (base / 'test' / 'scratch' / '画像.png').write_bytes(
      _png(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
  mask = np.zeros((15, 20), np.uint8)
  mask[3:9, 4:12] = 1  # Values 0/1, half the image's size.
  (base / 'ground_truth' / 'scratch' / '画像_mask.png').write_bytes(_png(mask))
  category = mvtec.scan_category(str(tmp_path / 'my data'), 'pièce')
  assert len(category.train) == 1
  test = mvtec.load_samples(category.test, 20)
  scratch = test['mask'][test['label'] == 1][0, ..., 0]
  # Rows 3:9 of 15 scale to 4:12 of 20; columns 4:12 of 20 stay.
  assert scratch[4:12, 4:12].mean() > 0.9 and scratch.sum() == pytest.approx(
      8 * 8, rel=0.2)
