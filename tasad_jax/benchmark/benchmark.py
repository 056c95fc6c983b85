"""One benchmark worker: expand the sweep, run this shard's cells, summarise.

`run` checks the whole grid (and that the root holds no other benchmark's
finished cells) before any cell starts, runs the cells of its shard
(`runner`), then writes the table of every cell finished so far (`summary`).
Workers of one sweep share the root: shards never touch each other's cells,
and each rewrites the table atomically when it ends.
"""

from __future__ import annotations

import os
import shlex
import sys

from tasad_jax.benchmark import runner, summary, sweep as sweep_lib
from tasad_jax.runtime.errors import Error, UserInputError


class CellsFailed(Error):
  """Some cells failed; the others ran. Exit status 1."""

  exit_status = 1


def run(sweep, root: str, *, title: str, shard: str = '',
        devices_per_cell: int = 0, summarize_only: bool = False,
        dry_run: bool = False, out=sys.stdout) -> summary.Table | None:
  """Runs (or lists, or only summarises) this worker's cells of `sweep`
  under `root`; raises CellsFailed naming the cells that failed."""
  base, cells = sweep_lib.expand(sweep)
  index, count = runner.parse_shard(shard)
  mine = sweep_lib.shard_of(cells, index, count)
  if dry_run:
    for cell in mine:
      print(f'{cell.name}\t{shlex.join(cell.argv(base, root))}', file=out)
    return None
  if summarize_only and not os.path.isdir(root):
    raise UserInputError(f'{root}: --root not found; nothing to summarize')
  runner.check_root(root, base, cells)
  if not summarize_only:
    slots = runner.slots(devices_per_cell)
    os.makedirs(root, exist_ok=True)
    print(f'{title}: {len(cells)} cells, shard {index}/{count} runs '
          f'{len(mine)} on {len(slots)} device group(s), into {root}',
          file=out, flush=True)
    results = runner.Runner(root, base, (index, count), out).run(mine, slots)
  table = summary.write(root, cells, title)
  print(f'wrote {os.path.join(root, "results.md")} (.csv, .html): '
        f'{len(table.values)} of {len(cells)} cells done', file=out, flush=True)
  if not summarize_only:
    failed = [n for n, s in results.items() if s == runner.FAILED]
    if failed:
      raise CellsFailed(f'{len(failed)} of {len(mine)} cells failed: '
                        f'{", ".join(failed)} (errors in results.md and '
                        f'{os.path.join(root, sweep_lib.STATUS_FOLDER)})')
  return table
