"""Heat-map figures: input, ground truth, and anomaly maps over the input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

# A perceptually ordered dark-blue -> red colour map (jet-like), as RGB anchors.
_ANCHORS = np.array([[0, 0, 96], [0, 64, 255], [0, 224, 255], [96, 255, 96],
                     [255, 224, 0], [255, 64, 0], [160, 0, 0]], np.float64)


def colorize(values: np.ndarray) -> np.ndarray:
  """Maps values in [0, 1] [H, W] to uint8 RGB [H, W, 3]."""
  pos = np.clip(values, 0, 1) * (len(_ANCHORS) - 1)
  lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
  t = (pos - lo)[..., None]
  return ((1 - t) * _ANCHORS[lo] + t * _ANCHORS[lo + 1]).round().astype(np.uint8)


ROWS = 64  # Rows blended at a time: a band of a 20000-pixel-wide image ~ 30 MB.


def overlay_bands(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5,
                  scale: float = 1.0):
  """The colourised `heat * scale` ([H, W], clipped to [0, 1]) blended over
  an image [H, W, 3] (uint8, or float in [0, 1]): uint8 RGB bands of `ROWS`
  rows, so an image of any size needs no full-size float copy."""
  if image.dtype != np.uint8:
    image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
  for y in range(0, image.shape[0], ROWS):
    base = image[y:y + ROWS].astype(np.float32)
    colour = colorize(heat[y:y + ROWS] * scale)
    yield ((1 - alpha) * base + alpha * colour).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            scale: float = 1.0) -> np.ndarray:
  """`overlay_bands` as one uint8 RGB image [H, W, 3]."""
  return np.concatenate(list(overlay_bands(image, heat, alpha, scale)))


def write_png(path: str, height: int, width: int, channels: int,
              bands) -> None:
  """Writes an 8-bit PNG (grey or RGB) from `bands`, uint8 arrays of rows
  [r, width(, 3)] in order, compressing as they come: memory holds one band,
  not the image (PIL copies a whole RGB image to 4 bytes a pixel first)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  colour = {1: 0, 3: 2}[channels]
  compressor = zlib.compressobj(6)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
        '>IIBBBBB', width, height, 8, colour, 0, 0, 0)))
    for band in bands:
      rows = np.ascontiguousarray(band, np.uint8).reshape(len(band), -1)
      data = np.concatenate([np.zeros((len(rows), 1), np.uint8), rows], 1)
      f.write(chunk(b'IDAT', compressor.compress(data.tobytes())))
    f.write(chunk(b'IDAT', compressor.flush()) + chunk(b'IEND', b''))


def figure(image, mask, maps: dict[str, np.ndarray], ranges: dict[str, tuple],
           title: str, labels: dict[str, str] | None = None) -> np.ndarray:
  """One row of panels: input, ground truth, and each map over the input.

  Args:
    image: [H, W, 3] in [0, 1].
    mask: [H, W] in {0, 1}.
    maps: name -> [H, W] anomaly map.
    ranges: name -> (low, high) used to scale that map to [0, 1], the same for
      every image of the test set so that figures are comparable.
    title: text written above the row.
    labels: name -> panel caption (default: the name).

  Returns:
    uint8 RGB image.
  """
  rgb = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
  gt = rgb.copy()
  gt[mask > 0] = (0.5 * gt[mask > 0] + [127, 0, 0]).astype(np.uint8)
  panels = [('input', rgb), ('ground truth', gt)]
  for name, values in maps.items():
    lo, hi = ranges[name]
    panels.append(((labels or {}).get(name, name), overlay(image, (values - lo) / max(hi - lo, 1e-8))))
  h, w = rgb.shape[:2]
  header = 14
  canvas = Image.new('RGB', (len(panels) * (w + 4), h + 2 * header), 'white')
  draw = ImageDraw.Draw(canvas)
  draw.text((2, 0), title, fill='black')
  for i, (name, panel) in enumerate(panels):
    canvas.paste(Image.fromarray(panel), (i * (w + 4), 2 * header))
    draw.text((i * (w + 4) + 2, header), name, fill='black')
  return np.asarray(canvas)
