"""The VisA and folder layouts read the same samples as the equivalent MVTec
tree, split normal images by seed, and name the file of a bad layout."""

import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from conftest import assert_one_error_line, run_script
from tasad_jax.config import schema
from tasad_jax.data import splits
from tasad_jax.data import weak_labels
from tasad_jax.data import folder, imageio, layouts, visa
from tasad_jax.runtime.errors import UserInputError

DEFECT = 'bad'


def _write_mvtec(root, category='widget', defect=DEFECT, seed=0):
  """An MVTec-layout category with one defect type: grey JPEGs of odd sizes,
  a BMP, RGB PNGs, a TIFF defect, 0/255 masks and a stray text file."""
  rng = np.random.default_rng(seed)
  base = os.path.join(root, category)

  def save(array, *path):
    os.makedirs(os.path.join(base, *path[:-1]), exist_ok=True)
    Image.fromarray(array).save(os.path.join(base, *path))

  for i, (h, w) in enumerate([(37, 51), (64, 64), (50, 33)]):
    save(rng.integers(0, 256, (h, w), dtype=np.uint8), 'train', 'good', f'{i:03d}.jpg')
  save(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), 'train', 'good', '003.bmp')
  with open(os.path.join(base, 'train', 'good', 'notes.txt'), 'w') as f:
    f.write('not an image')
  for i in range(2):
    save(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), 'test', 'good', f'{i:03d}.png')
  for i, ext in enumerate(['.png', '.tif', '.png']):
    save(rng.integers(0, 256, (60, 45, 3), dtype=np.uint8), 'test', defect, f'{i:03d}{ext}')
    mask = np.zeros((60, 45), np.uint8)
    mask[10 + i:30, 5:20 + i] = 255
    save(mask, 'ground_truth', defect, f'{i:03d}_mask.png')
  return base


