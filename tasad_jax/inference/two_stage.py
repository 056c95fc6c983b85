"""Two-stage inference: coarse map, FAS input, FAS map, anomaly map, score.

The coarse stage is the method of `config.coarse.name` (TASAD's CAS by
default). The anomaly map is coarse output + FAS output (raw); image scores
use the coarse method's score (TASAD: the maximum of the map after a 21x21
mean filter) of that map, or with `config.model.fine_score='coarse'` of the
coarse map alone. With `on_device`, coarse -> FAS input (histogram filter, median,
JAX SLIC, crop) -> FAS -> maps -> scores is one jitted, batch-sharded program;
otherwise the FAS input is made on the host by the reference `tasad_jax.fine.selection`.
The output keys are 'cas_*' for the coarse stage and 'tasad_*' for coarse+FAS
(the keys of metrics.json, whatever the coarse method).

Whole images on padded canvases (`in_boxes`, `TwoStage.canvases`) run each
network once; scores and the FAS input see only each image's box, and the
fine stage runs only for images with a seed in it: the others get the fine
network's map of a blank input, computed once per canvas size, the values
running it would give.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np

from tasad_jax.core import names
from tasad_jax.runtime import checkpointing, distributed
from tasad_jax.fine import fas, selection
from tasad_jax import methods
from tasad_jax.core import sharding, stage


def coarse_only(coarse: methods.CoarseMethod, variables, images
                ) -> dict[str, jax.Array]:
  """The coarse stage's map and score of images [N, S, S, 3], jit-able."""
  outputs = coarse.outputs(variables, images)
  return {'cas_map': outputs['map'],
          'cas_score': coarse.image_score(outputs['map'], outputs)}


def two_stage(fine_stage: fas.FineStage, fine_input: fas.FineInput,
              cas_variables, fas_variables, images, choice=None
              ) -> dict[str, jax.Array]:
  """The whole two-stage program on device, for images [N, S, S, 3] (with
  their superpixels `choice` when given: `FineInput.superpixels`)."""
  outputs, fas_input = fine_input.device(cas_variables, images, choice)
  coarse = fine_input.coarse
  tasad = outputs['map'] + fine_stage.apply(fas_variables, fas_input)
  cas_score = coarse.image_score(outputs['map'], outputs)
  return {'cas_map': outputs['map'], 'cas_score': cas_score,
          'tasad_map': tasad,
          'tasad_score': fine_stage.image_score(tasad, outputs, cas_score),
          'fas_input': fas_input}


def coarse_in_boxes(coarse: methods.CoarseMethod, variables, images, boxes
                    ) -> tuple[dict[str, jax.Array], jax.Array]:
  """(coarse outputs, scores of the maps in `boxes`) of canvases [N, H, W, 3]
  with boxes [N, 4] (top, left, height, width), jit-able."""
  outputs = coarse.outputs(variables, images)
  valid = selection.box_mask(boxes, *images.shape[1:3])
  return outputs, coarse.image_score(outputs['map'], outputs, valid)


def add_in_boxes(fine_stage: fas.FineStage, outputs: dict, fas_map, cas_score,
                 boxes) -> dict[str, jax.Array]:
  """Both outputs' maps and scores from the coarse outputs and the FAS maps
  of canvases, the scores of their boxes, jit-able."""
  tasad = outputs['map'] + fas_map
  valid = selection.box_mask(boxes, *tasad.shape[1:3])
  return {'cas_map': outputs['map'], 'cas_score': cas_score,
          'tasad_map': tasad,
          'tasad_score': fine_stage.image_score(tasad, outputs, cas_score,
                                                valid)}


def in_boxes(fine_stage: fas.FineStage, fine_input: fas.FineInput | None,
             cas_variables, fas_variables, images, boxes, choice=None
             ) -> dict[str, jax.Array]:
  """The two-stage program (or the coarse stage's, without `fine_input`) of
  canvases [N, H, W, 3] in [0, 1] with boxes [N, 4] (and superpixels
  `choice` when given), on device, jit-able."""
  outputs, cas_score = coarse_in_boxes(fine_stage.coarse, cas_variables,
                                       images, boxes)
  if fine_input is None:
    return {'cas_map': outputs['map'], 'cas_score': cas_score}
  fas_map = fine_stage.apply(fas_variables, fine_input.device_in_boxes(
      outputs['map'], images, boxes, choice))
  return add_in_boxes(fine_stage, outputs, fas_map, cas_score, boxes)


