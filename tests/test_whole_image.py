"""Whole-image inference: canvases and boxes, shape buckets, the fine stage
skipped where the coarse map has no seed."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import copy_in_mode
from tasad_jax.core import scoring, tiling
from tasad_jax.fine import fas, selection
from tasad_jax.inference import two_stage, whole_image

S = 32  # configs/tiny.py's image_size.


def _boxes_on_canvas(rng, shape, count):
  """Random boxes [count, 4] inside a canvas, and maps [count, H, W] that
  are random inside their box and wild (large, negative) outside it."""
  boxes, maps = [], []
  for _ in range(count):
    h, w = rng.integers(5, shape[0] + 1), rng.integers(5, shape[1] + 1)
    top, left = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
    m = rng.normal(50.0, 30.0, shape).astype(np.float32)
    m[top:top + h, left:left + w] = rng.random((h, w)) ** 3
    boxes.append((top, left, h, w))
    maps.append(m)
  return np.array(boxes, np.int32), np.stack(maps)


def test_the_score_of_a_box_is_the_score_of_the_cropped_map():
  rng = np.random.default_rng(0)
  boxes, maps = _boxes_on_canvas(rng, (40, 56), 6)
  valid = selection.box_mask(jnp.asarray(boxes), 40, 56)
  for window in (3, 11):
    got = scoring.max_of_mean_filter(maps[..., None], window, valid)
    for i, (t, l, h, w) in enumerate(boxes):
      crop = maps[i, t:t + h, l:l + w][None, ..., None]
      np.testing.assert_allclose(
          got[i], scoring.max_of_mean_filter(crop, window)[0], rtol=1e-6)
  for k in (7, 5000):  # Fewer valid pixels than k: the mean of them all.
    got = scoring.top_k_mean(maps[..., None], k, valid)
    for i, (t, l, h, w) in enumerate(boxes):
      crop = maps[i, t:t + h, l:l + w][None, ..., None]
      np.testing.assert_allclose(got[i], scoring.top_k_mean(crop, k)[0],
                                 rtol=1e-6)


def test_seeds_in_a_box_are_the_host_seeds_of_the_cropped_map():
  rng = np.random.default_rng(1)
  boxes, maps = _boxes_on_canvas(rng, (36, 44), 8)
  maps = np.where(maps > 1, 0.2, maps)  # A dominant value outside each box.
  params = selection.RefineParams(histogram_fraction=0.95, seed_threshold=30)
  got = np.asarray(selection.seeds_device(jnp.asarray(maps), params,
                                          jnp.asarray(boxes)))
  for i, (t, l, h, w) in enumerate(boxes):
    assert not got[i][~np.asarray(selection.box_mask(boxes[i:i + 1], 36, 44))[0]].any()
    np.testing.assert_array_equal(got[i, t:t + h, l:l + w],
                                  selection.seeds(maps[i, t:t + h, l:l + w], params))


def test_canvas_shapes_are_buckets_of_the_working_size():
  g = tiling.Geometry(mode='tile', size=128, whole_pixels=600 * 700, bucket=64)
  assert g.whole(600, 400, 32) == ((640, 448), (0, 0, 600, 400))
  assert g.whole(100, 30, 32) == ((128, 128), (0, 0, 100, 30))  # At least S.
  assert g.whole(700, 700, 32) is None  # Above the pixel bound: tiles.
  assert dataclasses.replace(g, whole_pixels=0).whole(60, 60, 32) is None
  assert dataclasses.replace(g, bucket=48).whole(130, 200, 32)[0] == (192, 288)
  pad = tiling.Geometry(mode='pad', size=32)
  assert pad.whole(20, 32, 32) == ((32, 32), (6, 0, 20, 32))


def test_whole_images_of_a_pointwise_network_equal_its_tiles():
  """With a network whose map is a function of each pixel, the canvases,
  boxes, buckets, batches and order of the whole-image path give exactly
  the tiled maps, for a mix of sizes and of whole and tiled images."""
  def network(x):
    return x[..., 0] * 0.5 + x[..., 1] ** 2

  def tile_fn(x):
    m = network(x)
    return {'cas_map': m, 'cas_score': m.max(axis=(1, 2))}

  calls = []

  def canvas_fn(x, boxes):
    calls.append(x.shape)
    m = network(x)
    valid = np.asarray(selection.box_mask(boxes, *x.shape[1:3]))
    return {'cas_map': m, 'cas_score': np.where(valid, m, -1).max(axis=(1, 2))}

  g = tiling.Geometry(mode='tile', size=S, stride=16, whole_pixels=96 * 96,
                      bucket=32)
  rng = np.random.default_rng(2)
  shapes = [(40, 50), (33, 60), (100, 120), (20, 20), (64, 40), (39, 49),
            (90, 70)]
  images = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
  tiled = whole_image.ImageRunner(tile_fn, lambda m: float(m.max()),
                                  dataclasses.replace(g, whole_pixels=0), 4)
  whole = whole_image.ImageRunner(tile_fn, lambda m: float(m.max()), g, 4,
                                  canvas_fn=canvas_fn, multiple=8,
                                  row_multiple=2)
  a, b = tiled.run(images), whole.run(images)
  for x, y, s in zip(a['cas_map'], b['cas_map'], shapes):
    assert y.shape == s
    np.testing.assert_allclose(y, x, rtol=1e-5)
  np.testing.assert_allclose(b['cas_score'], a['cas_score'], rtol=1e-6)
  # Three canvas shapes (the 100 x 120 image by tiles), batches of even rows.
  assert {c[1:3] for c in calls} == {(32, 32), (64, 64), (96, 96)}
  assert all(c[0] % 2 == 0 for c in calls)


@pytest.fixture(scope='module')
def tile_model(tiny_workdir, tmp_path_factory):
  """The tiny workdir switched to 'tile', loaded."""
  import tasad_jax  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('whole') / 'run')
  return tasad_jax.load(copy_in_mode(tiny_workdir, workdir, 'tile'))


@pytest.mark.parametrize('on_device', [True, False])
def test_the_fine_stage_skipped_without_seeds_changes_nothing(tile_model,
                                                              on_device):
  """Rows without a seed in their box skip the FAS network (and SLIC) and
  get its map of a blank input: the values of running it. The coarse map is
  the image's first channel here: a random image is seeded, a black one is
  not; a batch without seeds runs no FAS program at all."""
  fine = fas.FineStage(tile_model.config)
  fine.coarse.outputs = lambda variables, x: {'map': x[..., :1]}
  r = two_stage.TwoStage(fine, tile_model.runner.cas, tile_model.runner.fas,
                         tile_model.runner.refine_params,
                         tile_model.runner.mesh, on_device=on_device)
  rng = np.random.default_rng(3)
  images = rng.random((2, 64, 96, 3), dtype=np.float32)
  images[1] = 0.0
  boxes = np.array([[0, 0, 50, 90], [3, 4, 40, 60]], np.int32)
  got = r.canvases(images, boxes)
  device_input = fas.FineInput(r.coarse, r.refine_params, True)
  full = jax.jit(functools.partial(two_stage.in_boxes, r.fine, device_input))(
      r.cas, r.fas, jnp.asarray(images), jnp.asarray(boxes))
  seeded = np.asarray(device_input.seeded_in_boxes(full['cas_map'], boxes))
  assert seeded.tolist() == [True, False]
  for key in ('cas_map', 'cas_score', 'tasad_score', 'tasad_map'):
    want = np.asarray(full[key])[..., 0] if key.endswith('map') else full[key]
    rows = [0, 1] if on_device or key.startswith('cas') else [1]
    np.testing.assert_allclose(got[key][rows], np.asarray(want)[rows],
                               atol=1e-6, err_msg=key)
  fine_calls = (r._fine_canvases if on_device else r._fine)._cache_size()  # pylint: disable=protected-access
  r.canvases(images[1:], boxes[1:])  # No seed: no FAS program run.
  assert (r._fine_canvases if on_device else r._fine)._cache_size() == fine_calls  # pylint: disable=protected-access


def test_a_split_of_many_sizes_compiles_one_program_per_bucket(tile_model):
  rng = np.random.default_rng(4)
  shapes = [(int(h), int(w)) for h, w in rng.integers(30, 128, (12, 2))]
  images = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
  r = tile_model.runner
  r._coarse_canvases.clear_cache()  # pylint: disable=protected-access
  out = whole_image.run_images(r, tile_model.geometry, images, 8)
  buckets = {tile_model.geometry.whole(*s, r.input_multiple)[0]
             for s in shapes}
  assert len(buckets) < len(set(shapes))
  assert r._coarse_canvases._cache_size() == len(buckets)  # pylint: disable=protected-access
  assert [m.shape for m in out['tasad_map']] == shapes


@pytest.mark.parametrize('name,settings', [
    ('tasad_cas', {}), ('destseg', {}), ('anoseg', {'score': 'top_k'}),
    ('anoseg', {}), ('cavga', {'score': 'map'})])
def test_a_map_scored_by_bands_has_the_score_of_the_whole_map(tiny_config,
                                                              name, settings):
  """Every method's `score_reduction` gives its `image_score` exactly, by
  bands of a few rows (a line-scan map's, the halo crossing bands)."""
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  config = tiny_config.copy_and_resolve_references()
  config.coarse.name = name
  config.coarse[name].update(settings)
  method = methods.get(config)
  rng = np.random.default_rng(5)
  for shape in ((70, 300), (13, 9), (257, 31)):
    m = (rng.random(shape) ** 4).astype(np.float32)
    m[shape[0] // 2 - 3:shape[0] // 2 + 3, :5] = 1.0  # A defect on a band edge.
    want = float(method.image_score(jnp.asarray(m)[None, ..., None], {})[0])
    got = scoring.banded(method.score_reduction(), m, rows=16)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=str(shape))
