"""Reader for categories in VisA layout (Zou et al., ECCV 2022; amazon-science/spot-diff).

    <root>/<category>/Data/Images/Normal/*.JPG
    <root>/<category>/Data/Images/Anomaly/*.JPG
    <root>/<category>/Data/Masks/Anomaly/*.png   (the image's stem)
    <root>/split_csv/1cls.csv

The split CSV, as published with the dataset, has the header
`object,split,label,image,mask` and one row per image, e.g.

    candle,train,normal,candle/Data/Images/Normal/0836.JPG,
    candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png

`split` is 'train' or 'test', `label` 'normal' or 'anomaly', the paths are
relative to the root and the mask is empty for normal images. The CSV decides
the split: files it does not name are not read. The one-class split has no
defect types, so every anomalous image has the type 'anomaly' (normal test
images 'good', as in MVTec AD). VisA's masks number each defect region
(0, 1, 2, ...); `imageio.read_mask` counts every non-zero pixel as defect.

The result is the same `mvtec.Category` as the MVTec reader's: train samples
sorted by file path, test samples by (defect type, file path).
"""

from __future__ import annotations

import csv
import os

from tasad_jax.data import imageio, mvtec
from tasad_jax.runtime.errors import UserInputError

SPLIT_CSV = os.path.join('split_csv', '1cls.csv')
COLUMNS = ('object', 'split', 'label', 'image', 'mask')
ANOMALY = 'anomaly'
NORMAL = 'normal'
IMAGES = os.path.join('Data', 'Images')
MASKS = os.path.join('Data', 'Masks', 'Anomaly')


def categories(root: str) -> list[str]:
  """The objects of `<root>/split_csv/1cls.csv`, sorted."""
  return sorted({row['object'] for _, row in _read_csv(root)})


def _read_csv(root: str) -> list[tuple[int, dict[str, str]]]:
  """(line number, row) of each data row of the split CSV."""
  path = os.path.join(root, SPLIT_CSV)
  if not os.path.isdir(root):
    raise UserInputError(f'{root}: dataset root (config.data.root) not found')
  if not os.path.isfile(path):
    raise UserInputError(f'{path}: split CSV not found; the VisA layout needs '
                         f'{SPLIT_CSV} under config.data.root')
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      header = [c.strip() for c in reader.fieldnames or ()]
      missing = [c for c in COLUMNS if c not in header]
      if missing:
        raise UserInputError(f'{path}: split CSV lacks the column(s) '
                             f'{", ".join(missing)}; expected header '
                             f'{",".join(COLUMNS)}')
      reader.fieldnames = header
      return [(reader.line_num, {k: (v or '').strip() for k, v in row.items()
                                 if k in COLUMNS})
              for row in reader if any((v or '').strip() for v in row.values()
                                       if isinstance(v, str))]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserInputError(f'{path}: cannot read split CSV ({e})') from None


def _file(root: str, csv_path: str, line: int, column: str, value: str) -> str:
  """The existing file that a CSV cell names, relative to the root."""
  if not value:
    raise UserInputError(f'{csv_path}:{line}: empty {column!r} column')
  path = os.path.normpath(os.path.join(root, value))
  if not os.path.isfile(path):
    raise UserInputError(f'{csv_path}:{line}: names a missing file {path}')
  return path


def _check_masks(base: str) -> None:
  """Every mask of `Data/Masks/Anomaly` needs its image in `Data/Images/Anomaly`."""
  mask_dir = os.path.join(base, MASKS)
  if not os.path.isdir(mask_dir):
    return
  image_dir = os.path.join(base, IMAGES, 'Anomaly')
  stems = ({mvtec.stem(p) for p in mvtec.list_images(image_dir)}
           if os.path.isdir(image_dir) else set())
  for m in mvtec.list_images(mask_dir):
    if mvtec.stem(m) not in stems:
      raise UserInputError(f'{m}: mask has no image {mvtec.stem(m)}.* in '
                           f'{image_dir}')


def scan_category(root: str, category: str) -> mvtec.Category:
  """Lists and checks the files of one VisA object.

  Args:
    root: the VisA root, holding `split_csv/` and one folder per object.
    category: the object (the CSV's `object` column and its folder name).

  Raises:
    UserInputError: the root, object folder or CSV is missing, the CSV is
      malformed or names a missing file or one twice, an anomalous row has no
      mask, a mask has no image, or the object has no train image.
  """
  rows = _read_csv(root)
  csv_path = os.path.join(root, SPLIT_CSV)
  base = os.path.join(root, category)
  if not os.path.isdir(base):
    known = ', '.join(mvtec.subfolders(root)[:20]) or 'none'
    raise UserInputError(f'{base}: category {category!r} (config.data.category)'
                         f' not found; categories here: {known}')
  mine = [(line, row) for line, row in rows if row['object'] == category]
  if not mine:
    known = ', '.join(sorted({r['object'] for _, r in rows})[:20]) or 'none'
    raise UserInputError(f'{csv_path}: no rows for object {category!r} '
                         f'(config.data.category); objects here: {known}')
  train, test, seen = [], [], {}
  for line, row in mine:
    where = f'{csv_path}:{line}'
    split, label = row['split'], row['label']
    if split not in ('train', 'test'):
      raise UserInputError(f'{where}: split {split!r} must be train or test')
    if label not in (NORMAL, ANOMALY):
      raise UserInputError(f'{where}: label {label!r} must be {NORMAL} or '
                           f'{ANOMALY}')
    image = _file(root, csv_path, line, 'image', row['image'])
    if image in seen:
      raise UserInputError(f'{where}: {image} is already named on line '
                           f'{seen[image]}')
    seen[image] = line
    if not imageio.is_image_file(image):
      raise UserInputError(f'{where}: {image} is not an image file '
                           f'({", ".join(imageio.IMAGE_EXTENSIONS)})')
    if label == NORMAL:
      (train if split == 'train' else test).append(
          mvtec.Sample(image, 0, mvtec.GOOD))
    elif split == 'train':
      raise UserInputError(f'{where}: an anomalous train image; the one-class '
                           'split (1cls.csv) trains on normal images only')
    else:
      mask = _file(root, csv_path, line, 'mask', row['mask'])
      test.append(mvtec.Sample(image, 1, ANOMALY, mask))
  if not train:
    raise UserInputError(f'{csv_path}: no train image for object {category!r}')
  _check_masks(base)
  return mvtec.Category(
      root=root, name=category,
      train=tuple(sorted(train, key=lambda s: s.path)),
      test=tuple(sorted(test, key=lambda s: (s.defect_type, s.path))))
