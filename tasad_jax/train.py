"""Training of the coarse ('cas') and fine ('fas') stages.

Each stage has one jitted train step over a 1-D data mesh (batch split on
'data', state replicated and donated), orbax checkpoints every
`config.train.checkpoint_every` steps, and clu metric writers. The coarse
stage is the method of `config.coarse.name` (TASAD's CAS by default: Adam, lr
x0.2 at 80% and 90% of the steps), trained on the pseudo-anomalies; FAS, with
the coarse stage frozen, learns the masks from the superpixel crop that the
coarse map selects (`tasad_jax.refine`).

A restarted run resumes each stage from its latest checkpoint; since the data
stream is a pure function of (seed, step), it ends with the same parameters as
an uninterrupted run.
"""

import functools
import os
import time

from absl import logging
from clu import metric_writers, periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tasad_jax import (checkpointing, distributed, fileio, methods, preemption,
                       refine, sharding, thresholds)
from tasad_jax.checkpointing import checkpoint_dir, restore_stage
from tasad_jax.errors import Preempted, TrainingFault, UserInputError
from tasad_jax.steps import (STAGES, create_model, create_stage_state,
                             fine_input, input_key, make_predict,
                             make_train_step, num_steps, refine_params)


def check_config(config, workdir: str) -> None:
  """Checks training fields; raises UserInputError naming the field."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserInputError(f'{workdir}: workdir exists and is not a folder')
  size = config.data.image_size
  if not isinstance(size, int) or size % 4 or size < 16:
    raise UserInputError(f'config.data.image_size: {size!r} must be a multiple '
                         'of 4 (two 2x poolings), at least 16')
  devices = jax.device_count()
  if config.train.batch_size % devices or config.train.batch_size < 1:
    raise UserInputError(f'config.train.batch_size: {config.train.batch_size} '
                         f'is not divisible by the {devices} devices')
  for stage in config.stages:
    if stage not in STAGES:
      raise UserInputError(f'config.stages: unknown stage {stage!r}; use {STAGES}')
    if num_steps(config, stage) < 1:
      raise UserInputError(f'config.train.{stage}_steps: must be >= 1')
  try:
    jnp.dtype(config.model.dtype)
  except TypeError:
    raise UserInputError(f'config.model.dtype: unknown dtype '
                         f'{config.model.dtype!r}') from None
  if config.model.width < 1:
    raise UserInputError('config.model.width: must be >= 1')
  methods.get(config)  # Checks config.coarse.


def _write_config(config, workdir: str) -> None:
  fileio.write_text(os.path.join(workdir, 'config.json'),
                    config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains the stages in `config.stages` in `workdir` (resuming if possible)."""
  from tasad_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  distributed.initialize(config)
  check_config(config, workdir)
  input_pipeline.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  with preemption.WorkdirLock(workdir), preemption.StopOnSigterm() as stop:
    if jax.process_index() == 0:
      _write_config(config, workdir)
    mesh = sharding.make_mesh()
    train_images, holdout = thresholds.split_holdout(
        input_pipeline.load_split(config, 'train')['image'],
        config.threshold.holdout_fraction, config.seed)
    cas_pool = None
    for stage in config.stages:
      data = input_pipeline.load_train_data(config, stage, train_images,
                                            cas_pool)
      cas_pool = data.sources
      train_stage(config, workdir, stage, data, mesh, stop)
    calibrate(config, workdir, holdout if len(holdout) else train_images, mesh)


def calibrate(config, workdir: str, images: np.ndarray, mesh) -> dict:
  """Scores normal images with the trained stages; writes thresholds.json."""
  from tasad_jax import inference  # pylint: disable=g-import-not-at-top
  runner = inference.TwoStage.from_workdir(config, workdir, mesh)
  out = runner.run(images, config.eval.batch_size)
  values = thresholds.from_normal(out[f'{runner.method}_score'],
                                  out[f'{runner.method}_map'],
                                  config.threshold.target_false_alarm_rate)
  values['method'] = runner.method
  if jax.process_index() == 0:
    thresholds.save(workdir, values)
  logging.info('Thresholds from %d normal images: %s', len(images), values)
  return values


def _fas_inputs(config, mesh, predict, cas_variables, batch) -> np.ndarray:
  """Frozen coarse stage on the augmented images, then the host crop of each."""
  coarse = sharding.to_local(predict(cas_variables, sharding.to_global(
      {'x': batch['augmented']}, mesh)['x']))
  return refine.fas_inputs(coarse, batch['augmented'],
                           refine_params(config, training=True))


