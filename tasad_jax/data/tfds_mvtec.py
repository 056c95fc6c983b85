"""A TensorFlow Datasets builder for MVTec AD, from the user's manual download.

    import tasad_jax.data.tfds_mvtec  # registers 'mvtec_ad'
    ds = tfds.load('mvtec_ad/bottle', split='test', download_and_prepare_kwargs={
        'download_config': tfds.download.DownloadConfig(manual_dir=MVTEC_ROOT)})

Any category in MVTec layout under the manual directory can be built, not only
the 15 of MVTec AD: `MvtecAd(config=tfds.core.BuilderConfig(name='my_part'))`.
Files are read with the same reader as the folder loader, so both loaders give
identical arrays.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from tasad_jax.data import imageio, mvtec
from tasad_jax.data.categories import resolve_root
from tasad_jax.runtime.errors import UserInputError

MVTEC_CATEGORIES = ('bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut',
                    'leather', 'metal_nut', 'pill', 'screw', 'tile',
                    'toothbrush', 'transistor', 'wood', 'zipper')


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD (Bergmann et al., CVPR 2019), one builder config per category."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c) for c in MVTEC_CATEGORIES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  MVTec AD cannot be downloaded automatically (its licence needs a sign-up).
  Download mvtec_anomaly_detection.tar.xz from
  https://www.mvtec.com/company/research/datasets/mvtec-ad, extract it and pass
  the extracted folder (the one holding bottle/, cable/, ...) as manual_dir.
  Any folder in the same layout works: <manual_dir>/<category>/train/good, ...
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'mask': tfds.features.Image(shape=(None, None, 1)),
            'label': tfds.features.ClassLabel(names=['good', 'anomalous']),
            'defect_type': tfds.features.Text(),
            'filename': tfds.features.Text(),
        }),
        homepage='https://www.mvtec.com/company/research/datasets/mvtec-ad')

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    category = mvtec.scan_category(root, self.builder_config.name)
    splits = {'train': self._generate_examples(category, category.train)}
    if category.test:
      splits['test'] = self._generate_examples(category, category.test)
    return splits

  def _generate_examples(self, category, samples):
    base = os.path.join(category.root, category.name)
    for s in samples:
      image = imageio.read_image(s.path)
      if s.mask_path is None:
        mask = np.zeros(image.shape[:2], np.uint8)
      else:
        mask = imageio.read_mask(s.mask_path) * 255
      name = os.path.relpath(s.path, base).replace(os.sep, '/')
      yield name, {'image': image, 'mask': mask[..., None], 'label': s.label,
                   'defect_type': s.defect_type, 'filename': name}


def builder(category: str, data_dir: str | None = None) -> MvtecAd:
  """The builder of any category name (MVTec's 15 or a user's own)."""
  if category in MVTEC_CATEGORIES:
    return MvtecAd(config=category, data_dir=data_dir)
  return MvtecAd(config=tfds.core.BuilderConfig(name=category),
                 data_dir=data_dir)


def load_split(config, split: str) -> dict[str, np.ndarray]:
  """Prepares (once) and reads a split; same arrays as `mvtec.load_samples`."""
  root = resolve_root(config.data.root)
  mvtec.scan_category(root, config.data.category)  # Clear errors first.
  b = builder(config.data.category, config.data.tfds_data_dir or None)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=root))
  if split not in b.info.splits:
    return mvtec.load_samples([], config.data.image_size)
  examples = sorted(b.as_dataset(split=split).as_numpy_iterator(),
                    key=lambda e: e['filename'])
  size = config.data.image_size
  base = os.path.join(root, config.data.category)
  if not examples:
    raise UserInputError(f'{base}: split {split!r} is empty')
  return {
      'image': np.stack([imageio.resize_image(e['image'], size) for e in examples]),
      'mask': np.stack([imageio.resize_mask((e['mask'][..., 0] > 127).astype(
          np.uint8), size)[..., None] for e in examples]),
      'label': np.array([e['label'] for e in examples], np.int32),
      'defect_type': np.array([e['defect_type'].decode() for e in examples],
                              dtype=object),
      'path': np.array([os.path.join(base, e['filename'].decode())
                        for e in examples], dtype=object),
  }
