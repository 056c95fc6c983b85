"""Two-stage inference: coarse map, FAS input, FAS map, anomaly map, score.

The coarse stage is the method of `config.coarse.name` (TASAD's CAS by
default). The anomaly map is coarse output + FAS output (raw); image scores
use the coarse method's score (TASAD: the maximum of the map after a 21x21
mean filter). With `on_device`, coarse -> FAS input (histogram filter, median,
JAX SLIC, crop) -> FAS -> maps -> scores is one jitted, batch-sharded program;
otherwise the FAS input is made on the host by the reference `tasad_jax.refine`.
The output keys are 'cas_*' for the coarse stage and 'tasad_*' for coarse+FAS.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tasad_jax import (checkpointing, distributed, methods, refine, scoring,
                       sharding, steps)

image_scores = scoring.max_of_mean_filter  # TASAD's image score.


def two_stage(coarse: methods.base.CoarseMethod, fas_apply, cas_variables,
              fas_variables, images, params: refine.RefineParams
              ) -> dict[str, jax.Array]:
  """The whole two-stage program on device, for images [N, H, W, 3]."""
  coarse_map, fas_input = steps.fine_input(coarse.anomaly_map, cas_variables,
                                           images, params)
  tasad = coarse_map + fas_apply(fas_variables, fas_input, train=False)
  return {'cas_map': coarse_map, 'cas_score': coarse.image_score(coarse_map),
          'tasad_map': tasad, 'tasad_score': coarse.image_score(tasad),
          'fas_input': fas_input}


class TwoStage:
  """Runs the coarse stage (and FAS when given) on batches of images."""

  def __init__(self, coarse: methods.base.CoarseMethod, fas_model,
               cas_variables: Any, fas_variables: Any | None,
               refine_params: refine.RefineParams, mesh, on_device: bool = True):
    self.mesh = mesh
    self.method = 'tasad' if fas_variables is not None else 'cas'
    self.on_device = on_device and fas_variables is not None
    self.cas = cas_variables
    self.fas = fas_variables
    self.refine_params = refine_params
    self.coarse = coarse
    self.fas_model = fas_model
    batch = sharding.batch_sharded(mesh)
    self._coarse = steps.make_predict(coarse.anomaly_map, mesh)
    self._fine = steps.make_predict(fas_model, mesh)
    self._scores = jax.jit(coarse.image_score, in_shardings=batch,
                           out_shardings=batch)
    self._add = jax.jit(jnp.add, in_shardings=(batch, batch), out_shardings=batch)
    rep = sharding.replicated(mesh)
    self._program = jax.jit(
        functools.partial(two_stage, coarse, fas_model.apply,
                          params=refine_params),
        in_shardings=(rep, rep, batch), out_shardings=batch)

  @classmethod
  def from_workdir(cls, config, workdir: str, mesh) -> 'TwoStage':
    """The trained stages of a workdir, with the test-time FAS thresholds."""
    cas, fas = checkpointing.restore_variables(config, workdir, mesh)
    return cls(methods.get(config), steps.create_model(config), cas, fas,
               steps.refine_params(config, training=False), mesh,
               on_device=config.refine.on_device)

  def run(self, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Maps and scores of any number of images (uint8, or float in [0, 1]),
    `batch_size` at a time; the FAS inputs are not kept. In a multi-process
    job, each process runs its share of every batch and all get every row."""
    outputs: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
      n = len(images[start:start + batch_size])
      chunk = distributed.local_rows(images[start:start + batch_size])
      if chunk.dtype == np.uint8:
        chunk = chunk.astype(np.float32) / 255.0
      for key, value in self(chunk).items():
        if key != 'fas_input':
          outputs.setdefault(key, []).append(distributed.gather_rows(value, n))
    return {k: np.concatenate(v) for k, v in outputs.items()}

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
      if self.on_device:
        out = {k: sharding.to_local(v)
               for k, v in self._program(self.cas, self.fas, x).items()}
        return {k: (v[:n, ..., 0] if k.endswith('_map') else v[:n])
                for k, v in out.items()}
      cas_map = self._coarse(self.cas, x)
      out = {'cas_map': sharding.to_local(cas_map),
             'cas_score': sharding.to_local(self._scores(cas_map))}
      if self.fas is not None:
        fas_input = refine.fas_inputs(out['cas_map'], images, self.refine_params)
        fas_map = self._fine(self.fas, sharding.to_global(
            {'x': fas_input}, self.mesh)['x'])
        tasad_map = self._add(cas_map, fas_map)
        out.update(tasad_map=sharding.to_local(tasad_map),
                   tasad_score=sharding.to_local(self._scores(tasad_map)),
                   fas_input=fas_input)
    return {k: (v[:n, ..., 0] if k.endswith('_map') else v[:n])
            for k, v in out.items()}
