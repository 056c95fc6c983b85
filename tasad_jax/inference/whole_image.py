"""Whole-image inference in the 'pad' and 'tile' resize modes.

Each image, at its working resolution (`tiling.Geometry.working_size`), is put
on its canvas and cut into the tiles of its plan (`tasad_jax.core.tiling`); tiles
of consecutive images stream through the jitted two-stage program in batches
of a fixed size (the last one filled with blank tiles), so memory holds one
batch of tiles and the canvases of the images it touches, whatever the image
size. Tile maps are blended into whole-image maps of the image's own size.

Image scores are taken on the whole stitched map with the coarse method's own
`image_score` when it reads the map alone (TASAD, DeSTSeg, AnoSeg, CAVGA with
`score='map'`); a method whose score needs more than the map (CAVGA's
reconstruction error) gets the highest score of its tiles (in 'pad', its
score of the padded square). With `config.model.fine_score='coarse'` the
two-stage score is taken on the stitched coarse map.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from tasad_jax.inference import two_stage as inference
from tasad_jax.core import tiling
from tasad_jax.data import imageio


class ImageRunner:
  """Maps and scores of whole images of any size, padded or tiled.

  Args:
    tile_fn: float32 tiles [B, S, S, 3] in [0, 1] -> numpy {'<m>_map':
      [B, S, S], '<m>_score': [B]} for m in names.OUTPUTS (those it has).
    score_fn: a whole map [H, W] -> its image score, or None to score an
      image by the highest score of its tiles.
    geometry: the resize mode ('pad' or 'tile') and its settings.
    batch_size: tiles per call of `tile_fn`.
    score_maps: {'<m>_score': map key} where a score is taken from another
      whole map than '<m>_map' (`config.model.fine_score='coarse'`).
  """

  def __init__(self, tile_fn: Callable[[np.ndarray], dict],
               score_fn: Callable[[np.ndarray], float] | None,
               geometry: tiling.Geometry, batch_size: int,
               score_maps: dict[str, str] | None = None):
    if geometry.mode not in ('pad', 'tile'):
      raise ValueError(f'ImageRunner is for pad and tile, not {geometry.mode!r}')
    self.tile_fn, self.score_fn = tile_fn, score_fn
    self.geometry, self.batch_size = geometry, int(batch_size)
    # '<m>_score' -> the whole map it is taken from, when not '<m>_map'.
    self.score_maps = dict(score_maps or {})

  @classmethod
  def of(cls, runner: inference.TwoStage, geometry: tiling.Geometry,
         batch_size: int) -> 'ImageRunner':
    """The runner of trained stages (`inference.TwoStage`)."""
    coarse = runner.coarse
    score_fn = None
    if coarse.scores_from_map():
      score = jax.jit(lambda m: coarse.image_score(m, {}))
      score_fn = lambda m: float(score(m[None, :, :, None])[0])
    # config.model.fine_score='coarse': the coarse map's score for both.
    score_maps = ({'tasad_score': 'cas_map'}
                  if runner.fine.score_source == 'coarse' else None)
    return cls(lambda x: runner.run(x, batch_size), score_fn, geometry,
               batch_size, score_maps)

  def _tiles(self, images: Iterable[np.ndarray]):
    """(image index, plan, tile index, tile [S, S, 3] float32) in order."""
    for i, image in enumerate(images):
      plan = self.geometry.plan(*image.shape[:2])
      board = tiling.canvas(np.asarray(image), plan)
      for t, (y, x) in enumerate(plan.tiles):
        tile = board[y:y + plan.size, x:x + plan.size]
        yield i, plan, t, (tile / np.float32(255.0) if tile.dtype == np.uint8
                           else tile)

  def iterate(self, images: Iterable[np.ndarray]
              ) -> Iterator[tuple[int, dict[str, np.ndarray | float]]]:
    """(index, {'<m>_map': [H, W] float32, '<m>_score': float}) of each image
    [H, W, 3] (uint8, or float in [0, 1]) at its working resolution, in order."""
    s = self.geometry.size
    batch = np.zeros((self.batch_size, s, s, 3), np.float32)
    pending: list[tuple[int, int]] = []
    open_: dict[int, tuple[tiling.Stitcher, dict[str, list]]] = {}

    def flush():
      out = self.tile_fn(batch)
      for j, (i, t) in enumerate(pending):
        stitcher, scores = open_[i]
        stitcher.add(t, {k: out[k][j] for k in out if k.endswith('_map')})
        for k in out:
          if k.endswith('_score'):
            scores.setdefault(k, []).append(float(out[k][j]))
      pending.clear()
      batch[:] = 0
      while open_ and open_[min(open_)][0].done:
        i = min(open_)
        yield i, self._finish(*open_.pop(i))

    for i, plan, t, tile in self._tiles(images):
      if i not in open_:
        open_[i] = (tiling.Stitcher(plan, self.geometry.blend), {})
      batch[len(pending)] = tile
      pending.append((i, t))
      if len(pending) == self.batch_size:
        yield from flush()
    if pending:
      yield from flush()

  def _finish(self, stitcher: tiling.Stitcher, tile_scores: dict
              ) -> dict[str, np.ndarray | float]:
    maps = stitcher.result()
    out: dict[str, np.ndarray | float] = dict(maps)
    for key, values in tile_scores.items():
      whole = maps[self.score_maps.get(key, key[:-len('_score')] + '_map')]
      out[key] = (self.score_fn(whole) if self.score_fn is not None
                  else max(values))
    return out

  def run(self, images: Sequence[np.ndarray],
          sizes: Sequence[tuple[int, int]] | None = None
          ) -> dict[str, np.ndarray]:
    """Maps and scores of images at their working resolution.

    Args:
      images: [H_i, W_i, 3] each, uint8 or float in [0, 1].
      sizes: the (height, width) each image's maps are resized to (default:
        `geometry.eval_size` of its size).

    Returns:
      {'<m>_map': object array of [h_i, w_i] float32, '<m>_score': [N]}.
    """
    maps: dict[str, list] = {}
    scores: dict[str, list] = {}
    for i, out in self.iterate(images):
      h, w = (sizes[i] if sizes is not None
              else self.geometry.eval_size(*images[i].shape[:2]))
      for k, v in out.items():
        if k.endswith('_map'):
          maps.setdefault(k, []).append(imageio.resize_map(v, h, w))
        else:
          scores.setdefault(k, []).append(v)
    result = {k: tiling.ragged(v) for k, v in maps.items()}
    result.update({k: np.asarray(v, np.float32) for k, v in scores.items()})
    return result


def to_working(images: Sequence[np.ndarray], geometry: tiling.Geometry
               ) -> list[np.ndarray]:
  """uint8 RGB images [H, W, 3] resized to their working resolution."""
  return [imageio.resize_image(x, geometry.working_size(*x.shape[:2]))
          for x in images]


def run_images(runner: inference.TwoStage, geometry: tiling.Geometry,
               images, batch_size: int, sizes=None) -> dict[str, np.ndarray]:
  """Maps and scores of images loaded for `geometry` (`splits.load_split`):
  squash, arrays [N, S, S, 3] through `runner` as they are; pad and tile,
  working-resolution images through an `ImageRunner`, maps at `sizes`."""
  if geometry.mode == 'squash':
    return runner.run(images, batch_size)
  return ImageRunner.of(runner, geometry, batch_size).run(images, sizes)
