"""Training of the coarse ('cas') and fine ('fas') stages.

Each stage has one jitted train step over a 1-D data mesh (batch split on
'data', state replicated and donated), orbax checkpoints every
`config.train.checkpoint_every` steps, and clu metric writers. The coarse
stage is the method of `config.coarse.name` (TASAD's CAS by default: Adam, lr
x0.2 at 80% and 90% of the steps), trained on the pseudo-anomalies; FAS, with
the coarse stage frozen, learns the masks from the superpixel crop that the
coarse map selects (`tasad_jax.fine.selection`).

A restarted run resumes each stage from its latest checkpoint; since the data
stream is a pure function of (seed, step), it ends with the same parameters as
an uninterrupted run.
"""

import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from tasad_jax.config import saved, schema
from tasad_jax.core import names, sharding, stage as stage_lib, tiling
from tasad_jax.data import holdout, splits, weak_labels
from tasad_jax.fine import stages
from tasad_jax.inference import thresholds, two_stage, whole_image
from tasad_jax.runtime import checkpointing, distributed, preemption
from tasad_jax.runtime.checkpointing import checkpoint_dir
from tasad_jax.runtime.errors import Preempted, TrainingFault, UserInputError


def restore_stage(config, workdir: str, name: str, mesh, step: int | None = None):
  """The train state of stage `name` in `workdir` (the latest, or `step`),
  replicated."""
  return checkpointing.restore(
      workdir, name, stages.build_stage(config, name).abstract_state(mesh), step)


def check_workdir(workdir: str) -> None:
  """Raises UserInputError when `workdir` cannot be a training workdir."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserInputError(f'{workdir}: workdir exists and is not a folder')


def check_resumable(config, workdir: str) -> None:
  """Refuses a config whose networks differ from those of the checkpoints in
  `workdir` (width, image size, coarse method): it could not resume them."""
  if any(checkpointing.has_checkpoint(workdir, name) for name in names.STAGES):
    saved.check_matches(config, workdir)
  coarse = names.COARSE_STAGE
  if (coarse not in config.stages and names.FINE_STAGE in config.stages
      and not checkpointing.has_checkpoint(workdir, coarse)):
    raise UserInputError(
        f'{checkpoint_dir(workdir, coarse)}: no CAS checkpoint to train the '
        "fine stage on; train both (config.stages=('cas', 'fas')) first")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains the stages in `config.stages` in `workdir` (resuming if possible).

  Everything that can refuse the run (the config, the workdir, the data, the
  sources, the labelled anomalies) is checked and read before the workdir is
  created or written to, so a refused run leaves no trace: a trained workdir
  keeps its config.json, and no half-made workdir is left behind.
  """
  from tasad_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  distributed.initialize(config)
  check_workdir(workdir)
  schema.check(config, schema.TRAIN)
  check_resumable(config, workdir)
  preemption.refuse_if_locked(workdir)
  train_images, held_out = holdout.split_holdout(
      splits.load_split(config, 'train')['image'],
      config.threshold.holdout_fraction, config.seed)
  # Weak supervision: real defects mixed into every stage's stream.
  real = weak_labels.load(config)
  data, pool = {}, None
  for name in config.stages:
    data[name] = pipeline.load_train_data(config, name, train_images, pool, real)
    pool = data[name].sources
  built = {name: stages.build_stage(config, name) for name in config.stages}
  os.makedirs(workdir, exist_ok=True)
  with preemption.WorkdirLock(workdir), preemption.StopOnSigterm() as stop:
    if jax.process_index() == 0:
      saved.write(config, workdir)
      weak_labels.record(config, workdir, real)
    mesh = sharding.make_mesh()
    for name in config.stages:
      train_stage(config, workdir, built[name], data.pop(name), mesh, stop)
    calibrate(config, workdir, held_out if len(held_out) else train_images, mesh)


def calibrate(config, workdir: str, images: np.ndarray, mesh) -> dict:
  """Scores normal images with the trained stages; writes thresholds.json.

  'pad' and 'tile' score whole images (`whole_image.run_images`), the
  pixel threshold from their maps at the evaluation resolution.
  """
  runner = two_stage.TwoStage.from_workdir(config, workdir, mesh)
  out = whole_image.run_images(runner, tiling.Geometry.from_config(config),
                                   images, config.eval.batch_size)
  per_method = thresholds.per_method(out, config.threshold.target_false_alarm_rate)
  # The final stage's thresholds at the top level, as before per_method.
  values = dict(per_method[runner.method], method=runner.method,
                per_method=per_method)
  if jax.process_index() == 0:
    thresholds.save(workdir, values)
  logging.info('Thresholds from %d normal images: %s', len(images), values)
  return values


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