class TwoStage:
  """Runs the coarse stage (and FAS when given) on batches of images."""

  def __init__(self, fine_stage: fas.FineStage, cas_variables: Any,
               fas_variables: Any | None, refine_params, mesh,
               on_device: bool = True):
    self.mesh = mesh
    self.method = (names.TWO_STAGE if fas_variables is not None
                   else names.COARSE)
    self.cas, self.fas = cas_variables, fas_variables
    self.fine = fine_stage
    self.coarse = fine_stage.coarse
    self.input = fas.FineInput(self.coarse, refine_params,
                                on_device and fas_variables is not None)
    self.refine_params = refine_params
    batch, rep = sharding.batch_sharded(mesh), sharding.replicated(mesh)
    self._coarse = jax.jit(functools.partial(coarse_only, self.coarse),
                           in_shardings=(rep, batch), out_shardings=batch)
    self._program = jax.jit(
        functools.partial(two_stage, self.fine, self.input),
        in_shardings=(rep, rep, batch), out_shardings=batch)
    self._fine = stage.make_predict(self.fine.apply, mesh)
    self._coarse_outputs = stage.make_predict(self.coarse.outputs, mesh)
    self._score = jax.jit(self.coarse.image_score, out_shardings=batch)

    def add_and_score(cas_map, fas_map, outputs, cas_score):
      tasad = cas_map + fas_map
      return {'tasad_map': tasad,
              'tasad_score': self.fine.image_score(tasad, outputs, cas_score)}
    self._add = jax.jit(add_and_score, out_shardings=batch)

    def coarse_canvases(variables, images, boxes):
      outputs, score = coarse_in_boxes(self.coarse, variables, images, boxes)
      seeded = (self.input.seeded_in_boxes(outputs['map'], boxes)
                if self.fas is not None and self.input.on_device else None)
      return outputs, score, seeded
    self._coarse_canvases = jax.jit(coarse_canvases,
                                    in_shardings=(rep, batch, batch),
                                    out_shardings=batch)
    self._fine_canvases = jax.jit(
        lambda v, x, maps, boxes: self.fine.apply(
            v, self.input.device_in_boxes(maps, x, boxes)),
        in_shardings=(rep, batch, batch, batch), out_shardings=batch)
    self._add_canvases = jax.jit(functools.partial(add_in_boxes, self.fine),
                                 out_shardings=batch)
    self._blank: dict[tuple[int, int], np.ndarray] = {}

  @classmethod
  def from_workdir(cls, config, workdir: str, mesh) -> 'TwoStage':
    """The trained stages of a workdir (the latest checkpoints, or step
    `config.restore_step` of each), with the test-time FAS thresholds."""
    fine_stage = fas.FineStage(config)
    step = config.restore_step or None
    cas = fas.restore_inference_variables(fine_stage.coarse, workdir, mesh,
                                           step)
    fine_variables = None
    if checkpointing.has_checkpoint(workdir, fine_stage.name):
      fine_variables = fas.restore_inference_variables(fine_stage, workdir,
                                                       mesh, step)
    return cls(fine_stage, cas, fine_variables,
               fas.refine_params(config, training=False),
               mesh, on_device=config.refine.on_device)

  def run(self, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Maps and scores of any number of images (uint8, or float in [0, 1]),
    `batch_size` at a time; the FAS inputs are not kept. In a multi-process
    job, each process runs its share of every batch and all get every row.

    A short last batch is zero-padded to `batch_size` rows (rows are
    independent at inference), so a run of many batches compiles one program,
    not a second one for its remainder; fewer images than `batch_size` run
    as they are (a single image is not computed `batch_size` times).
    """
    outputs: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      n = len(batch)
      if n < batch_size and start:
        batch = np.concatenate([batch, np.zeros(
            (batch_size - n,) + batch.shape[1:], batch.dtype)])
      chunk = distributed.local_rows(batch)
      if chunk.dtype == np.uint8:
        chunk = chunk.astype(np.float32) / 255.0
      for key, value in self(chunk).items():
        if key != 'fas_input':
          outputs.setdefault(key, []).append(
              distributed.gather_rows(value, len(batch))[:n])
    return {k: np.concatenate(v) for k, v in outputs.items()}

  def run_canvases(self, images: np.ndarray, boxes: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Maps [N, H, W] and scores [N] of a global batch of canvases (uint8,
    or float in [0, 1]) with their boxes [N, 4] (`tiling.Geometry.whole`);
    in a multi-process job each process runs its share and all get every
    row."""
    chunk = distributed.local_rows(images)
    if chunk.dtype == np.uint8:
      chunk = chunk.astype(np.float32) / 255.0
    out = self.canvases(chunk, distributed.local_rows(boxes))
    return {k: distributed.gather_rows(v, len(images)) for k, v in out.items()}

  def canvases(self, images: np.ndarray, boxes: np.ndarray
               ) -> dict[str, np.ndarray]:
    """`run_canvases` of this process's rows (images in [0, 1])."""
    n = len(images)
    pad = (-n) % self._local_devices
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:],
                                                images.dtype)])
      boxes = np.concatenate([boxes, np.zeros((pad, 4), boxes.dtype)])
    boxes = boxes.astype(np.int32)
    with jax.set_mesh(self.mesh):
      g = sharding.to_global({'x': images, 'b': boxes}, self.mesh)
      outputs, cas_score, seeded = self._coarse_canvases(self.cas, g['x'],
                                                         g['b'])
      out = {'cas_map': outputs['map'], 'cas_score': cas_score}
      if self.fas is not None:
        fas_map = self._fine_maps(images, boxes, outputs['map'], seeded)
        out = self._add_canvases(outputs, sharding.to_global(
            {'m': fas_map}, self.mesh)['m'], cas_score, g['b'])
      out = {k: sharding.to_local(v) for k, v in out.items()}
    return {k: (v[:n, ..., 0] if k.endswith('_map') else v[:n])
            for k, v in out.items()}

  def _fine_maps(self, images: np.ndarray, boxes: np.ndarray,
                 coarse_maps: jax.Array, seeded: jax.Array | None
                 ) -> np.ndarray:
    """FAS maps [N, H, W, 1] of this process's canvases: run for the rows
    with a seed (all rows of a multi-process batch with any), the blank map
    for the others."""
    maps = sharding.to_local(coarse_maps)
    if self.input.on_device:
      seeded = sharding.to_local(seeded)
    else:
      fas_input, seeded = self.input.host_in_boxes(maps, images, boxes)
    shape = images.shape[1:3]
    out = np.broadcast_to(self._blank_map(shape), maps.shape).copy()
    if not distributed.gather_rows(seeded, len(seeded) * jax.process_count()
                                   ).any():
      return out
    rows = np.arange(len(images))
    if jax.process_count() == 1:  # Only the seeded rows, padded to devices.
      rows = np.flatnonzero(seeded)
      rows = np.concatenate([rows, np.full((-len(rows)) % self.mesh.devices.size,
                                           rows[0])])
    if self.input.on_device:
      g = sharding.to_global({'x': images[rows], 'm': maps[rows],
                              'b': boxes[rows]}, self.mesh)
      fine = self._fine_canvases(self.fas, g['x'], g['m'], g['b'])
    else:
      fine = self._fine(self.fas, sharding.to_global(
          {'x': fas_input[rows]}, self.mesh)['x'])
    out[rows] = sharding.to_local(fine)
    return out

  @property
  def input_multiple(self) -> int:
    """Whole-image canvas sides: a multiple of this, for both networks."""
    if self.fas is None:
      return self.coarse.input_multiple
    return math.lcm(self.coarse.input_multiple, self.fine.input_multiple)

  @property
  def _local_devices(self) -> int:
    """Devices of this process: its rows of a batch come in multiples of it."""
    return self.mesh.devices.size // jax.process_count()

  def _blank_map(self, shape: tuple[int, int]) -> np.ndarray:
    """The FAS map [H, W, 1] of a blank input (no seed: nothing kept)."""
    if shape not in self._blank:
      # This process's rows: one per local device (all processes call it).
      zeros = np.zeros((self._local_devices,) + shape + (3,), np.float32)
      with jax.set_mesh(self.mesh):
        self._blank[shape] = sharding.to_local(self._fine(
            self.fas, sharding.to_global({'x': zeros}, self.mesh)['x']))[0]
    return self._blank[shape]

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """Maps and scores of images [N, H, W, 3] in [0, 1] (this process's rows).

    Returns:
      {'cas_map': [N, H, W], 'cas_score': [N]} and, with FAS,
      {'tasad_map', 'tasad_score', 'fas_input': [N, H, W, 3]}.
    """
    n = len(images)
    devices = self.mesh.devices.size // jax.process_count()
    pad = (-n) % devices
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:],
                                                images.dtype)])
    with jax.set_mesh(self.mesh):
      x = sharding.to_global({'x': images}, self.mesh)['x']
      if self.fas is not None and self.input.on_device:
        out = self._program(self.cas, self.fas, x)
      elif self.fas is None:
        out = self._coarse(self.cas, x)
      else:  # FAS input on the host, from the coarse maps.
        coarse = self._coarse_outputs(self.cas, x)
        out = {'cas_map': coarse['map'],
               'cas_score': self._score(coarse['map'], coarse)}
        fas_input = self.input.host(sharding.to_local(coarse['map']), images)
        fas_map = self._fine(self.fas, sharding.to_global(
            {'x': fas_input}, self.mesh)['x'])
        out.update(self._add(coarse['map'], fas_map, coarse, out['cas_score']),
                   fas_input=fas_input)
      out = {k: sharding.to_local(v) if isinstance(v, jax.Array) else v
             for k, v in out.items()}
    return {k: (v[:n, ..., 0] if k.endswith('_map') else v[:n])
            for k, v in out.items()}