class _FaultCheck:
  """Collects the per-step finite flags and checks them at sync points.

  Reading a flag waits for its step, so flags are read only where the loop
  syncs anyway (logging, checkpoints): a fault is found before any checkpoint
  could hold it, and the step is named exactly.
  """

  def __init__(self, stage: str, skip: bool):
    self.stage, self.skip = stage, skip
    self.pending: list[tuple[int, jax.Array]] = []
    self.skipped = 0

  def add(self, step: int, finite: jax.Array) -> None:
    self.pending.append((step, finite))

  def check(self, last_saved: int) -> None:
    bad = [s for s, f in self.pending if not bool(f)]
    self.pending = []
    if not bad:
      return
    if self.skip:
      self.skipped += len(bad)
      logging.warning('%s: skipped %d steps with a non-finite loss (first at '
                      'step %d; %d skipped so far)', self.stage, len(bad),
                      bad[0], self.skipped)
      return
    raise TrainingFault(
        f'{self.stage}: non-finite loss or gradients at step {bad[0]}; stopped '
        f'and kept the last good checkpoint (step {last_saved or "none"}); '
        'lower config.train.learning_rate, or set '
        'config.train.skip_nonfinite=True to skip such steps')


def train_stage(config, workdir: str, stage: str, data, mesh,
                stop: preemption.StopOnSigterm | None = None):
  """Trains one stage to `config.train.<stage>_steps`, resuming if possible."""
  from tasad_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  total = num_steps(config, stage)
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir, stage),
                                    max_to_keep=config.train.max_checkpoints)
  coarse = methods.get(config)
  state = create_stage_state(config, stage, mesh)
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(state)
    logging.info('%s: resuming from step %d', stage, start)
  if start >= total:
    logging.info('%s: already trained (%d steps)', stage, start)
    ckpt.close()
    return state

  coarse_predict = make_predict(coarse.anomaly_map, mesh)
  predict = (coarse_predict if stage == 'cas'
             else make_predict(create_model(config), mesh))
  cas_variables = None
  if stage == 'fas':
    cas_variables = restore_stage(config, workdir, 'cas', mesh).variables
  step_fn = make_train_step(config, stage, mesh, state)
  key = input_key(stage)
  batch_keys = coarse.batch_keys() if stage == 'cas' else (key, 'mask')
  fine_input_fn = jax.jit(functools.partial(
      fine_input, coarse.anomaly_map,
      params=refine_params(config, training=True)))
  stream = input_pipeline.train_dataset(
      data, config, stage, batch_size=config.train.batch_size,
      start_step=start).as_numpy_iterator()
  writer = metric_writers.create_default_writer(
      os.path.join(workdir, 'logs', stage),
      just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
  faults = _FaultCheck(stage, config.train.skip_nonfinite)
  collected, tick, since, saved = None, time.perf_counter(), 0, start
  try:
    with jax.set_mesh(mesh):
      for step in range(start + 1, total + 1):
        batch = next(stream)
        distributed.check_rows(stage, step, batch.pop('index'),
                               config.train.batch_size)
        if stage == 'fas' and config.refine.on_device:
          inputs = {'augmented': batch['augmented'], 'mask': batch['mask']}
          state, step_metrics, finite = step_fn(
              state, sharding.to_global(inputs, mesh), cas_variables)
        else:
          if stage == 'fas':
            batch['fas_input'] = _fas_inputs(config, mesh, coarse_predict,
                                             cas_variables, batch)
          inputs = {k: batch[k] for k in batch_keys}
          state, step_metrics, finite = step_fn(
              state, sharding.to_global(inputs, mesh),
              **({'step': step - 1} if stage == 'cas' else {}))
        faults.add(step, finite)
        collected = step_metrics if collected is None else collected.merge(
            step_metrics)
        since += 1
        report(step)
        stopping = stop is not None and stop.should_stop(step)
        if step % config.train.log_every == 0 or step == total or stopping:
          faults.check(saved)
          scalars = {f'{stage}/{k}': float(v)
                     for k, v in collected.compute().items()}
          scalars[f'{stage}/images_per_s'] = since * config.train.batch_size / (
              time.perf_counter() - tick)
          scalars[f'{stage}/skipped_steps'] = faults.skipped
          writer.write_scalars(step, scalars)
          collected, tick, since = None, time.perf_counter(), 0
        if config.train.image_every and (step % config.train.image_every == 0
                                          or step == total):
          if key not in inputs:  # FAS input made inside the step: redo it.
            inputs[key] = sharding.to_local(fine_input_fn(
                cas_variables, sharding.to_global(
                    {'x': batch['augmented']}, mesh)['x'])[1])
          _write_images(writer, stage, step, state, predict, inputs, batch, mesh)
        if step % config.train.checkpoint_every == 0 or step == total or stopping:
          faults.check(saved)
          ckpt.save(step, state)
          saved = step
        if stopping:
          ckpt.wait()
          raise Preempted(f'SIGTERM: saved {stage} step {step} in '
                          f'{ckpt.directory}; run the same command to resume')
  finally:
    ckpt.wait()
    ckpt.close()
    writer.flush()
  return state


def _write_images(writer, stage, step, state, predict, inputs, batch, mesh):
  n = min(4, len(batch['mask']))
  key = input_key(stage)
  prediction = sharding.to_local(predict(
      state.variables,
      sharding.to_global({'x': inputs[key]}, mesh)['x']))
  writer.write_images(step, {
      f'{stage}/input': np.asarray(inputs[key][:n]),
      f'{stage}/mask': np.asarray(batch['mask'][:n]),
      f'{stage}/prediction': np.clip(prediction[:n], 0.0, 1.0),
  })
