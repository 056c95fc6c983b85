"""SLIC and the FAS input on device, against scikit-image and the host path."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from skimage import color, data, filters, transform
from skimage.segmentation import find_boundaries, slic as sk_slic

from tasad_jax.fine import selection, slic


def _textures(size=96):
  out = []
  for name in ('astronaut', 'coffee', 'brick'):
    img = getattr(data, name)()
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
    out.append(transform.resize(img, (size, size), anti_aliasing=True))
  return np.stack(out).astype(np.float32)


def test_lab_and_blur_match_scikit_image():
  img = _textures()[0]
  lab = color.rgb2lab(img)
  np.testing.assert_allclose(slic.rgb_to_lab(jnp.asarray(img)), lab,
                             atol=2e-3)
  blurred = filters.gaussian(lab, sigma=[1, 1, 0], mode='reflect')
  np.testing.assert_allclose(
      slic.gaussian_blur(jnp.asarray(lab[None]), 1.0)[0], blurred,
      atol=1e-3)


def _boundary_recall(labels, reference, tolerance=2):
  """Share of the reference's boundary pixels within `tolerance` of ours."""
  ours = ndimage.binary_dilation(find_boundaries(labels), iterations=tolerance)
  return ours[find_boundaries(reference)].mean()


def test_slic_is_close_to_scikit_image_on_real_images():
  images = _textures()
  labels = np.asarray(jax.jit(lambda x: slic.slic(x, 100, 8.0, 1.0))(
      jnp.asarray(images)))
  assert labels.shape == images.shape[:3] and labels.min() == 1
  for img, ours in zip(images, labels):
    ref = sk_slic(img.astype(np.float64), n_segments=100, compactness=8,
                  sigma=1, start_label=1)
    assert 0.5 * ref.max() <= len(np.unique(ours)) <= 2 * ref.max()
    assert _boundary_recall(ours, ref) > 0.85
    assert _boundary_recall(ref, ours) > 0.75


def test_device_fas_input_equals_host_with_the_same_superpixels():
  images = _textures(64)
  rng = np.random.default_rng(0)
  coarse = rng.random((3, 64, 64)) * 0.1  # Background below the seed level,
  coarse[:, 20:30, 35:50] = 0.5  # one anomalous blob per image,
  coarse[:, 50, 10] = 0.9  # and a single pixel the median removes.
  params = selection.RefineParams(histogram_fraction=0.95, seed_threshold=30,
                               n_segments=40)
  choice = slic.assign(jnp.asarray(images), params.n_segments)
  labels = np.asarray(slic.labels(choice, 64, 64, params.n_segments))
  device, region = selection.fas_inputs_device(
      jnp.asarray(coarse[..., None], jnp.float32), jnp.asarray(images), params,
      choice)
  for i in range(3):  # The host's steps with the same superpixels.
    host_region = selection.keep_superpixels(
        selection.seeds(coarse[i].astype(np.float32), params), labels[i])
    np.testing.assert_array_equal(np.asarray(region[i]), host_region)
    np.testing.assert_allclose(np.asarray(device[i]),
                               selection.crop(images[i], host_region),
                               atol=1e-6)
  assert 0 < np.asarray(region).mean() < 1
