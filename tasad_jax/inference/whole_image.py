"""The one whole-image path: how an image of any size becomes maps and scores.

Evaluation, thresholds, the predictor (`run_images`) and the exporter
(`program`) all go through here, so the resize modes and the scores are
decided once:

* 'squash': images resized to S x S run through the two-stage program as
  they are.
* 'pad' and 'tile': each image, at its working resolution
  (`tiling.Geometry.working_size`), is put on its canvas and cut into the
  tiles of its plan (`tasad_jax.core.tiling`); the tile maps are blended into
  whole-image maps of the image's own size. On the host (`ImageRunner`),
  tiles of consecutive images stream through the jitted program in batches of
  a fixed size (the last one filled with blank tiles), so memory holds one
  batch of tiles and the canvases of the images it touches; in an exported
  program the geometry of one image size is static and the tiles run in
  chunks (`lax.map`).

Image scores of pad and tile images are taken on the whole stitched map with
the coarse method's own `image_score` when it reads the map alone (TASAD,
DeSTSeg, AnoSeg, CAVGA with `score='map'`); a method whose score needs more
than the map (CAVGA's reconstruction error) gets the highest score of its
tiles. Which map each output's score reads is `score_sources`: with
`config.model.fine_score='coarse'` the two-stage score is the coarse map's.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tasad_jax.core import names, tiling
from tasad_jax.data import imageio
from tasad_jax.fine import fas
from tasad_jax.inference import two_stage


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
      whole map than '<m>_map' (`score_sources`).
    outputs: the outputs m to return (default: all that `tile_fn` gives);
      only their maps and those their scores read are stitched, one
      float32 canvas each: a predictor needs one output of a large image.
  """

  def __init__(self, tile_fn: Callable[[np.ndarray], dict],
               score_fn: Callable[[np.ndarray], float] | None,
               geometry: tiling.Geometry, batch_size: int,
               score_maps: dict[str, str] | None = None,
               outputs: Sequence[str] | None = None):
    if geometry.mode not in ('pad', 'tile'):
      raise ValueError(f'ImageRunner is for pad and tile, not {geometry.mode!r}')
    self.tile_fn, self.score_fn = tile_fn, score_fn
    self.geometry, self.batch_size = geometry, int(batch_size)
    # '<m>_score' -> the whole map it is taken from, when not '<m>_map'.
    self.score_maps = dict(score_maps or {})
    self.outputs = None if outputs is None else tuple(outputs)

  def _kept(self, out: dict) -> tuple[list[str], list[str]]:
    """(map keys to stitch, score keys to keep) of a `tile_fn` result."""
    scores = [k for k in out if k.endswith('_score') and (
        self.outputs is None or k[:-len('_score')] in self.outputs)]
    maps = {k[:-len('_score')] + '_map' for k in scores}
    maps |= {self.score_maps.get(k, k[:-len('_score')] + '_map') for k in scores}
    return sorted(maps), scores

  @classmethod
  def of(cls, runner: two_stage.TwoStage, geometry: tiling.Geometry,
         batch_size: int, outputs: Sequence[str] | None = None
         ) -> 'ImageRunner':
    """The runner of trained stages (`two_stage.TwoStage`)."""
    score_fn = None
    if runner.coarse.scores_from_map():
      score = jax.jit(functools.partial(map_scores, runner.coarse))
      score_fn = lambda m: float(score(m[None])[0])
    return cls(lambda x: runner.run(x, batch_size), score_fn, geometry,
               batch_size, score_sources(runner.fine), outputs)

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
      map_keys, score_keys = self._kept(out)
      for j, (i, t) in enumerate(pending):
        stitcher, scores = open_[i]
        stitcher.add(t, {k: out[k][j] for k in map_keys})
        for k in score_keys:
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
    out: dict[str, np.ndarray | float] = {}
    for key, values in tile_scores.items():
      own = key[:-len('_score')] + '_map'
      whole = maps[self.score_maps.get(key, own)]
      out[key] = (self.score_fn(whole) if self.score_fn is not None
                  else max(values))
      out[own] = maps[own]
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


def score_sources(fine_stage) -> dict[str, str]:
  """{'<output>_score': the whole map it is taken from}: its own map, but the
  coarse map for the two-stage score with `config.model.fine_score='coarse'`."""
  two_stage_map = (names.COARSE if fine_stage.score_source == 'coarse'
                   else names.TWO_STAGE)
  return {f'{names.COARSE}_score': f'{names.COARSE}_map',
          f'{names.TWO_STAGE}_score': f'{two_stage_map}_map'}


def map_scores(coarse, maps: jax.Array) -> jax.Array:
  """The coarse method's image scores [B] of whole maps [B, H, W], jit-able
  (methods whose `scores_from_map()`)."""
  return coarse.image_score(maps[..., None], {})


