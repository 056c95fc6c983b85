"""The one whole-image path: how an image of any size becomes maps and scores.

Evaluation, thresholds and the predictor (`run_images`) go through here, and
the exporter through its serialisable twin (`tasad_jax.inference.programs`),
so the resize modes and the scores are decided once:

* 'squash': images resized to S x S run through the two-stage program as
  they are.
* 'pad' and 'tile': each image, at its working resolution
  (`tiling.Geometry.working_size`), runs through each network once on a
  canvas (`tiling.Geometry.whole`: the 'pad' square, or a 'tile' image's
  shape bucket up to `config.data.whole_image_pixels`, when the coarse
  method's maps do not depend on the input's extent), the scores and the
  fine stage's input seeing only the image's box (`two_stage.in_boxes`).
  Larger 'tile' images are cut into the tiles of their plan
  (`tasad_jax.core.tiling`), whose maps are blended into whole-image maps.
  On the host (`ImageRunner`), canvases of one shape run in batches of a
  fixed size, and tiles of consecutive images stream through the jitted
  program in batches of a fixed size (the last one filled with blank
  tiles), so memory holds one batch and the canvases of the images it
  touches; in an exported program the geometry of one image size is static
  and the tiles run in chunks (`lax.map`).

Image scores of tiled images are taken on the whole stitched map with
the coarse method's own `image_score` when it reads the map alone (TASAD,
DeSTSeg, AnoSeg, CAVGA with `score='map'`); a method whose score needs more
than the map (CAVGA's reconstruction error) gets the highest score of its
tiles. Which map each output's score reads is `score_sources`: with
`config.model.fine_score='coarse'` the two-stage score is the coarse map's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from tasad_jax.core import names, scoring, tiling
from tasad_jax.data import imageio
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
    canvas_fn: canvases [B, H, W, 3] (uint8) and boxes [B, 4] -> like
      `tile_fn`, maps of the canvases and scores of the boxes; images that
      `geometry.whole` puts on a canvas go through it, the others by tiles.
      None: every image by tiles.
    multiple: what the canvas sides of `canvas_fn` must be a multiple of.
    row_multiple: canvases per call of `canvas_fn` (one per device): a
      canvas is large enough to keep a device busy, and images of many
      sizes rarely fill a larger batch of one size (its blank rows would
      cost as much as images).
  """

  def __init__(self, tile_fn: Callable[[np.ndarray], dict],
               score_fn: Callable[[np.ndarray], float] | None,
               geometry: tiling.Geometry, batch_size: int,
               score_maps: dict[str, str] | None = None,
               outputs: Sequence[str] | None = None,
               canvas_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None,
               multiple: int = 1, row_multiple: int = 1):
    if geometry.mode not in ('pad', 'tile'):
      raise ValueError(f'ImageRunner is for pad and tile, not {geometry.mode!r}')
    self.tile_fn, self.score_fn = tile_fn, score_fn
    self.geometry, self.batch_size = geometry, int(batch_size)
    # '<m>_score' -> the whole map it is taken from, when not '<m>_map'.
    self.score_maps = dict(score_maps or {})
    self.outputs = None if outputs is None else tuple(outputs)
    self.canvas_fn, self.multiple = canvas_fn, int(multiple)
    self.row_multiple = int(row_multiple)

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
    """The runner of trained stages (`two_stage.TwoStage`): whole images
    where `geometry.whole` and the coarse method allow (`canvas_geometry`)."""
    score_fn = None
    reduction = runner.coarse.score_reduction()
    if reduction is not None:  # By bands: a line-scan map is hundreds of MB.
      score_fn = functools.partial(scoring.banded, reduction)
    elif runner.coarse.scores_from_map():
      score = jax.jit(functools.partial(map_scores, runner.coarse))
      score_fn = lambda m: float(score(m[None])[0])
    return cls(lambda x: runner.run(x, batch_size), score_fn,
               canvas_geometry(geometry, runner.coarse), batch_size,
               score_sources(runner.fine), outputs, runner.run_canvases,
               runner.input_multiple, runner.mesh.devices.size)

  def _canvas(self, image: np.ndarray):
    """(canvas shape, box) of an image run whole, or None for tiles."""
    if self.canvas_fn is None:
      return None
    return self.geometry.whole(*image.shape[:2], self.multiple)


  def iterate(self, images: Iterable[np.ndarray]
              ) -> Iterator[tuple[int, dict[str, np.ndarray | float]]]:
    """(index, {'<m>_map': [H, W] float32, '<m>_score': float}) of each image
    [H, W, 3] (uint8, or float in [0, 1]) at its working resolution, in order."""
    done: dict[int, dict] = {}
    following = 0
    for i, result in self._results(images):
      done[i] = result
      while following in done:
        yield following, done.pop(following)
        following += 1

  def _results(self, images: Iterable[np.ndarray]):
    """(index, result) of each image, as they finish: canvases grouped by
    shape (a batch runs when full, or when those waiting hold 8 batches'
    pixels, or before an image by tiles), tiles streamed in batches."""
    waiting: dict[tuple[int, int], list] = {}
    tiles = _TileStream(self)
    for i, image in enumerate(images):
      whole = self._canvas(image)
      if whole is None:
        for shape in list(waiting):
          yield from self._run_canvases(shape, waiting.pop(shape))
        yield from tiles.add(i, image)
        continue
      shape, box = whole
      waiting.setdefault(shape, []).append((i, image, box))
      if len(waiting[shape]) == self.row_multiple:
        yield from self._run_canvases(shape, waiting.pop(shape))
      elif sum(len(v) * k[0] * k[1] for k, v in waiting.items()) > (
          8 * self.batch_size * self.geometry.size ** 2):
        for shape in list(waiting):
          yield from self._run_canvases(shape, waiting.pop(shape))
    yield from tiles.flush()
    for shape in list(waiting):
      yield from self._run_canvases(shape, waiting.pop(shape))

  def _run_canvases(self, shape: tuple[int, int], items: list):
    """Runs images (index, image, box) on canvases of `shape`, in a batch of
    the shape's fixed size (blank rows fill it: one program per shape)."""
    rows = self.row_multiple
    batch = np.zeros((rows,) + shape + (3,), np.float32)
    boxes = np.zeros((rows, 4), np.int32)
    for j, (_, image, box) in enumerate(items):
      batch[j] = tiling.pad_to(image, shape, box[0], box[1])
      if image.dtype == np.uint8:
        batch[j] /= 255.0
      boxes[j] = box
    out = self.canvas_fn(batch, boxes)
    maps, scores = self._kept(out)
    for j, (i, _, (top, left, h, w)) in enumerate(items):
      result = {k: float(out[k][j]) for k in scores}
      result.update({k: np.ascontiguousarray(
          out[k][j, top:top + h, left:left + w]) for k in maps
                     if self.outputs is None
                     or k[:-len('_map')] in self.outputs})
      yield i, result

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


