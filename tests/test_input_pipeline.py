"""The train stream: determinism, resumption, the per-process split."""

import numpy as np
import pytest

from tasad_jax.data import pipeline
from tasad_jax.runtime.errors import UserInputError


@pytest.fixture(scope='module')
def cas_data():
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  return config, pipeline.load_train_data(config, 'cas')


def _batches(data, config, n, **kwargs):
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  ds = pipeline.train_dataset(data, config, 'cas', **kwargs)
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


def _assert_equal(a, b):
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_same_seed_same_batches_other_seed_other_batches(cas_data):
  config, data = cas_data
  first = _batches(data, config, 3, batch_size=4)
  for a, b in zip(first, _batches(data, config, 3, batch_size=4)):
    _assert_equal(a, b)
  config = config.copy_and_resolve_references()
  config.seed = 1
  other = _batches(data, config, 3, batch_size=4)
  assert not np.array_equal(first[0]['augmented'], other[0]['augmented'])


def test_resume_at_a_step_gives_the_same_stream(cas_data):
  config, data = cas_data
  full = _batches(data, config, 4, batch_size=4)
  resumed = _batches(data, config, 2, batch_size=4, start_step=2)
  _assert_equal(full[2], resumed[0])
  _assert_equal(full[3], resumed[1])


def test_processes_split_each_global_batch(cas_data):
  config, data = cas_data
  global_batches = _batches(data, config, 2, batch_size=4)
  parts = [_batches(data, config, 2, batch_size=4, process_index=p,
                    process_count=2) for p in range(2)]
  for step in range(2):
    joined = {k: np.concatenate([parts[0][step][k], parts[1][step][k]])
              for k in global_batches[step]}
    _assert_equal(global_batches[step], joined)
  with pytest.raises(UserInputError, match='batch_size'):
    pipeline.train_dataset(data, config, 'cas', batch_size=5,
                                 process_index=0, process_count=2)


def test_every_image_is_seen_once_per_epoch(cas_data):
  config, data = cas_data
  config = config.copy_and_resolve_references()
  config.anomaly.normal_probability = 1.0
  n = len(data.images)
  batch = _batches(data, config, 1, batch_size=n)[0]
  seen = np.sort((batch['image'] * 255).round().reshape(n, -1), axis=0)
  np.testing.assert_array_equal(
      seen, np.sort(data.images.reshape(n, -1).astype(np.float32), axis=0))


def test_fine_stage_adds_the_category_images(cas_data):
  config, cas = cas_data
  fas = pipeline.load_train_data(config, 'fas', cas.images, cas.sources)
  expected = round(config.anomaly.fas_source_fraction * len(cas.pool))
  assert len(fas.pool) == max(1, expected) + len(cas.images)
  np.testing.assert_array_equal(fas.pool.images[-len(cas.images):], cas.images)
