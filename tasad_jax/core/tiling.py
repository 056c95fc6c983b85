"""Geometry of the resize modes: fitting, padding, tiles, blending, stitching.

`config.data.resize` says how an image of any size meets the network's square
input of `config.data.image_size` (S):

* 'squash': resized to S x S (the paper's; the aspect ratio is lost).
* 'pad': resized so that its long side is S (aspect ratio kept) and placed in
  the middle of an S x S canvas whose border repeats the image's edge pixels;
  maps are cropped back to the image.
* 'tile': rescaled by `config.data.scale` (1.0 = native pixels: the *working
  resolution*) and covered by S x S tiles `config.data.tile_stride` apart, the
  last tile of each row and column flush with the image's edge (an image
  smaller than S is first padded at its bottom and right, repeating its edge).
  Overlapping tile maps are blended with a window (`config.data.tile_blend`:
  'hann', a squared sine that falls towards the tile's border, where a
  network's zero padding makes its maps least reliable, floored at 1e-3; or
  'mean', uniform weights) and divided by the summed weights, so a constant map
  stays constant.

At inference a 'tile' image of up to `config.data.whole_image_pixels` runs
through each network once instead (`whole`): on a canvas whose sides are
rounded up to a multiple of `config.data.bucket` (its *shape bucket*), its
edge pixels repeated at the bottom and right, so that images of many sizes
share a few compiled programs. A 'pad' image is one S x S canvas either way.

'pad' is one case of the same plan as 'tile': a canvas, the image at an offset
on it, the tiles that cover the canvas. Pixel metrics use the stitched maps at
the working resolution, the long side capped at `config.eval.max_side` (0: no
cap). NumPy and PIL only: no TensorFlow, no JAX.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tasad_jax.runtime.errors import UserInputError

MODES = ('squash', 'pad', 'tile')
BLENDS = ('hann', 'mean')
WINDOW_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class Plan:
  """An image of `height` x `width` working pixels on its canvas.

  Attributes:
    height, width: the image's size.
    canvas: (height, width) of the padded canvas the tiles cover.
    top, left: the image's offset on the canvas.
    tiles: (y, x) of each tile's top-left corner on the canvas.
    size: the tile side S.
  """
  height: int
  width: int
  canvas: tuple[int, int]
  top: int
  left: int
  tiles: tuple[tuple[int, int], ...]
  size: int


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The resize mode and its settings (`config.data`, `config.eval.max_side`)."""
  mode: str = 'squash'
  size: int = 256
  scale: float = 1.0
  stride: int = 0  # 0: size // 2.
  blend: str = 'hann'
  max_side: int = 0
  whole_pixels: int = 0  # 'tile': largest canvas inferred whole (0: tiles).
  bucket: int = 64  # Whole-image canvas sides: multiples of this.

  @classmethod
  def from_config(cls, config) -> 'Geometry':
    """The geometry of a config."""
    d = config.data
    return cls(mode=d.resize, size=int(d.image_size), scale=float(d.scale),
               stride=int(d.tile_stride), blend=d.tile_blend,
               max_side=int(config.eval.max_side),
               whole_pixels=int(d.whole_image_pixels), bucket=int(d.bucket))

  def check(self) -> None:
    """Raises UserInputError naming the config field that is wrong."""
    if self.mode not in MODES:
      raise UserInputError(f'config.data.resize: {self.mode!r}; use one of '
                           f'{MODES}')
    if not (math.isfinite(self.scale) and self.scale > 0):
      raise UserInputError(f'config.data.scale: {self.scale} must be > 0')
    if not 0 <= self.stride <= self.size:
      raise UserInputError(f'config.data.tile_stride: {self.stride} must be in '
                           f'1..image_size ({self.size}), or 0 for half a tile')
    if self.blend not in BLENDS:
      raise UserInputError(f'config.data.tile_blend: {self.blend!r}; use one of '
                           f'{BLENDS}')
    if self.max_side < 0:
      raise UserInputError(f'config.eval.max_side: {self.max_side} must be >= 0'
                           ' (0 = no cap)')
    if self.whole_pixels < 0:
      raise UserInputError(f'config.data.whole_image_pixels: '
                           f'{self.whole_pixels} must be >= 0 (0 = tiles)')
    if self.bucket < 1:
      raise UserInputError(f'config.data.bucket: {self.bucket} must be >= 1')

  @property
  def tile_stride(self) -> int:
    return self.stride or max(1, self.size // 2)

  def working_size(self, height: int, width: int) -> tuple[int, int]:
    """The size an image of `height` x `width` pixels is resized to."""
    if self.mode == 'squash':
      return self.size, self.size
    factor = (self.size / max(height, width) if self.mode == 'pad'
              else self.scale)
    return (max(1, int(round(height * factor))),
            max(1, int(round(width * factor))))

  def eval_size(self, height: int, width: int) -> tuple[int, int]:
    """The size of the maps scored by pixel metrics for a working size."""
    if self.max_side <= 0 or max(height, width) <= self.max_side:
      return height, width
    factor = self.max_side / max(height, width)
    return (max(1, int(round(height * factor))),
            max(1, int(round(width * factor))))

  def whole(self, height: int, width: int, multiple: int
            ) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
    """(canvas (H, W), box (top, left, height, width)) of an image of this
    working size run whole through networks whose sides must be multiples
    of `multiple`, or None to run it by tiles. 'pad': the S x S canvas and
    the image's place on it; 'tile': the shape bucket, at least S x S, if it
    has at most `whole_pixels` pixels."""
    if self.mode == 'pad':
      p = self.plan(height, width)
      return p.canvas, (p.top, p.left, height, width)
    if self.mode != 'tile' or not self.whole_pixels:
      return None
    step = math.lcm(self.bucket, multiple)
    canvas = tuple(max(self.size, -(-side // step) * step)
                   for side in (height, width))
    if canvas[0] * canvas[1] > self.whole_pixels:
      return None
    return canvas, (0, 0, height, width)

  def plan(self, height: int, width: int) -> Plan:
    """The canvas and tiles of an image of this working size ('pad', 'tile')."""
    s = self.size
    if self.mode == 'pad':
      if max(height, width) != s:
        raise ValueError(f'pad: {height}x{width} is not fitted to {s} '
                         '(working_size)')
      return Plan(height, width, (s, s), (s - height) // 2, (s - width) // 2,
                  ((0, 0),), s)
    canvas = (max(height, s), max(width, s))
    ys = tile_starts(canvas[0], s, self.tile_stride)
    xs = tile_starts(canvas[1], s, self.tile_stride)
    return Plan(height, width, canvas, 0, 0,
                tuple((y, x) for y in ys for x in xs), s)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
  """Tile offsets covering [0, length) (length >= tile): every `stride`
  pixels, the last tile flush with the end."""
  starts = list(range(0, length - tile + 1, stride))
  if starts[-1] + tile < length:
    starts.append(length - tile)
  return starts


def window_line(size: int, blend: str) -> np.ndarray:
  """One axis of the blending window [size], float64, all > 0."""
  if blend == 'mean':
    return np.ones(size)
  t = (np.arange(size) + 0.5) / size
  return np.maximum(np.sin(np.pi * t) ** 2, WINDOW_FLOOR)


def window(size: int, blend: str) -> np.ndarray:
  """Blending weights [size, size] float32, all > 0."""
  line = window_line(size, blend)
  return np.outer(line, line).astype(np.float32)


def weight_lines(plan: Plan, blend: str) -> tuple[np.ndarray, np.ndarray]:
  """(rows [canvas height], columns [canvas width]) whose outer product is
  the summed window of every tile: the tiles are every pair of a row offset
  and a column offset, and the window is the outer product of its lines, so
  the sum factorises (no canvas-sized array of weights is needed)."""
  line = window_line(plan.size, blend)
  sums = []
  for length, starts in zip(plan.canvas, zip(*plan.tiles)):
    total = np.zeros(length)
    for start in sorted(set(starts)):
      total[start:start + plan.size] += line
    sums.append(total)
  return sums[0], sums[1]


def weights(plan: Plan, blend: str) -> np.ndarray:
  """The summed window of every tile over the canvas, float32."""
  rows, cols = weight_lines(plan, blend)
  return np.outer(rows, cols).astype(np.float32)


def canvas(image: np.ndarray, plan: Plan) -> np.ndarray:
  """The image [H, W, C] on its canvas, the border repeating its edge pixels."""
  return pad_to(image, plan.canvas, plan.top, plan.left)


def pad_to(image: np.ndarray, shape: tuple[int, int], top: int = 0,
           left: int = 0) -> np.ndarray:
  """The image [h, w, ...] at (top, left) of a canvas of `shape`, the border
  repeating its edge pixels."""
  h, w = image.shape[:2]
  pad = ((top, shape[0] - h - top),
         (left, shape[1] - w - left)) + ((0, 0),) * (image.ndim - 2)
  return np.pad(image, pad, mode='edge') if any(sum(p) for p in pad) else image


def crop(values: np.ndarray, plan: Plan) -> np.ndarray:
  """The image's part [H, W, ...] of a canvas-sized array."""
  return values[plan.top:plan.top + plan.height,
                plan.left:plan.left + plan.width]


class Stitcher:
  """Blends tile maps of several outputs into whole-image maps of one plan.

  Memory: one float32 canvas per output; the weights are two lines
  (`weight_lines`) and the division is done in place."""

  def __init__(self, plan: Plan, blend: str):
    self.plan = plan
    self.window = window(plan.size, blend)
    self.sums: dict[str, np.ndarray] = {}
    self.rows, self.cols = weight_lines(plan, blend)
    self.added = 0

  def add(self, index: int, maps: dict[str, np.ndarray]) -> None:
    """Adds the maps [S, S] of tile `index` (of `plan.tiles`), by name."""
    y, x = self.plan.tiles[index]
    s = self.plan.size
    for name, values in maps.items():
      total = self.sums.setdefault(name, np.zeros(self.plan.canvas, np.float32))
      total[y:y + s, x:x + s] += self.window * values
    self.added += 1

  @property
  def done(self) -> bool:
    return self.added == len(self.plan.tiles)

  def result(self) -> dict[str, np.ndarray]:
    """The blended maps [height, width] of the image, by name (the sums are
    divided in place: call once)."""
    p = self.plan
    rows = self.rows[p.top:p.top + p.height, None].astype(np.float32)
    cols = self.cols[None, p.left:p.left + p.width].astype(np.float32)
    out = {}
    for name, total in self.sums.items():
      image = crop(total, p)
      image /= rows
      image /= cols
      out[name] = image
    self.sums = {}
    return out


def ragged(arrays) -> np.ndarray:
  """A 1-D object array holding arrays of different shapes, one per image."""
  out = np.empty(len(arrays), object)
  for i, a in enumerate(arrays):
    out[i] = a
  return out
