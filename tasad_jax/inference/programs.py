"""Serialisable programs of the whole-image path, for export.

`program` is `whole_image.ImageRunner`'s path as one jit-able function of
one image size: the same canvases, boxes and scores, or the same tiles and
blending, with the trained variables fixed.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tasad_jax.core import tiling
from tasad_jax.fine import fas, slic
from tasad_jax.inference import two_stage
from tasad_jax.inference.whole_image import (canvas_geometry, map_scores,
                                             score_sources)
from tasad_jax.runtime.errors import UserInputError


# program(superpixels=...): what the program does with the fine stage's SLIC
# assignment (`FineInput.superpixels`). 'computed': images -> (maps, scores);
# 'output': images -> (maps, scores, superpixels); 'input': (images,
# superpixels) -> (maps, scores), so that an exported file can be run with the
# superpixels another runtime computed (a parity check).
SUPERPIXELS = ('computed', 'output', 'input')


def square_program(runner: two_stage.TwoStage) -> Callable:
  """(images [B, S, S, 3], superpixels or None) -> ({'<output>_map': [B, S,
  S], '<output>_score': [B]} of every output, the superpixels used or None
  for a coarse-only model), with the trained variables fixed. The FAS input
  is always made on device here (the host path cannot be serialised); with
  the same superpixels it equals the host one. SLIC's iterations are written
  out (`slic.assign`): the same arithmetic, in a form every exporter takes."""
  fine_input = (None if runner.fas is None else
                fas.FineInput(runner.coarse, runner.refine_params, True,
                              unroll=True))

  def run(images, choice=None):
    if fine_input is None:
      outputs = two_stage.coarse_only(runner.coarse, runner.cas, images)
    else:
      if choice is None:
        choice = fine_input.superpixels(images)
      outputs = two_stage.two_stage(runner.fine, fine_input, runner.cas,
                                    runner.fas, images, choice)
    return ({k: v[..., 0] if k.endswith('_map') else v
             for k, v in outputs.items() if k != 'fas_input'}, choice)
  return run


def program(runner: two_stage.TwoStage, geometry: tiling.Geometry,
            height: int, width: int, chunk: int,
            superpixels: str = 'computed') -> Callable:
  """images [B, H, W, 3] in [0, 1] -> (maps [B, H, W], scores [B]) of the
  final output, jit-able and serialisable, for one image size (with the
  superpixels in or out as `superpixels` says: `SUPERPIXELS`).

  'squash' takes S x S images. 'pad' and 'tile' resize to the working size
  with `jax.image.resize` (antialiased linear: close to, not bit-equal with,
  the predictor's PIL resize; no resize when the working size is H x W, as
  for 'tile' at scale 1) and run the image as `ImageRunner` does: on its
  canvas through each network once (`tiling.Geometry.whole`), or as the
  plan's tiles, `chunk` at a time per image, blended with its window.
  """
  if superpixels not in SUPERPIXELS:
    raise ValueError(f'superpixels={superpixels!r}: not one of {SUPERPIXELS}')
  if superpixels != 'computed' and runner.fas is None:
    raise UserInputError('--superpixels_input: the model has no fine stage, '
                         'so no superpixels')
  final = runner.method
  if geometry.mode == 'squash':
    square = square_program(runner)

    def core(images, choice):
      out, choice = square(images, choice)
      return out[f'{final}_map'], out[f'{final}_score'], choice
    resized = False
  else:
    wh, ww = geometry.working_size(height, width)
    whole = canvas_geometry(geometry, runner.coarse).whole(
        wh, ww, runner.input_multiple)
    core = (_canvas_program(runner, *whole) if whole is not None
            else _tile_program(runner, geometry, wh, ww, chunk))
    resized = (wh, ww) != (height, width)
  if resized:
    down = _resize_matrix(height, wh), _resize_matrix(width, ww)
    up = _resize_matrix(wh, height), _resize_matrix(ww, width)

  def run(images, choice=None):
    if resized:
      images = _resize(images, *down)
    maps, score, choice = core(images, choice)
    if resized:
      maps = _resize(maps[..., None], *up)[..., 0]
    return (maps, score, choice) if superpixels == 'output' else (maps, score)
  return run if superpixels == 'input' else lambda images: run(images)


def _resize_matrix(n_in: int, n_out: int) -> jax.Array:
  """[n_out, n_in]: `jax.image.resize`'s antialiased linear resize of one
  axis as a matrix (made by resizing the identity)."""
  eye = jnp.eye(n_in, dtype=jnp.float32)
  return jax.image.resize(eye, (n_out, n_in), 'linear', antialias=True)


def _resize(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, h, w, C] by the matrices of `_resize_matrix`: a
  separable resize whose batch dimension may be symbolic (ONNX)."""
  hi = jax.lax.Precision.HIGHEST
  images = jnp.einsum('yh,bhwc->bywc', rows, images, precision=hi)
  return jnp.einsum('xw,bywc->byxc', cols, images, precision=hi)