def to_working(images: Sequence[np.ndarray], geometry: tiling.Geometry
               ) -> list[np.ndarray]:
  """uint8 RGB images [H, W, 3] resized to their working resolution."""
  return [imageio.resize_image(x, geometry.working_size(*x.shape[:2]))
          for x in images]


def square_program(runner: two_stage.TwoStage) -> Callable:
  """images [B, S, S, 3] -> {'<output>_map': [B, S, S], '<output>_score': [B]}
  of every output, with the trained variables fixed: the program that
  `export` serialises. The FAS input is always made on device here (the host
  path cannot be serialised); with the same superpixels it equals the host
  one."""
  if runner.fas is None:
    def outputs(images):
      return two_stage.coarse_only(runner.coarse, runner.cas, images)
  else:
    fine_input = fas.FineInput(runner.coarse, runner.refine_params, True)

    def outputs(images):
      return two_stage.two_stage(runner.fine, fine_input, runner.cas,
                                 runner.fas, images)

  def run(images):
    return {k: v[..., 0] if k.endswith('_map') else v
            for k, v in outputs(images).items() if k != 'fas_input'}
  return run


def program(runner: two_stage.TwoStage, geometry: tiling.Geometry,
            height: int, width: int, chunk: int) -> Callable:
  """images [B, H, W, 3] in [0, 1] -> (maps [B, H, W], scores [B]) of the
  final output, jit-able and serialisable, for one image size.

  'squash' takes S x S images. 'pad' and 'tile' resize to the working size
  with `jax.image.resize` (antialiased linear: close to, not bit-equal with,
  the predictor's PIL resize; no resize when the working size is H x W, as
  for 'tile' at scale 1), pad the canvas with its edge pixels, run the plan's
  tiles `chunk` at a time per image, blend them with the window of
  `ImageRunner` and score as it does.
  """
  square = square_program(runner)
  final = runner.method
  if geometry.mode == 'squash':
    def run_square(images):
      out = square(images)
      return out[f'{final}_map'], out[f'{final}_score']
    return run_square
  wh, ww = geometry.working_size(height, width)
  plan = geometry.plan(wh, ww)
  s, count = plan.size, len(plan.tiles)
  chunk = max(1, min(chunk, count))
  n = -(-count // chunk)
  window = jnp.asarray(tiling.window(s, geometry.blend))
  norm = jnp.asarray(tiling.weights(plan, geometry.blend))
  source = score_sources(runner.fine)[f'{final}_score']

  def run(images):
    b = images.shape[0]
    if (wh, ww) != (height, width):
      images = jax.image.resize(images, (b, wh, ww, 3), 'linear', antialias=True)
    board = jnp.pad(images, ((0, 0), (plan.top, plan.canvas[0] - wh - plan.top),
                             (plan.left, plan.canvas[1] - ww - plan.left),
                             (0, 0)), mode='edge')
    tiles = jnp.stack([board[:, y:y + s, x:x + s] for y, x in plan.tiles], 1)
    tiles = jnp.pad(tiles, ((0, 0), (0, n * chunk - count)) + ((0, 0),) * 3)
    chunks = jnp.swapaxes(tiles.reshape(b, n, chunk, s, s, 3), 0, 1)
    out = jax.lax.map(lambda x: square(x.reshape(b * chunk, s, s, 3)), chunks)
    # Per image and tile [B, T, ...], in the plan's order.
    out = {k: jnp.swapaxes(v.reshape((n, b, chunk) + v.shape[2:]), 0, 1)
           .reshape((b, n * chunk) + v.shape[2:])[:, :count]
           for k, v in out.items()}
    whole = {}
    for key in {f'{final}_map', source}:
      total = jnp.zeros((b,) + plan.canvas, jnp.float32)
      for t, (y, x) in enumerate(plan.tiles):
        total = total.at[:, y:y + s, x:x + s].add(out[key][:, t] * window)
      whole[key] = (total / norm)[:, plan.top:plan.top + wh,
                                  plan.left:plan.left + ww]
    score = (map_scores(runner.coarse, whole[source])
             if runner.coarse.scores_from_map()
             else out[f'{final}_score'].max(axis=1))
    maps = whole[f'{final}_map']
    if (wh, ww) != (height, width):
      maps = jax.image.resize(maps, (b, height, width), 'linear',
                              antialias=True)
    return maps, score
  return run


def run_images(runner: two_stage.TwoStage, geometry: tiling.Geometry,
               images, batch_size: int, sizes=None,
               outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Maps and scores of images loaded for `geometry` (`splits.load_split`):
  squash, arrays [N, S, S, 3] through `runner` as they are; pad and tile,
  working-resolution images through an `ImageRunner`, maps at `sizes`, of
  `outputs` only when given."""
  if geometry.mode == 'squash':
    return runner.run(images, batch_size)
  return ImageRunner.of(runner, geometry, batch_size, outputs).run(images,
                                                                   sizes)
