"""The fine stage's input (host reference): seeds, superpixels, crop."""

import numpy as np

from tasad_jax.fine import selection

TRAIN = selection.RefineParams(histogram_fraction=1.0, seed_threshold=0,
                            n_segments=30)
TEST = selection.RefineParams(histogram_fraction=0.95, seed_threshold=30,
                           n_segments=30)


def _image(size=64):
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:size, :size] / size
  img = np.stack([yy, xx, 0.5 * (yy + xx)], -1) + rng.normal(0, 0.02, (size, size, 3))
  return np.clip(img, 0, 1)


def test_keeps_exactly_the_superpixels_that_hold_seeds():
  image = _image()
  coarse = np.zeros((64, 64), np.float32)
  coarse[20:24, 30:34] = 0.8
  coarse[50, 5] = 0.9  # One isolated pixel: removed by the 3x3 median.
  seed_map = selection.seeds(coarse, TEST)
  assert seed_map[21, 31] and not seed_map[50, 5]
  labels = selection.superpixels(image, TEST)
  out, region = selection.fas_input(coarse, image, TEST)
  expected = np.isin(labels, np.unique(labels[seed_map]))
  np.testing.assert_array_equal(region, expected)
  np.testing.assert_allclose(out[~region], 0.0)
  np.testing.assert_allclose(out[region], image[region], rtol=1e-6)


def test_histogram_filter_drops_the_dominant_intensity_at_test_only():
  coarse = np.full((32, 32), 0.5, np.float32)  # One intensity everywhere.
  assert selection.seeds(coarse, TRAIN).all()
  assert not selection.seeds(coarse, TEST).any()


def test_magnitude_is_clipped_not_wrapped():
  coarse = np.full((16, 16), -1.2, np.float32)  # |c| * 255 = 306 -> 255.
  coarse[:8] = 0.0
  r_seeds = selection.seeds(coarse, selection.RefineParams(1.0, 254))
  assert r_seeds[12:, :].all() and not r_seeds[:6].any()


def test_crop_rescales_only_above_one():
  region = np.ones((4, 4), bool)
  image = np.full((4, 4, 3), 2.0)
  np.testing.assert_allclose(selection.crop(image, region).max(), 2.0 / 2.005)
  np.testing.assert_allclose(selection.crop(image * 0.25, region).max(), 0.5)


def test_batched_inputs_match_single():
  images = np.stack([_image(), _image()[::-1]])
  coarse = np.zeros((2, 64, 64, 1), np.float32)
  coarse[:, 10:20, 10:20] = 0.5
  batch = selection.fas_inputs(coarse, images, TRAIN)
  for i in range(2):
    np.testing.assert_array_equal(
        batch[i], selection.fas_input(coarse[i, ..., 0], images[i], TRAIN)[0])
