"""Reader for plain folders of normal and defective images ('folder' layout).

    normal_dir        normal images: the train set (and normal test images)
    abnormal_dir      defective images: the test set's anomalies
    mask_dir          optional: their masks, `<stem>.*` or `<stem>_mask.*`
    normal_test_dir   optional: normal test images

Only image files directly in each folder are read. The defect type of the
abnormal images is the abnormal folder's name (e.g. `bad`). With `mask_dir`,
every abnormal image needs its mask and every mask its image; without it the
masks are empty, so the pixel metrics are NaN and only image metrics count.

Seeded split: without `normal_test_dir`, `test_fraction` of the normal images
(rounded; at least one and at most all but one when there are two or more)
move to the test set: those whose SHA-256 of `"<seed>/<file name>"` sorts
first. The choice depends only on the seed and the file names, not on the
folder's path or listing order.

The result is the same `mvtec.Category` as the MVTec reader's: train samples
sorted by file name, test samples by (defect type, file name).
"""

from __future__ import annotations

import hashlib
import os

from tasad_jax.data import imageio, mvtec
from tasad_jax.runtime.errors import UserInputError


def _images(folder: str, field: str) -> list[str]:
  """The image files in a configured folder; at least one."""
  if not os.path.isdir(folder):
    raise UserInputError(f'{folder}: folder (config.data.{field}) not found')
  images = mvtec.list_images(folder)
  if not images:
    sub = mvtec.subfolders(folder)
    hint = (f'; subfolders ({", ".join(sub[:5])}) are not read' if sub else '')
    raise UserInputError(f'{folder}: no image files ({", ".join(imageio.IMAGE_EXTENSIONS)})'
                         f' in config.data.{field}{hint}')
  return images


def split_normal(paths: list[str], fraction: float, seed: int
                 ) -> tuple[list[str], list[str]]:
  """(train, test) of the normal images: the seeded split of the module doc."""
  n = len(paths)
  count = int(round(fraction * n))
  count = min(max(count, 1), n - 1) if fraction > 0 and n >= 2 else 0

  def rank(path):
    name = os.path.basename(path)
    return hashlib.sha256(f'{seed}/{name}'.encode()).hexdigest(), name

  test = set(sorted(paths, key=rank)[:count])
  return [p for p in paths if p not in test], [p for p in paths if p in test]


def _masks(images: list[str], mask_dir: str, abnormal_dir: str
           ) -> dict[str, str]:
  """Image path -> mask path, each mask matched to one image by stem."""
  by_stem: dict[str, str] = {}
  for p in images:
    if mvtec.stem(p) in by_stem:
      raise UserInputError(f'{p}: two images of stem {mvtec.stem(p)!r} '
                           f'({by_stem[mvtec.stem(p)]}); a mask could not tell '
                           'them apart')
    by_stem[mvtec.stem(p)] = p
  if not os.path.isdir(mask_dir):
    raise UserInputError(f'{mask_dir}: folder (config.data.mask_dir) not found')
  found: dict[str, str] = {}
  for m in mvtec.list_images(mask_dir):
    s = mvtec.stem(m)
    name = s if s in by_stem else mvtec.mask_name(s)
    if name not in by_stem:
      raise UserInputError(f'{m}: mask has no image {name}.* in {abnormal_dir}')
    image = by_stem[name]
    if image in found:
      raise UserInputError(f'{m}: a second mask for {image} (also {found[image]})')
    found[image] = m
  for p in images:
    if p not in found:
      raise UserInputError(f'{p}: defect image has no mask '
                           f'{os.path.join(mask_dir, mvtec.stem(p))}[_mask].png')
  return found


def scan_folders(normal_dir: str, abnormal_dir: str, mask_dir: str = '',
                 normal_test_dir: str = '', test_fraction: float = 0.2,
                 seed: int = 0, name: str = 'folder') -> mvtec.Category:
  """Lists and checks the folders of the 'folder' layout.

  Args:
    normal_dir, abnormal_dir, mask_dir, normal_test_dir: the folders (the
      module doc); '' for the optional ones when absent.
    test_fraction: share of normal images moved to the test set when there is
      no `normal_test_dir`.
    seed: seeds that split (config.seed).
    name: the category's name (config.data.category).

  Raises:
    UserInputError: a folder is missing or holds no image, two folders are the
      same, a mask has no image or an image no mask, or two abnormal images
      share a stem while masks are given.
  """
  dirs = {'normal_dir': normal_dir, 'abnormal_dir': abnormal_dir,
          'mask_dir': mask_dir, 'normal_test_dir': normal_test_dir}
  seen: dict[str, str] = {}
  for field, folder in dirs.items():
    if folder:
      real = os.path.realpath(folder)
      if real in seen:
        raise UserInputError(f'{folder}: config.data.{field} is the same folder '
                             f'as config.data.{seen[real]}')
      seen[real] = field
  normal = _images(normal_dir, 'normal_dir')
  abnormal = _images(abnormal_dir, 'abnormal_dir')
  defect = os.path.basename(os.path.normpath(os.path.abspath(abnormal_dir)))
  if defect == mvtec.GOOD:
    raise UserInputError(f'{abnormal_dir}: config.data.abnormal_dir may not be '
                         f'named {mvtec.GOOD!r} (the type of normal images)')
  masks = _masks(abnormal, mask_dir, abnormal_dir) if mask_dir else {}
  if normal_test_dir:
    train, good = normal, _images(normal_test_dir, 'normal_test_dir')
  else:
    train, good = split_normal(normal, test_fraction, seed)
  test = [mvtec.Sample(p, 0, mvtec.GOOD) for p in good]
  test += [mvtec.Sample(p, 1, defect, masks.get(p)) for p in abnormal]
  by_name = lambda s: (s.defect_type, os.path.basename(s.path))
  root = os.path.commonpath([os.path.abspath(d) for d in dirs.values() if d])
  return mvtec.Category(root=root, name=name,
                        train=tuple(mvtec.Sample(p, 0, mvtec.GOOD) for p in train),
                        test=tuple(sorted(test, key=by_name)))
