"""Checksums of checkpoint files: written after a save, verified before a restore.

Orbax writes a step atomically (a temporary folder renamed when complete), but
nothing notices a file cut short or a flipped byte afterwards: a copy broken
off, a full disk, bit rot on shared storage. Each step folder therefore gets a
manifest, `tasad_checksums.json`, with the size and SHA-256 of every file in
it, written (atomically) once orbax's save is complete, and every restore
checks it first. A step without a manifest (written before this existed, or
killed between orbax's rename and the manifest) restores as before, with a
note. Damaged steps are moved aside, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from tasad_jax.runtime import fileio
from tasad_jax.runtime.errors import UserInputError

MANIFEST = 'tasad_checksums.json'


class DamagedCheckpoint(UserInputError):
  """A checkpoint step whose files do not match their manifest."""

  def __init__(self, step_dir: str, file: str, reason: str):
    self.step_dir, self.file, self.reason = step_dir, file, reason
    super().__init__(f'{step_dir}: damaged checkpoint: {file}: {reason}')


def _digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _files(step_dir: str) -> list[str]:
  out = []
  for folder, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(folder, name), step_dir)
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def write_manifest(step_dir: str) -> None:
  """Records the size and SHA-256 of every file of a complete step folder."""
  entries = {}
  for rel in _files(step_dir):
    path = os.path.join(step_dir, rel)
    entries[rel] = {'size': os.path.getsize(path), 'sha256': _digest(path)}
  fileio.write_json(os.path.join(step_dir, MANIFEST),
                    {'version': 1, 'files': entries})


def has_manifest(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, MANIFEST))


def verify(step_dir: str) -> bool:
  """Checks a step folder against its manifest.

  Returns:
    True when verified, False when the step has no manifest (older runs).

  Raises:
    DamagedCheckpoint: naming the first file that is missing, of another size
      or of another content, or an unreadable manifest.
  """
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      entries = json.load(f)['files']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DamagedCheckpoint(step_dir, MANIFEST, f'unreadable ({e})') from None
  for rel, entry in sorted(entries.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      raise DamagedCheckpoint(step_dir, rel, 'missing')
    size = os.path.getsize(file)
    if size != entry['size']:
      raise DamagedCheckpoint(step_dir, rel,
                              f'{size} bytes, {entry["size"]} were written')
    if _digest(file) != entry['sha256']:
      raise DamagedCheckpoint(step_dir, rel, 'checksum mismatch')
  return True


def move_aside(step_dir: str) -> str:
  """Moves a damaged step folder to `<stage dir>.damaged/`; returns where."""
  parent = os.path.dirname(step_dir.rstrip(os.sep))
  target_dir = parent.rstrip(os.sep) + '.damaged'
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f'{os.path.basename(step_dir)}-'
                        f'{time.strftime("%Y%m%dT%H%M%S")}')
  while os.path.exists(target):
    target += '_'
  os.replace(step_dir, target)
  return target