def _write_visa(mvtec_base, root, category='widget'):
  """The same files in VisA layout: renamed copies, masks as region numbers
  (1 and 2, as VisA's), and a shuffled 1cls.csv with another object's rows."""
  data = os.path.join(root, category, 'Data')
  for sub in ('Images/Normal', 'Images/Anomaly', 'Masks/Anomaly'):
    os.makedirs(os.path.join(data, sub))
  rows = []

  def copy(src, *dst):
    shutil.copy(os.path.join(mvtec_base, src), os.path.join(data, *dst))
    return '/'.join([category, 'Data', *dst])

  for split, folder_ in (('train', 'train/good'), ('test', 'test/good')):
    for name in sorted(os.listdir(os.path.join(mvtec_base, folder_))):
      if not name.endswith('.txt'):
        image = copy(f'{folder_}/{name}', 'Images', 'Normal', f'{split}_{name}')
        rows.append(f'{category},{split},normal,{image},')
  for name in sorted(os.listdir(os.path.join(mvtec_base, 'test', DEFECT))):
    stem = os.path.splitext(name)[0]
    image = copy(f'test/{DEFECT}/{name}', 'Images', 'Anomaly', name)
    mask = imageio.read_mask(
        os.path.join(mvtec_base, 'ground_truth', DEFECT, f'{stem}_mask.png'))
    mask[:, mask.shape[1] // 2:] *= 2  # Two regions, numbered 1 and 2.
    Image.fromarray(mask).save(os.path.join(data, 'Masks', 'Anomaly', f'{stem}.png'))
    rows.append(f'{category},test,anomaly,{image},'
                f'{category}/Data/Masks/Anomaly/{stem}.png')
  rows.append('other,train,normal,other/Data/Images/Normal/0000.JPG,')
  rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
  os.makedirs(os.path.join(root, 'split_csv'))
  with open(os.path.join(root, visa.SPLIT_CSV), 'w') as f:
    f.write('object,split,label,image,mask\n' + '\n'.join(rows) + '\n')
  return root


def _write_folders(mvtec_base, root):
  """The same files as plain folders; half the masks without `_mask`."""
  dirs = {'normal_dir': 'ok', 'normal_test_dir': 'ok_test',
          'abnormal_dir': DEFECT, 'mask_dir': 'masks'}
  for src, field in (('train/good', 'normal_dir'), ('test/good', 'normal_test_dir'),
                     (f'test/{DEFECT}', 'abnormal_dir'),
                     (f'ground_truth/{DEFECT}', 'mask_dir')):
    shutil.copytree(os.path.join(mvtec_base, src), os.path.join(root, dirs[field]))
  os.rename(os.path.join(root, 'masks', '001_mask.png'),
            os.path.join(root, 'masks', '001.png'))
  return {k: os.path.join(root, v) for k, v in dirs.items()}


def _config(tiny_config, **data):
  config = tiny_config
  config.data.image_size = 32
  config.data.load_threads = 1
  for key, value in data.items():
    config.data[key] = value
  return config


def _splits(config):
  return {s: splits.load_split(config, s) for s in ('train', 'test')}


def _assert_same(got, want, defect_type=None):
  for split in ('train', 'test'):
    a, b = got[split], want[split]
    for key in ('image', 'mask', 'label'):
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{split} {key}')
    types = [t if t == 'good' or defect_type is None else defect_type
             for t in b['defect_type']]
    assert list(a['defect_type']) == types


@pytest.fixture
def trees(tmp_path, tiny_config):
  """(the MVTec config, its loaded splits, the MVTec category folder)."""
  base = _write_mvtec(str(tmp_path / 'mvtec'))
  config = _config(tiny_config, root=str(tmp_path / 'mvtec'), category='widget')
  want = _splits(config)
  # The stated order: train by file name, test by (defect type, file name).
  assert list(want['test']['defect_type']) == [DEFECT] * 3 + ['good'] * 2
  assert (want['test']['mask'][:3].sum(axis=(1, 2, 3)) > 0).all()
  return config, want, base


def test_visa_reads_the_same_samples_as_mvtec(tmp_path, trees):
  config, want, base = trees
  root = _write_visa(base, str(tmp_path / 'visa'))
  visa_config = config.copy_and_resolve_references()
  visa_config.data.layout = 'visa'
  visa_config.data.root = root
  _assert_same(_splits(visa_config), want, defect_type=visa.ANOMALY)
  category = layouts.scan(visa_config)
  assert category.defect_types == ('anomaly',)
  assert layouts.expand_categories(visa_config, ['all']) == ['other', 'widget']


def test_folder_reads_the_same_samples_as_mvtec(tmp_path, trees):
  config, want, base = trees
  dirs = _write_folders(base, str(tmp_path / 'folders'))
  folder_config = config.copy_and_resolve_references()
  folder_config.data.layout = 'folder'
  folder_config.data.update(dirs)
  got = _splits(folder_config)
  _assert_same(got, want)
  # The folder layout's path of the MVTec tree itself reads the same too, and
  # labelled anomalies ('test:N') work unchanged.
  direct = config.copy_and_resolve_references()
  direct.data.layout = 'folder'
  direct.data.update({k: os.path.join(base, v) for k, v in {
      'normal_dir': 'train/good', 'normal_test_dir': 'test/good',
      'abnormal_dir': f'test/{DEFECT}', 'mask_dir': f'ground_truth/{DEFECT}'}.items()})
  direct.data.labelled_anomalies = 'test:1'
  _assert_same(_splits(direct), want)
  real = weak_labels.load(direct)
  assert len(real['label']) == 1 and real['mask'].sum() > 0


def test_folder_without_masks_or_test_dir(tmp_path, tiny_config):
  base = _write_mvtec(str(tmp_path / 'mvtec'))
  config = _config(tiny_config, layout='folder', test_fraction=0.5,
                   normal_dir=os.path.join(base, 'train', 'good'),
                   abnormal_dir=os.path.join(base, 'test', DEFECT))
  category = layouts.scan(config)
  assert len(category.train) == 2
  assert [s.label for s in category.test] == [1, 1, 1, 0, 0]
  assert all(s.mask_path is None for s in category.test)
  assert layouts.test_location(config)[0] == config.data.abnormal_dir


def test_seeded_split_is_deterministic_disjoint_and_name_based(tmp_path):
  names = [f'part_{i:02d}.png' for i in range(20)]
  paths = [str(tmp_path / 'a' / n) for n in names]
  train, test = folder.split_normal(paths, 0.25, seed=0)
  assert len(test) == 5 and len(train) == 15
  assert not set(train) & set(test) and sorted(train + test) == sorted(paths)
  assert (train, test) == folder.split_normal(paths, 0.25, seed=0)
  # Another folder, another listing order: the same file names are chosen.
  moved = [str(tmp_path / 'b' / n) for n in reversed(names)]
  assert sorted(map(os.path.basename, folder.split_normal(moved, 0.25, 0)[1])) == \
      sorted(map(os.path.basename, test))
  assert folder.split_normal(paths, 0.25, seed=1)[1] != test
  assert folder.split_normal(paths, 0.0, 0) == (paths, [])
  assert len(folder.split_normal(paths[:2], 0.01, 0)[1]) == 1  # At least one.
  assert folder.split_normal(paths[:1], 0.5, 0) == (paths[:1], [])


def _damage_visa(root, damage):
  base = os.path.join(root, 'widget', 'Data')
  csv_path = os.path.join(root, visa.SPLIT_CSV)
  with open(csv_path) as f:
    text = f.read()
  if damage == 'missing_csv':
    os.remove(csv_path)
    return csv_path
  if damage == 'missing_file':
    os.remove(os.path.join(base, 'Images', 'Anomaly', '001.tif'))
    return os.path.join(base, 'Images', 'Anomaly', '001.tif')
  if damage == 'mask_without_image':
    extra = os.path.join(base, 'Masks', 'Anomaly', '009.png')
    shutil.copy(os.path.join(base, 'Masks', 'Anomaly', '000.png'), extra)
    return extra
  if damage == 'bad_header':
    text = text.replace('object,split', 'obj,split', 1)
  elif damage == 'no_mask':
    text = text.replace(',widget/Data/Masks/Anomaly/000.png', ',')
  elif damage == 'duplicate':
    text += text.splitlines()[1] + '\n'
  elif damage == 'unknown_object':
    text = text.replace('widget,', 'gadget,')
  with open(csv_path, 'w') as f:
    f.write(text)
  return csv_path


@pytest.mark.parametrize('damage,expected', [
    ('missing_csv', 'split CSV not found'),
    ('missing_file', 'names a missing file'),
    ('mask_without_image', 'mask has no image'),
    ('bad_header', 'lacks the column(s) object'),
    ('no_mask', "empty 'mask' column"),
    ('duplicate', 'already named on line'),
    ('unknown_object', "no rows for object 'widget'"),
])
def test_visa_bad_layouts_name_the_file(tmp_path, damage, expected):
  base = _write_mvtec(str(tmp_path / 'mvtec'))
  root = _write_visa(base, str(tmp_path / 'visa'))
  path = _damage_visa(root, damage)
  with pytest.raises(UserInputError, match=re.escape(expected)) as e:
    visa.scan_category(root, 'widget')
  assert path in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('damage,expected', [
    ('missing_normal', 'config.data.normal_dir) not found'),
    ('empty_normal', 'no image files'),
    ('mask_without_image', 'mask has no image'),
    ('image_without_mask', 'defect image has no mask'),
    ('same_folder', 'is the same folder as config.data.normal_dir'),
    ('two_masks', 'a second mask'),
])
def test_folder_bad_layouts_name_the_file(tmp_path, damage, expected):
  base = _write_mvtec(str(tmp_path / 'mvtec'))
  dirs = _write_folders(base, str(tmp_path / 'folders'))
  path = dirs['normal_dir']
  if damage == 'missing_normal':
    shutil.rmtree(path)
  elif damage == 'empty_normal':
    for name in os.listdir(path):
      os.remove(os.path.join(path, name))
  elif damage == 'mask_without_image':
    path = os.path.join(dirs['abnormal_dir'], '002.png')
    os.remove(path)
    path = os.path.join(dirs['mask_dir'], '002_mask.png')
  elif damage == 'image_without_mask':
    os.remove(os.path.join(dirs['mask_dir'], '000_mask.png'))
    path = os.path.join(dirs['abnormal_dir'], '000.png')
  elif damage == 'same_folder':
    dirs['normal_test_dir'] = path
  elif damage == 'two_masks':
    path = os.path.join(dirs['mask_dir'], '000.png')
    shutil.copy(os.path.join(dirs['mask_dir'], '000_mask.png'), path)
  with pytest.raises(UserInputError, match=re.escape(expected)) as e:
    folder.scan_folders(**dirs)
  assert path in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('data,expected', [
    ({'layout': 'coco'}, 'config.data.layout'),
    ({'layout': 'visa', 'loader': 'tfds'}, 'config.data.loader'),
    ({'normal_dir': 'x'}, 'add --config.data.layout=folder'),
    ({'layout': 'folder', 'normal_dir': 'x'}, 'config.data.abnormal_dir: not set'),
    ({'layout': 'folder', 'normal_dir': 'x', 'abnormal_dir': 'y',
      'test_fraction': 1.0}, 'config.data.test_fraction'),
])
def test_bad_layout_fields_name_the_field(tiny_config, data, expected):
  config = _config(tiny_config, **data)
  with pytest.raises(UserInputError, match=re.escape(expected)):
    schema.check(config)
  if data.get('layout') == 'folder':
    with pytest.raises(UserInputError, match="'all' needs the mvtec or visa"):
      layouts.expand_categories(config, ['all'])


@pytest.mark.parametrize('layout,damage', [
    ('visa', 'missing_csv'), ('visa', 'missing_file'),
    ('folder', 'mask_without_image')])
def test_bad_layout_is_one_line_and_exit_status_2(tmp_path, layout, damage):
  base = _write_mvtec(str(tmp_path / 'mvtec'))
  if layout == 'visa':
    root = _write_visa(base, str(tmp_path / 'visa'))
    expected = _damage_visa(root, damage)
    args = [f'--config.data.root={root}', '--config.data.category=widget']
  else:
    dirs = _write_folders(base, str(tmp_path / 'folders'))
    os.remove(os.path.join(dirs['abnormal_dir'], '002.png'))
    expected = os.path.join(dirs['mask_dir'], '002_mask.png')
    args = [f'--config.data.{k}={v}' for k, v in dirs.items()]
  result = run_script('train.py', f'--workdir={tmp_path / "w"}',
                      f'--config.data.layout={layout}', *args)
  assert_one_error_line(result, expected)
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')
