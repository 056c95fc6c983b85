"""Checkpoints of one training stage, behind orbax's CheckpointManager.

Each stage has its own manager under `<workdir>/checkpoints/<stage>`. Orbax
writes a step into a temporary folder and renames it when complete, so a run
killed during a save leaves no checkpoint that `latest_step` would return; the
temporary folder is removed when the manager next opens the directory.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from tasad_jax.runtime import checkpoint_integrity
from tasad_jax.runtime.errors import CheckpointWriteError, UserInputError


def checkpoint_dir(workdir: str, stage: str) -> str:
  return os.path.join(workdir, 'checkpoints', stage)


def has_checkpoint(workdir: str, stage: str) -> bool:
  """Whether a stage has a complete checkpoint in `workdir`."""
  path = checkpoint_dir(workdir, stage)
  if not os.path.isdir(path):
    return False
  ckpt = Checkpointer(path)
  try:
    return ckpt.latest_step() is not None
  finally:
    ckpt.close()


def restore(workdir: str, stage: str, template: Any, step: int | None = None
            ) -> Any:
  """Restores a stage's checkpoint (the latest, or `step`) into `template`.

  Raises:
    UserInputError: no checkpoint, or one that does not fit the template.
  """
  if not has_checkpoint(workdir, stage):
    raise UserInputError(f'{checkpoint_dir(workdir, stage)}: no '
                         f'{stage.upper()} checkpoint; train first (python '
                         'train.py ...)')
  ckpt = Checkpointer(checkpoint_dir(workdir, stage))
  try:
    return ckpt.restore(template, step)
  finally:
    ckpt.close()


class Checkpointer:
  """Saves and restores a pytree (the train state) by step, with checksums.

  A save is asynchronous; once orbax has finished it (at the next `save`,
  `wait` or `close`), the step's manifest of file checksums is written
  (`tasad_jax.runtime.checkpoint_integrity`). `restore` verifies it first.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._manager = self._open()
    self._pending: list[int] = []

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep,
                                             create=True,
                                             cleanup_tmp_directories=True))

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step` (asynchronously; see `wait`).

    Raises:
      CheckpointWriteError: the step (or the previous one) could not be written.
    """
    self.wait()
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._write_failed(step, e)
    self._pending.append(step)

  def wait(self) -> None:
    """Waits for the save in flight, then writes the checksums of new steps."""
    try:
      self._manager.wait_until_finished()
      for step in self._pending:  # Orbax's primary process writes the files.
        if jax.process_index() == 0 and os.path.isdir(self.step_dir(step)):
          checkpoint_integrity.write_manifest(self.step_dir(step))
    except Exception as e:  # pylint: disable=broad-except
      self._write_failed(self._pending[-1] if self._pending else -1, e)
    finally:
      self._pending = []

  def _write_failed(self, step: int, error: Exception):
    kept = [s for s in self.all_steps() if s != step]
    raise CheckpointWriteError(
        f'{self.directory}: cannot write checkpoint step {step} '
        f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}); '
        f'the previous checkpoint ({f"step {kept[-1]}" if kept else "none"}) '
        'is intact; free space or fix the folder\'s permissions, then run the '
        'same command to resume') from None

  def restore(self, template: Any, step: int | None = None) -> Any:
    """Verifies, then restores into the structure, shapes and shardings of
    `template`.

    Raises:
      DamagedCheckpoint: checksum mismatch, missing or truncated file,
        unreadable metadata (a UserInputError naming the folder and file).
      UserInputError: no such step, or a checkpoint of another model.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserInputError(f'{self.directory}: no checkpoint to restore')
    if step not in self.all_steps():
      raise UserInputError(f'{self.directory}: no checkpoint of step {step}; '
                           f'steps here: {self.all_steps()}')
    where = self.step_dir(step)
    if not checkpoint_integrity.verify(where):
      logging.warning('%s: no checksums (written before they existed, or cut '
                      'off before them); restoring unverified', where)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    self._check_fits(step, abstract)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except
      raise checkpoint_integrity.DamagedCheckpoint(
          where, 'data', f'unreadable ({type(e).__name__}: '
          f'{str(e).splitlines()[0] if str(e) else ""})') from None

  def restore_latest_good(self, template: Any) -> tuple[Any, int]:
    """The newest step that verifies and restores, moving damaged ones aside.

    Returns:
      (state, step), or (template, 0) when no step is good.
    """
    for step in reversed(self.all_steps()):
      try:
        return self.restore(template, step), step
      except checkpoint_integrity.DamagedCheckpoint as e:
        moved = (checkpoint_integrity.move_aside(e.step_dir)
                 if jax.process_index() == 0 else 'the .damaged folder')
        message = (f'warning: {e}; moved it to {moved} and fell back to an '
                   'older checkpoint')
        logging.warning('%s', message)
        print(message, file=sys.stderr, flush=True)
        self._manager.close()
        self._manager = self._open()
    return template, 0

  def _check_fits(self, step: int, abstract: Any) -> None:
    """Compares stored and expected array shapes before restoring."""
    where = self.step_dir(step)
    try:
      stored = _shapes(self._manager.item_metadata(step))
    except Exception as e:  # pylint: disable=broad-except
      raise checkpoint_integrity.DamagedCheckpoint(
          where, 'metadata', f'unreadable ({type(e).__name__}: {e})') from None
    expected = _shapes(abstract)
    for path, shape in sorted(expected.items()):
      if path not in stored and path.startswith(_EMA):
        raise UserInputError(
            f'{where}: checkpoint has no moving average of the parameters '
            f'({path}): it was trained with config.train.ema_decay=0; set it '
            'to 0 to restore it')
      if path not in stored:
        raise UserInputError(
            f'{where}: checkpoint has no array {path}; it was written by '
            'another model or by tasad_jax before 0.2 (one state layout for '
            'every method since): retrain')
      if stored[path] != shape:
        raise UserInputError(
            f'{where}: checkpoint does not fit this config: {path} has shape '
            f'{stored[path]}, the model expects {shape} (another '
            'config.model.width?)')
    # Arrays the template lacks: orbax would refuse them as unreadable, and a
    # good checkpoint would be moved aside as damaged.
    extra = sorted(set(stored) - set(expected))
    if any(path.startswith(_EMA) for path in extra):
      raise UserInputError(
          f'{where}: checkpoint holds a moving average of the parameters: it '
          'was trained with config.train.ema_decay > 0; set it so to restore '
          'it')
    if extra:
      raise UserInputError(
          f'{where}: checkpoint holds arrays this model does not have '
          f'({extra[0]}, {len(extra)} in all): it was written by another model '
          'or config (another config.model.norm?)')

  def close(self) -> None:
    self.wait()
    self._manager.close()


# The paths of `EmaTrainState.ema` (config.train.ema_decay), named in refusals.
_EMA = 'ema/'


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """The shape of every array leaf by path ('params/segmenter/...')."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
             for k in path]
    if hasattr(leaf, 'shape'):
      out['/'.join(names)] = tuple(leaf.shape)
  return out