def _canvas_program(runner: two_stage.TwoStage, shape: tuple[int, int],
                    box: tuple[int, int, int, int]) -> Callable:
  """(Working-size images, superpixels or None) -> (maps, scores,
  superpixels) through each network once, on the canvas of `shape` at `box`
  (`two_stage.in_boxes`)."""
  top, left, h, w = box
  fine_input = (None if runner.fas is None else
                fas.FineInput(runner.coarse, runner.refine_params, True,
                              unroll=True))
  final = runner.method

  def run(images, choice):
    board = slic.pad_hw(images, ((top, shape[0] - h - top),
                                 (left, shape[1] - w - left)), 'edge')
    boxes = jnp.broadcast_to(jnp.asarray(box, jnp.int32), (images.shape[0], 4))
    if fine_input is not None and choice is None:
      choice = fine_input.superpixels(board)
    out = two_stage.in_boxes(runner.fine, fine_input, runner.cas, runner.fas,
                             board, boxes, choice)
    return (out[f'{final}_map'][:, top:top + h, left:left + w, 0],
            out[f'{final}_score'], choice)
  return run


def _tile_program(runner: two_stage.TwoStage, geometry: tiling.Geometry,
                  wh: int, ww: int, chunk: int) -> Callable:
  """(Working-size images, superpixels or None) -> (maps, scores,
  superpixels [B, tiles, ...] or None) by the plan's tiles (`chunk` at a
  time; the superpixels of the padding tiles of the last chunk included)."""
  square = square_program(runner)
  final = runner.method
  plan = geometry.plan(wh, ww)
  s, count = plan.size, len(plan.tiles)
  chunk = max(1, min(chunk, count))
  n = -(-count // chunk)
  window = jnp.asarray(tiling.window(s, geometry.blend))
  norm = jnp.asarray(tiling.weights(plan, geometry.blend))
  source = score_sources(runner.fine)[f'{final}_score']

  def run(images, choice):
    b = images.shape[0]
    board = slic.pad_hw(images, ((plan.top, plan.canvas[0] - wh - plan.top),
                                 (plan.left, plan.canvas[1] - ww - plan.left)),
                        'edge')
    tiles = jnp.stack([board[:, y:y + s, x:x + s] for y, x in plan.tiles], 1)
    tiles = jnp.pad(tiles, ((0, 0), (0, n * chunk - count)) + ((0, 0),) * 3)
    # [B, n * chunk, ...] <-> [n, B * chunk, ...]: per image, or per chunk.
    to_chunks = lambda v: jnp.swapaxes(
        v.reshape((b, n, chunk) + v.shape[2:]), 0, 1).reshape(
            (n, b * chunk) + v.shape[2:])
    per_image = lambda v: jnp.swapaxes(
        v.reshape((n, b, chunk) + v.shape[2:]), 0, 1).reshape(
            (b, n * chunk) + v.shape[2:])
    if choice is None:
      out, choice = jax.lax.map(square, to_chunks(tiles))
    else:
      out, choice = jax.lax.map(lambda xc: square(*xc),
                                (to_chunks(tiles), to_chunks(choice)))
    choice = None if choice is None else per_image(choice)
    # Per image and tile [B, T, ...], in the plan's order.
    out = {k: per_image(v)[:, :count] for k, v in out.items()}
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
    return whole[f'{final}_map'], score, choice
  return run
