"""The TFDS builder for MVTec AD gives the same data as the folder reader."""

import numpy as np
import tensorflow_datasets as tfds

from conftest import write_tree
from tasad_jax.data import splits
from tasad_jax.data import tfds_mvtec  # noqa: F401 (registers mvtec_ad)


def test_tfds_load_reads_the_manual_dir(tmp_path):
  root = str(tmp_path / 'mvtec')
  info = write_tree(root, category='bottle')
  ds = tfds.load('mvtec_ad/bottle', split='test', data_dir=str(tmp_path / 'tfds'),
                 download_and_prepare_kwargs={
                     'download_config': tfds.download.DownloadConfig(
                         manual_dir=root)})
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == info['good'] + sum(info['defects'].values())
  assert {e['defect_type'].decode() for e in examples} == {'good', 'crack', 'hole'}
  assert all(e['image'].shape[-1] == 3 and e['mask'].shape[-1] == 1
             for e in examples)
  for e in examples:  # Defects carry their mask, good images an empty one.
    assert (e['mask'].max() > 0) == (e['defect_type'].decode() != 'good')


def test_tfds_loader_equals_folder_loader(tmp_path, tiny_config):
  root = str(tmp_path / 'mvtec')
  write_tree(root, category='my_part')  # Not one of MVTec's 15 categories.
  config = tiny_config
  config.data.root = root
  config.data.category = 'my_part'
  folder = {s: splits.load_split(config, s) for s in ('train', 'test')}
  config.data.loader = 'tfds'
  config.data.tfds_data_dir = str(tmp_path / 'tfds')
  for split in ('train', 'test'):
    from_tfds = splits.load_split(config, split)
    for key, value in folder[split].items():
      np.testing.assert_array_equal(from_tfds[key], value, err_msg=key)


def test_tfds_anomaly_source_and_its_errors(tmp_path):
  import pytest  # pylint: disable=g-import-not-at-top
  from tasad_jax.data import sources  # pylint: disable=g-import-not-at-top
  from tasad_jax.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=5):  # DTD's real features, fake pixels.
    images = sources.load_source_images('tfds:dtd', 16)
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
  with pytest.raises(UserInputError, match='not prepared .*tfds build dtd'):
    sources.load_source_images('tfds:dtd', 16, tfds_data_dir=str(tmp_path))
  with pytest.raises(UserInputError, match='unknown TFDS dataset'):
    sources.load_source_images('tfds:no_such_dataset', 16)
