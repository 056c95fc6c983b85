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


def _batches(data, config, n, stage='cas', **kwargs):
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  ds = pipeline.train_dataset(data, config, stage, **kwargs)
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


# config.data.augment: flips and 90-degree turns before the pseudo-anomaly.
ALL_TURNS = ('hflip', 'vflip', 'rot90')


def _with(config, **data_fields):
  config = config.copy_and_resolve_references()
  for key, value in data_fields.items():
    config.data[key] = value
  return config


def _dihedral(x):
  """The 8 flips and turns of an [S, S, C] array (index 0: as it is)."""
  return [np.rot90(x[:, ::-1] if flip else x, k)
          for flip in (False, True) for k in range(4)]


def _turn_of(turned, plain):
  """The index in `_dihedral(plain)` of `turned`, or None."""
  return next((k for k, t in enumerate(_dihedral(plain))
               if np.array_equal(t, turned)), None)


def _digest(batches):
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for b in batches:
    for key in sorted(b):
      v = b[key]
      if key == 'image':  # Exact (uint8 / 255); 'augmented' to 1/1024.
        v = np.round(v * 255).astype(np.uint8)
      elif key == 'augmented':
        v = np.round(v * 1024).astype(np.int32)
      h.update(key.encode())
      h.update(np.ascontiguousarray(v).tobytes())
  return h.hexdigest()[:16]


def test_augment_off_leaves_the_paper_stream_as_it_was(cas_data):
  # The digest of these batches before config.data.augment existed: with the
  # option off the stream must not change (update it only for a deliberate
  # change of the paper's stream).
  config, data = cas_data
  assert tuple(config.data.augment) == ()
  assert _digest(_batches(data, config, 3, batch_size=4)) == 'f0e0c15cfad6d380'


def test_augment_is_a_pure_function_of_seed_and_index(cas_data):
  config, data = cas_data
  config = _with(config, augment=ALL_TURNS)
  full = _batches(data, config, 3, batch_size=4)
  for a, b in zip(full, _batches(data, config, 3, batch_size=4)):
    _assert_equal(a, b)
  _assert_equal(full[2], _batches(data, config, 1, batch_size=4,
                                  start_step=2)[0])


def test_augment_turns_each_image_before_its_pseudo_anomaly(cas_data):
  config, data = cas_data
  config = config.copy_and_resolve_references()
  config.anomaly.normal_probability = 1.0
  plain = _batches(data, config, 1, batch_size=32)[0]
  for kinds, allowed in ((ALL_TURNS, set(range(8))), (('hflip',), {0, 4})):
    turned = _batches(data, _with(config, augment=kinds), 1, batch_size=32)[0]
    np.testing.assert_array_equal(turned['index'], plain['index'])
    turns = {_turn_of(t, p) for t, p in zip(turned['image'], plain['image'])}
    assert turns <= allowed and len(turns) > 1, (kinds, turns)
  # With pseudo-anomalies: pasted on the turned image, inside the mask only.
  config.anomaly.normal_probability = 0.0
  plain = _batches(data, config, 1, batch_size=16)[0]
  batch = _batches(data, _with(config, augment=ALL_TURNS), 1, batch_size=16)[0]
  np.testing.assert_array_equal(batch['label'], batch['mask'].max((1, 2, 3)))
  assert batch['label'].any()
  for i in range(16):
    assert _turn_of(batch['image'][i], plain['image'][i]) is not None
    outside = batch['mask'][i, ..., 0] == 0
    np.testing.assert_array_equal(batch['augmented'][i][outside],
                                  batch['image'][i][outside])
    if batch['label'][i]:
      assert not np.array_equal(batch['augmented'][i][~outside],
                                batch['image'][i][~outside])


def test_augment_turns_the_fine_stage_images_too(cas_data):
  config, cas = cas_data
  config = config.copy_and_resolve_references()
  config.anomaly.normal_probability = 1.0
  fas = pipeline.load_train_data(config, 'fas', cas.images, cas.sources)
  plain = _batches(fas, config, 1, 'fas', batch_size=16)[0]
  turned = _batches(fas, _with(config, augment=ALL_TURNS), 1, 'fas',
                    batch_size=16)[0]
  turns = {_turn_of(t, p) for t, p in zip(turned['image'], plain['image'])}
  assert None not in turns and len(turns) > 1


def test_augment_turns_the_padding_with_the_image(tmp_path):
  from conftest import write_tree  # pylint: disable=g-import-not-at-top
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  write_tree(str(tmp_path), 'widget')
  config = tiny.get_config()
  config.data.root, config.data.category = str(tmp_path), 'widget'
  config.data.resize, config.data.augment = 'pad', ALL_TURNS
  config.anomaly.normal_probability = 0.0
  data = pipeline.load_train_data(config, 'cas')
  batch = _batches(data, config, 1, batch_size=16)[0]
  size, turns = config.data.image_size, set()
  for i in range(16):
    image = np.round(batch['image'][i] * 255).astype(np.uint8)
    j, k = next((j, k) for j, board in enumerate(data.images)
                for k in [_turn_of(image, board)] if k is not None)
    turns.add(k)
    top, left, h, w = data.boxes[j]
    outside = np.ones((size, size, 1), bool)
    outside[top:top + h, left:left + w] = False
    outside = _dihedral(outside)[k][..., 0]
    assert not batch['mask'][i][outside].any()
    np.testing.assert_array_equal(batch['augmented'][i][outside],
                                  batch['image'][i][outside])
  np.testing.assert_array_equal(batch['label'], batch['mask'].max((1, 2, 3)))
  assert len(turns) > 1


def test_augment_turns_real_defects_with_their_masks():
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  from tasad_jax.data import weak_labels  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.labelled_anomalies, config.data.labelled_rate = 'test:1', 0.5
  config.data.augment = ALL_TURNS
  real = weak_labels.load(config)
  data = pipeline.load_train_data(config, 'cas', labelled=real)
  batch = _batches(data, config, 1, batch_size=16)[0]
  images = real['image'].astype(np.float32) / 255.0
  masks = (real['mask'] > 0).astype(np.float32)
  turns = set()
  for i in np.flatnonzero(batch['real']):  # Image and mask turned alike.
    j, k = next((j, k) for j, x in enumerate(images)
                for k in [_turn_of(batch['image'][i], x)] if k is not None)
    np.testing.assert_array_equal(batch['mask'][i], _dihedral(masks[j])[k])
    turns.add(k)
  assert len(turns) > 1


def test_bad_augment_is_refused_naming_the_field(cas_data):
  from tasad_jax.config import saved, schema  # pylint: disable=g-import-not-at-top
  config, _ = cas_data
  for bad in (('flip',), ('hflip', 90)):
    problems = schema.problems(_with(config, augment=bad))
    assert any(p.startswith('config.data.augment:') for p in problems), problems
  assert not schema.problems(_with(config, augment=ALL_TURNS))
  assert tuple(saved.upgrade({'data': {}}).data.augment) == ()