class _TileStream:
  """Tiles of consecutive images streamed through `tile_fn` in batches of a
  fixed size (the last one filled with blank tiles), stitched per image."""

  def __init__(self, runner: ImageRunner):
    self.runner = runner
    s = runner.geometry.size
    self.batch = np.zeros((runner.batch_size, s, s, 3), np.float32)
    self.pending: list[tuple[int, int]] = []
    self.open: dict[int, tuple[tiling.Stitcher, dict[str, list]]] = {}

  def add(self, i: int, image: np.ndarray):
    """Queues image `i`'s tiles; yields (index, result) of finished images."""
    r = self.runner
    plan = r.geometry.plan(*image.shape[:2])
    board = tiling.canvas(np.asarray(image), plan)
    self.open[i] = (tiling.Stitcher(plan, r.geometry.blend), {})
    for t, (y, x) in enumerate(plan.tiles):
      tile = board[y:y + plan.size, x:x + plan.size]
      self.batch[len(self.pending)] = (tile / np.float32(255.0)
                                       if tile.dtype == np.uint8 else tile)
      self.pending.append((i, t))
      if len(self.pending) == r.batch_size:
        yield from self.flush()

  def flush(self):
    """Runs the queued tiles; yields (index, result) of finished images."""
    if not self.pending:
      return
    r = self.runner
    out = r.tile_fn(self.batch)
    map_keys, score_keys = r._kept(out)  # pylint: disable=protected-access
    for j, (i, t) in enumerate(self.pending):
      stitcher, scores = self.open[i]
      stitcher.add(t, {k: out[k][j] for k in map_keys})
      for k in score_keys:
        scores.setdefault(k, []).append(float(out[k][j]))
    self.pending.clear()
    self.batch[:] = 0
    for i in [i for i, (st, _) in self.open.items() if st.done]:
      yield i, r._finish(*self.open.pop(i))  # pylint: disable=protected-access


def canvas_geometry(geometry: tiling.Geometry, coarse) -> tiling.Geometry:
  """`geometry`, with whole-image 'tile' inference off for a coarse method
  whose maps depend on the input's extent (`CoarseMethod.whole_image`)."""
  if geometry.mode == 'tile' and not coarse.whole_image():
    return dataclasses.replace(geometry, whole_pixels=0)
  return geometry


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
