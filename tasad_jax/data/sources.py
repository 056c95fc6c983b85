"""Anomaly source images and their cached superpixel maps.

A source is any texture photograph from which pseudo-anomalies are cut: a
folder of images (DTD's `images/<class>/*.jpg` or flat), a TFDS dataset such as
`tfds:dtd`, or `builtin`: scikit-image's bundled brick, grass and gravel
textures, cropped, rotated and tinted into many variants, usable offline.

SAIM needs SLIC label maps of every source at several segment counts. The
sources are fixed, so the maps are computed once per (images, parameters), in
threads, and cached on disk; the per-sample work in `tf.data` then only gathers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os

import numpy as np
import skimage
from skimage import data as skdata
from skimage import transform
from skimage.segmentation import slic

from tasad_jax.runtime import fileio
from tasad_jax.data import embedded, imageio
from tasad_jax.runtime.errors import UserInputError

BUILTIN_TEXTURES = ('brick', 'grass', 'gravel')


@dataclasses.dataclass(frozen=True)
class SourcePool:
  """Source images at the training size with their SLIC label maps.

  Attributes:
    images: uint8 [N, S, S, 3].
    segments: uint16 [N, K, S, S], labels 1..num_segments (start_label 1), one
      map per entry of `n_segments`.
    num_segments: int32 [N, K], the largest label of each map.
    n_segments: the K requested segment counts (e.g. 30, 150, 250).
  """
  images: np.ndarray
  segments: np.ndarray
  num_segments: np.ndarray
  n_segments: tuple[int, ...]

  def __len__(self) -> int:
    return len(self.images)

  def take(self, index: np.ndarray) -> 'SourcePool':
    return SourcePool(self.images[index], self.segments[index],
                      self.num_segments[index], self.n_segments)

  @staticmethod
  def concatenate(pools: list['SourcePool']) -> 'SourcePool':
    return SourcePool(*(np.concatenate([getattr(p, f) for p in pools])
                        for f in ('images', 'segments', 'num_segments')),
                      pools[0].n_segments)


def builtin_textures(image_size: int, variants: int, seed: int) -> np.ndarray:
  """Cropped, rotated and tinted variants of scikit-image's bundled textures."""
  rng = np.random.default_rng([seed, 7])
  out = np.zeros((len(BUILTIN_TEXTURES) * variants, image_size, image_size, 3),
                 np.uint8)
  for t, name in enumerate(BUILTIN_TEXTURES):
    texture = getattr(skdata, name)().astype(np.float64) / 255.0
    for v in range(variants):
      rotated = transform.rotate(texture, rng.uniform(0, 360), mode='reflect')
      crop = int(texture.shape[0] * rng.uniform(0.25, 0.8))
      y, x = rng.integers(0, texture.shape[0] - crop + 1, size=2)
      patch = transform.resize(rotated[y:y + crop, x:x + crop],
                               (image_size, image_size), anti_aliasing=True)
      contrast = rng.uniform(0.6, 1.4)
      patch = (patch - patch.mean()) * contrast + patch.mean()
      tint = rng.uniform(0.3, 1.0, size=3)
      tint /= tint.max()
      rgb = patch[..., None] * tint + rng.uniform(-0.1, 0.2)
      out[t * variants + v] = np.clip(rgb * 255, 0, 255).round().astype(np.uint8)
  return out


