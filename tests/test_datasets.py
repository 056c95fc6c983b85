"""The MVTec-layout reader, image decoding, and the TFDS builder."""

import os

import numpy as np
from PIL import Image
import pytest

from tasad_jax.data import imageio, mvtec, sources
from tasad_jax.runtime.errors import UserInputError


def test_reader_lists_and_loads_the_tree(mvtec_tree):
  root, info = mvtec_tree
  category = mvtec.scan_category(root, 'widget')
  assert len(category.train) == info['train']  # notes.txt is ignored
  assert category.defect_types == ('crack', 'hole')
  assert [s.defect_type for s in category.test] == ['crack', 'crack', 'good',
                                                    'good', 'hole']
  split = mvtec.load_samples(category.test, 32)
  assert split['image'].shape == (5, 32, 32, 3)
  assert split['image'].dtype == np.uint8
  assert split['mask'].shape == (5, 32, 32, 1)
  assert set(np.unique(split['mask'])) == {0, 1}
  np.testing.assert_array_equal(split['label'], [1, 1, 0, 0, 1])
  assert split['mask'][split['label'] == 0].sum() == 0
  assert (split['mask'][split['label'] == 1].sum(axis=(1, 2, 3)) > 0).all()

  train = mvtec.load_samples(category.train, 24)
  assert train['image'].shape == (5, 24, 24, 3)
  grey = train['image'][0]  # A grey JPEG becomes 3 equal channels.
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_mask_resize_is_nearest_and_keeps_edges(tmp_path):
  mask = np.zeros((100, 100), np.uint8)
  mask[:, 49:51] = 255  # A 2-pixel line, lost by bilinear-then-cast.
  Image.fromarray(mask).save(tmp_path / 'm.png')
  small = imageio.resize_mask(imageio.read_mask(str(tmp_path / 'm.png')), 50)
  assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}
  assert small[:, 24:26].sum() >= 50


@pytest.mark.parametrize('mode,array', [
    ('I;16', (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),
    ('RGBA', np.full((8, 8, 4), 200, np.uint8)),
    ('LA', np.full((8, 8, 2), 100, np.uint8)),
    ('P', np.full((8, 8), 3, np.uint8)),
])
def test_read_image_formats_become_uint8_rgb(tmp_path, mode, array):
  path = str(tmp_path / 'x.png')
  img = Image.fromarray(array[..., 0] if mode == 'LA' else array)
  if mode == 'LA':
    img = Image.merge('LA', [Image.fromarray(array[..., 0]),
                             Image.fromarray(array[..., 1])])
  elif mode == 'P':
    img = img.convert('P')
  img.save(path)
  out = imageio.read_image(path)
  assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[-1] == 3
  if mode == 'I;16':
    assert out.max() == 255 and out.min() == 0  # 16 bits scaled, not clipped


def test_masks_of_zero_and_one_are_accepted(tmp_path):
  mask = np.zeros((10, 10), np.uint8)
  mask[2:5, 2:5] = 1
  Image.fromarray(mask).save(tmp_path / 'm.png')
  assert imageio.read_mask(str(tmp_path / 'm.png')).sum() == 9


@pytest.mark.parametrize('damage,expected', [
    ('no_root', 'dataset root'),
    ('no_category', "category 'widget'"),
    ('no_train', 'train/good'),
    ('empty_train', 'no image files'),
    ('orphan_mask', 'mask has no image'),
    ('missing_mask', 'has no mask'),
])
def test_reader_bad_layouts_name_the_path(mvtec_tree, damage, expected):
  root, _ = mvtec_tree
  base = os.path.join(root, 'widget')
  if damage == 'no_root':
    root = root + '_missing'
  elif damage == 'no_category':
    os.rename(base, base + '2')
  elif damage == 'no_train':
    os.rename(os.path.join(base, 'train'), os.path.join(base, 'train_old'))
  elif damage == 'empty_train':
    for f in os.listdir(os.path.join(base, 'train', 'good')):
      os.remove(os.path.join(base, 'train', 'good', f))
  elif damage == 'orphan_mask':
    os.remove(os.path.join(base, 'test', 'crack', '001.png'))
  elif damage == 'missing_mask':
    os.remove(os.path.join(base, 'ground_truth', 'crack', '000_mask.png'))
  with pytest.raises(UserInputError, match=expected) as e:
    mvtec.scan_category(root, 'widget')
  assert root.split(os.sep)[-1] in str(e.value)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('content', [b'', b'\x89PNG\r\n\x1a\n truncated', b'GIF'])
def test_corrupt_images_name_the_file(mvtec_tree, content):
  root, _ = mvtec_tree
  bad = os.path.join(root, 'widget', 'train', 'good', 'bad image é.png')
  with open(bad, 'wb') as f:
    f.write(content)
  category = mvtec.scan_category(root, 'widget')
  with pytest.raises(UserInputError, match='cannot decode image') as e:
    mvtec.load_samples(category.train, 16)
  assert bad in str(e.value)


def test_source_folder_dtd_layout_and_errors(tmp_path):
  folder = tmp_path / 'dtd' / 'images'
  for cls in ('banded', 'dotted'):
    (folder / cls).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(np.full((30, 40, 3), 50 * i, np.uint8)).save(
          folder / cls / f'{cls}_{i}.jpg')
  images = sources.load_source_images(str(tmp_path / 'dtd'), 16)
  assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserInputError, match='holds no image files'):
    sources.load_source_images(str(tmp_path / 'empty'), 16)
  with pytest.raises(UserInputError, match='not found'):
    sources.load_source_images(str(tmp_path / 'nowhere'), 16)
  mixed = sources.load_source_images(f'builtin, {tmp_path / "dtd"}', 16,
                                     builtin_variants=2)
  np.testing.assert_array_equal(mixed[:6], sources.builtin_textures(16, 2, 0))
  np.testing.assert_array_equal(mixed[6:], images)
  with pytest.raises(UserInputError, match='empty source name'):
    sources.load_source_images('builtin,', 16)
  with pytest.raises(UserInputError, match='nowhere.*not found'):
    sources.load_source_images(f'builtin,{tmp_path / "nowhere"}', 16)


def test_builtin_sources_are_varied_and_deterministic():
  a = sources.builtin_textures(32, variants=3, seed=0)
  b = sources.builtin_textures(32, variants=3, seed=0)
  assert a.shape == (9, 32, 32, 3)
  np.testing.assert_array_equal(a, b)
  flat = a.reshape(9, -1).astype(float)
  assert np.corrcoef(flat).min() < 0.9  # Not nine copies of one texture.
  assert not np.array_equal(a[..., 0], a[..., 1])  # Tinted, not grey.


def test_segment_pool_caches_and_labels_start_at_one():
  images = sources.builtin_textures(32, variants=1, seed=0)
  pool = sources.segment_pool(images, (5, 20))
  again = sources.segment_pool(images, (5, 20))
  assert pool.segments.shape == (3, 2, 32, 32) and pool.segments.dtype == np.uint16
  assert pool.segments.min() == 1
  np.testing.assert_array_equal(pool.num_segments,
                                pool.segments.reshape(3, 2, -1).max(-1))
  assert (pool.num_segments[:, 0] < pool.num_segments[:, 1]).all()
  np.testing.assert_array_equal(pool.segments, again.segments)
