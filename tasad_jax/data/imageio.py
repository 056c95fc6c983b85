"""Reading and resizing images and masks from files, without TensorFlow.

Camera folders hold whatever was written: grey or colour, 8 or 16 bits, with or
without alpha, PNG/JPEG/BMP/TIFF, turned by an EXIF orientation. Everything is
turned into uint8 RGB, the right way up, so training, evaluation and
prediction see one format; a file that cannot be decoded raises a
`UserInputError` naming it.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from tasad_jax.runtime.errors import UserInputError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


def is_image_file(path: str) -> bool:
  """Whether `path` has an image extension and is not a hidden file."""
  name = os.path.basename(path)
  return (not name.startswith('.')) and name.lower().endswith(IMAGE_EXTENSIONS)


# The largest image read, in pixels: 2^28 (268 megapixels, 16384 x 16384 or a
# 40000 x 6700 line-scan strip; 805 MB as 8-bit RGB). PIL's own guard against
# decompression bombs (89 megapixels) is raised to it; above, one line says so.
MAX_PIXELS = 1 << 28
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
ORIENTATION = 0x0112  # The EXIF tag.


def _open(path: str) -> Image.Image:
  """Decodes `path`, turned as its EXIF orientation says (as viewers show it)."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      img = Image.open(path)
      if img.width * img.height > MAX_PIXELS:
        raise UserInputError(
            f'{path}: {img.width}x{img.height} is {img.width * img.height / 1e6:.0f}'
            f' megapixels, above the {MAX_PIXELS / 1e6:.0f}-megapixel limit '
            '(tasad_jax.data.imageio.MAX_PIXELS); cut it into parts first')
      img.load()
      if img.getexif().get(ORIENTATION, 1) != 1:  # No copy of upright images.
        img = ImageOps.exif_transpose(img)
      return img
  except FileNotFoundError:
    raise UserInputError(f'{path}: file not found') from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserInputError(f'{path}: cannot decode image ({reason})') from None


def _to_uint8(array: np.ndarray) -> np.ndarray:
  """Maps integer or float pixel arrays of any depth onto 0..255."""
  if array.dtype == np.uint8:
    return array
  if array.dtype == bool:
    return array.astype(np.uint8) * 255
  if np.issubdtype(array.dtype, np.floating):
    array = np.nan_to_num(array.astype(np.float64))
    scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(array * scale, 0, 255).round().astype(np.uint8)
  # 16- or 32-bit integers: 16-bit range is scaled down, 8-bit data kept.
  top = int(array.max(initial=0))
  if top <= 255:
    return np.clip(array, 0, 255).astype(np.uint8)
  return np.clip(array.astype(np.float64) / 257.0, 0, 255).round().astype(
      np.uint8)


def read_image(path: str) -> np.ndarray:
  """Reads an image file as uint8 RGB [H, W, 3]; grey is repeated, alpha dropped."""
  img = _open(path)
  if img.mode in ('P', 'PA', 'CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBA', 'RGBX'):
    img = img.convert('RGB')
  elif img.mode in ('LA', '1'):
    img = img.convert('L')
  array = _to_uint8(np.asarray(img))
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
    raise UserInputError(
        f'{path}: unsupported image layout {tuple(array.shape)}')
  if array.shape[-1] in (2, 4):  # Grey + alpha or RGBA from raw arrays.
    array = array[..., :-1]
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  if array.shape[0] < 2 or array.shape[1] < 2:
    raise UserInputError(f'{path}: image is too small ({array.shape[1]}x'
                         f'{array.shape[0]} pixels)')
  return np.ascontiguousarray(array)


def read_mask(path: str) -> np.ndarray:
  """Reads a ground-truth mask as uint8 {0, 1} [H, W].

  Masks are 0/255 in MVTec AD; a mask with no value above half of 255 (0/1, or
  VisA's small region numbers 0, 1, 2, ...) counts every non-zero pixel as
  defect. Otherwise a grey value counts as defect when above half of 255.
  """
  img = _open(path)
  if img.mode not in ('L', '1', 'I', 'I;16', 'I;16B', 'I;16L', 'F'):
    img = img.convert('L')
  array = _to_uint8(np.asarray(img))
  if array.ndim == 3:
    array = array.max(axis=-1)
  threshold = 0 if array.max(initial=0) <= 127 else 127
  return (array > threshold).astype(np.uint8)


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 RGB of an image array; floats in [0, 1] (or 0..255) must be
  finite: a NaN image is refused, not scored as a black one."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.floating):
      if not np.isfinite(image).all():
        raise UserInputError(f'image of shape {image.shape}: NaN or infinite '
                             'values; give finite floats in [0, 1]')
      if image.max(initial=0) <= 1.0:
        image = image * np.float32(255.0)
    image = np.clip(image, 0, 255).round().astype(np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
    raise UserInputError(f'image of shape {image.shape}: expected HxW, HxWx1, '
                         'HxWx3 or HxWx4')
  if image.shape[-1] in (2, 4):
    image = image[..., :-1]
  return np.repeat(image, 3, -1) if image.shape[-1] == 1 else image


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
  """(height, width) of a square side or a (height, width) pair."""
  return (size, size) if isinstance(size, (int, np.integer)) else tuple(size)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """Resizes uint8 [H, W, 3] to [size, size, 3] (or [height, width, 3] for a
  (height, width) pair) with antialiased bilinear."""
  h, w = _shape(size)
  if image.shape[:2] == (h, w):
    return image
  out = Image.fromarray(image).resize((w, h), Image.BILINEAR)
  return np.asarray(out)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """Resizes a {0, 1} mask with nearest neighbour, so no edge pixel is lost."""
  h, w = _shape(size)
  if mask.shape[:2] == (h, w):
    return mask
  out = Image.fromarray(mask * 255).resize((w, h), Image.NEAREST)
  return (np.asarray(out) > 127).astype(np.uint8)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes a float map [H, W] with (antialiased) bilinear, float32."""
  if values.shape == (height, width):
    return values
  return np.asarray(Image.fromarray(values.astype(np.float32), 'F').resize(
      (width, height), Image.BILINEAR))