class _MetricWindow:
  """Step metrics between two log points, read on the host only when logged.

  Names ending in 'learning_rate' or 'phase' are logged as their last value,
  the others as their mean over the window's finite steps.
  """

  def __init__(self):
    self.steps: list[tuple[dict, jax.Array]] = []

  def add(self, step_metrics: dict, finite: jax.Array) -> None:
    self.steps.append((step_metrics, finite))

  def compute(self) -> dict[str, float]:
    values = jax.device_get(self.steps)
    self.steps = []
    sums: dict[str, list[float]] = {}
    for step_metrics, finite in values:
      for k, v in step_metrics.items():
        if k.endswith(('learning_rate', 'phase')):
          sums[k] = [float(v), 1]
        elif bool(finite):
          total = sums.setdefault(k, [0.0, 0])
          total[0] += float(v)
          total[1] += 1
    return {k: (t / n if n else float('nan')) for k, (t, n) in sums.items()}


def train_stage(config, workdir: str, stage: stage_lib.Stage, data, mesh,
                stop: preemption.StopOnSigterm | None = None):
  """Trains one stage to its step count, resuming from its checkpoints.

  Every stage goes through the same contract (`tasad_jax.core.stage`): its state,
  its phases (one jitted program each), its batch keys, host-side batch
  preparation and context.
  """
  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions
  from tasad_jax.data import pipeline
  from tasad_jax.runtime.tf_host import metric_writers
  # pylint: enable=g-import-not-at-top
  name, total = stage.name, stage.num_steps
  ckpt = checkpointing.Checkpointer(checkpoint_dir(workdir, name),
                                    max_to_keep=config.train.max_checkpoints)
  state, start = ckpt.restore_latest_good(stage.abstract_state(mesh))
  if start:
    logging.info('%s: resuming from step %d', name, start)
  else:  # Initialised only when there is nothing to resume from.
    state = stage.initial_state(mesh)
  if start >= total:
    logging.info('%s: already trained (%d steps)', name, start)
    ckpt.close()
    return state

  context = stage.context(workdir, mesh)
  program_at = stage_lib.compile_phases(stage, state, mesh, context)
  stream = pipeline.train_dataset(
      data, config, name, batch_size=config.train.batch_size,
      start_step=start).as_numpy_iterator()
  writer = metric_writers.create_default_writer(
      os.path.join(workdir, 'logs', name),
      just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
  faults = _FaultCheck(name, config.train.skip_nonfinite)
  window = _MetricWindow()
  tick, since, saved = time.perf_counter(), 0, start
  try:
    with jax.set_mesh(mesh):
      for step in range(start + 1, total + 1):
        batch = next(stream)
        distributed.check_rows(name, step, batch.pop('index'),
                               config.train.batch_size)
        batch = stage.prepare_batch(batch, context, mesh)
        inputs = sharding.to_global({k: batch[k] for k in stage.batch_keys()},
                                    mesh)
        state, step_metrics, finite = program_at(step - 1)(state, inputs,
                                                           context)
        faults.add(step, finite)
        window.add(step_metrics, finite)
        since += 1
        report(step)
        stopping = stop is not None and stop.should_stop(step)
        if step % config.train.log_every == 0 or step == total or stopping:
          faults.check(saved)
          scalars = {f'{name}/{k}': v for k, v in window.compute().items()}
          scalars[f'{name}/images_per_s'] = since * config.train.batch_size / (
              time.perf_counter() - tick)
          scalars[f'{name}/skipped_steps'] = faults.skipped
          writer.write_scalars(step, scalars)
          tick, since = time.perf_counter(), 0
        if config.train.image_every and (step % config.train.image_every == 0
                                          or step == total):
          images = stage.summary_images(state, batch, context, mesh)
          if images:
            writer.write_images(step, {f'{name}/{k}': v
                                       for k, v in images.items()})
        if step % config.train.checkpoint_every == 0 or step == total or stopping:
          faults.check(saved)
          ckpt.save(step, state)
          saved = step
        if stopping:
          ckpt.wait()
          raise Preempted(f'SIGTERM: saved {name} step {step} in '
                          f'{ckpt.directory}; run the same command to resume')
  finally:
    ckpt.wait()
    ckpt.close()
    writer.flush()
  return state
