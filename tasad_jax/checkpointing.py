"""Checkpoints of one training stage, behind orbax's CheckpointManager.

Each stage has its own manager under `<workdir>/checkpoints/<stage>`. Orbax
writes a step into a temporary folder and renames it when complete, so a run
killed during a save leaves no checkpoint that `latest_step` would return; the
temporary folder is removed when the manager next opens the directory.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from tasad_jax.errors import UserInputError


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
  """Saves and restores a pytree (the train state) by step."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True,
                                             cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step` (asynchronously; see `wait`)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, template: Any, step: int | None = None) -> Any:
    """Restores into the structure, shapes and shardings of `template`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserInputError(f'{self.directory}: no checkpoint to restore')
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    self._check_fits(step, abstract)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _check_fits(self, step: int, abstract: Any) -> None:
    """Compares stored and expected array shapes before restoring."""
    where = os.path.join(self.directory, str(step))
    try:
      stored = _shapes(self._manager.item_metadata(step))
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f'{where}: unreadable checkpoint ({e})') from None
    expected = _shapes(abstract)
    for path, shape in sorted(expected.items()):
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

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """The shape of every array leaf by path ('params/segmenter/...')."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
             for k in path]
    if hasattr(leaf, 'shape'):
      out['/'.join(names)] = tuple(leaf.shape)
  return out