def to_grey(images: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of uint8 RGB images, repeated to 3 channels."""
  luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return np.repeat(np.clip(luma.round(), 0, 255).astype(np.uint8)[..., None],
                   3, axis=-1)


def _folder_images(folder: str, image_size: int) -> np.ndarray:
  if not os.path.isdir(folder):
    raise UserInputError(
        f'{folder}: anomaly source folder (config.anomaly.source) not found')
  paths = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    paths += [os.path.join(dirpath, f) for f in sorted(filenames)
              if imageio.is_image_file(f)]
  if not paths:
    raise UserInputError(f'{folder}: anomaly source folder holds no image files')
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as ex:
    images = list(ex.map(
        lambda p: imageio.resize_image(imageio.read_image(p), image_size), paths))
  return np.stack(images)


def _tfds_images(name: str, image_size: int, data_dir: str | None) -> np.ndarray:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds = tfds.load(name, split='all', data_dir=data_dir or None, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserInputError(f'tfds:{name}: unknown TFDS dataset '
                         '(config.anomaly.source)') from None
  except (AssertionError, FileNotFoundError, ValueError) as e:
    raise UserInputError(
        f'tfds:{name}: not prepared in {data_dir or "the default TFDS data_dir"};'
        f' run `tfds build {name}` first (config.anomaly.tfds_data_dir): '
        f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
  images = []
  for example in ds.as_numpy_iterator():
    image = example['image'] if isinstance(example, dict) else example[0]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    images.append(imageio.resize_image(np.asarray(image[..., :3]), image_size))
  if not images:
    raise UserInputError(f'tfds:{name}: the dataset is empty')
  return np.stack(images)


def load_source_images(source: str, image_size: int, *, seed: int = 0,
                       builtin_variants: int = 32,
                       tfds_data_dir: str | None = None) -> np.ndarray:
  """Loads the anomaly sources named by `config.anomaly.source`, uint8 [N,S,S,3].

  Several sources joined by commas ('builtin,/data/dtd/images') are pooled in
  the order given; each sample then draws uniformly from the pool, so the
  number of images of each (e.g. `builtin_variants`) sets the mix.
  """
  names = [name.strip() for name in source.split(',')]
  if not all(names):
    raise UserInputError(f'{source!r}: empty source name in the comma-separated '
                         'list (config.anomaly.source)')
  parts = []
  for name in names:
    if name == 'builtin':
      parts.append(builtin_textures(image_size, builtin_variants, seed))
    elif name.startswith('tfds:'):
      parts.append(_tfds_images(name[len('tfds:'):], image_size, tfds_data_dir))
    else:
      parts.append(_folder_images(os.path.expanduser(name), image_size))
  return np.concatenate(parts)


def _segment(image: np.ndarray, n_segments: tuple[int, ...], compactness: float,
             sigma: float) -> tuple[np.ndarray, np.ndarray]:
  maps = np.stack([
      slic(image, n_segments=n, compactness=compactness, sigma=sigma,
           start_label=1, channel_axis=-1) for n in n_segments])
  return maps.astype(np.uint16), maps.reshape(len(n_segments), -1).max(-1)


def segment_pool(images: np.ndarray, n_segments=(30, 150, 250),
                 compactness: float = 8.0, sigma: float = 1.0,
                 use_cache: bool = True) -> SourcePool:
  """Computes (or loads from the cache) SLIC maps of every image."""
  n_segments = tuple(int(n) for n in n_segments)
  digest = hashlib.blake2b(images.tobytes(), digest_size=16)
  digest.update(repr((images.shape, n_segments, float(compactness),
                      float(sigma), skimage.__version__)).encode())
  path = os.path.join(embedded.cache_dir(), 'slic', digest.hexdigest() + '.npz')
  if use_cache and os.path.exists(path):
    try:
      with np.load(path) as cached:
        return SourcePool(images, cached['segments'], cached['num_segments'],
                          n_segments)
    except (OSError, ValueError, KeyError):
      logging.warning('Ignoring unreadable superpixel cache %s', path)
  logging.info('Computing SLIC superpixels of %d source images (%s segments)',
               len(images), n_segments)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as ex:
    results = list(ex.map(
        lambda im: _segment(im, n_segments, compactness, sigma), images))
  segments = np.stack([r[0] for r in results])
  counts = np.stack([r[1] for r in results]).astype(np.int32)
  if use_cache:
    with fileio.atomic_file(path, 'wb') as f:
      np.savez(f, segments=segments, num_segments=counts)
  return SourcePool(images, segments, counts, n_segments)
