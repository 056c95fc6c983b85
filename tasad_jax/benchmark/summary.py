"""A sweep's table: every cell's metrics.json, by category and method, ± FAS.

`<root>/results.md`, `results.csv` and `results.html`: one row per category and
a mean row; per metric (image AUROC, pixel AUROC, pixel AP, AUPRO), a column
group per method (and per value of the sweep's other grid fields) with the
coarse stage alone, coarse + FAS and the +FAS delta. Over several seeds each
entry is mean ± sample std over seeds; the mean row is the mean over
categories seed by seed, then mean ± std of those. With one seed, each entry
is exactly the number in the cell's metrics.json (the CSV keeps full
precision). Cells not finished, and failed ones with their error line, are
listed; the HTML adds a bar chart of the per-category +FAS deltas.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from tasad_jax.benchmark import runner
from tasad_jax.benchmark.sweep import Cell
from tasad_jax.core import names
from tasad_jax.reporting import pages, plots
from tasad_jax.runtime import fileio

METRICS = (('image_auroc', 'image AUROC'), ('pixel_auroc', 'pixel AUROC'),
           ('pixel_ap', 'pixel AP'), ('aupro', 'AUPRO'))
# (CSV key, column heading) of the coarse stage, coarse + FAS and the delta.
STAGES = (('coarse', ''), ('fas', '+FAS'), ('delta', 'Δ FAS'))
MEAN = 'mean'


@dataclasses.dataclass
class Stat:
  """Mean, sample std (NaN for one value) and count of a list of values."""
  mean: float = math.nan
  std: float = math.nan
  n: int = 0

  @classmethod
  def of(cls, values: list[float]) -> 'Stat':
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
      return cls()
    mean = sum(values) / len(values)
    std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
           if len(values) > 1 else math.nan)
    return cls(mean, std, len(values))

  def text(self, signed: bool = False) -> str:
    if not self.n:
      return '–'
    sign = '+' if signed else ''
    out = f'{self.mean:{sign}.4f}'
    return out + (f' ± {self.std:.4f}' if self.n > 1 else '')


def stage_value(metrics: dict, stage: str, key: str) -> float | None:
  """A cell's value of metric `key` for one of STAGES (None if absent)."""
  def get(output):
    value = (metrics.get(output) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None
  if stage == 'coarse':
    return get(names.COARSE)
  if stage == 'fas':
    return get(names.TWO_STAGE)
  coarse, fine = get(names.COARSE), get(names.TWO_STAGE)
  return None if coarse is None or fine is None else fine - coarse


def group_label(cell: Cell) -> str:
  return cell.method + (f' [{cell.variant}]' if cell.variant else '')


@dataclasses.dataclass
class Table:
  """The collected results of a sweep's cells."""
  categories: list[str]
  groups: list[str]
  seeds: list[int]
  values: dict  # (category, group, seed) -> metrics.json
  missing: list[str]
  failed: list[tuple[str, str]]

  def stat(self, category: str, group: str, stage: str, key: str) -> Stat:
    if category != MEAN:
      return Stat.of([stage_value(self.values[(category, group, s)], stage, key)
                      for s in self.seeds if (category, group, s) in self.values])
    per_seed = []
    for s in self.seeds:
      row = [stage_value(self.values.get((c, group, s), {}), stage, key)
             for c in self.categories]
      if all(v is not None for v in row):
        per_seed.append(sum(row) / len(row))
    return Stat.of(per_seed)


def collect(root: str, cells: list[Cell]) -> Table:
  """Reads each cell's metrics.json (done), or its status (failed/missing)."""
  values, missing, failed = {}, [], []
  for cell in cells:
    path = cell.metrics_path(root)
    try:
      with open(path) as f:
        values[(cell.category, group_label(cell), cell.seed)] = json.load(f)
      continue
    except (OSError, ValueError):
      pass
    status = runner.read_status(root, cell)
    if status.get('status') == runner.FAILED:
      failed.append((cell.name, status.get('error', '')))
    else:
      missing.append(cell.name)
  unique = lambda xs: list(dict.fromkeys(xs))
  return Table(unique(c.category for c in cells), unique(map(group_label, cells)),
               unique(c.seed for c in cells), values, missing, failed)


def _rows(table: Table, key: str) -> list[list[str]]:
  out = []
  for category in table.categories + [MEAN]:
    row = [category]
    for group in table.groups:
      for stage, _ in STAGES:
        row.append(table.stat(category, group, stage, key).text(
            signed=stage == 'delta'))
    out.append(row)
  return out


def _overview_rows(table: Table) -> list[list[str]]:
  """Rows whose entries hold all four metrics' means, 'a / b / c / d'."""
  out = []
  for category in table.categories + [MEAN]:
    row = [category]
    for group in table.groups:
      for stage, _ in STAGES:
        stats = [table.stat(category, group, stage, k) for k, _ in METRICS]
        row.append(' / '.join(
            dataclasses.replace(st, n=min(st.n, 1)).text(stage == 'delta')
            for st in stats) if any(st.n for st in stats) else '–')
    out.append(row)
  return out


def _headings(table: Table) -> list[str]:
  return ['category'] + [f'{g} {h}'.strip() for g in table.groups
                         for _, h in STAGES]


def _status_lines(table: Table) -> list[str]:
  lines = [f'failed: {name}: {error}' for name, error in table.failed]
  lines += [f'missing: {name}' for name in table.missing]
  return lines


def markdown(table: Table, title: str) -> str:
  done = len(table.values)
  total = done + len(table.missing) + len(table.failed)
  out = [f'# {title}', '',
         f'{done} of {total} cells done; seeds {table.seeds}. Mean row: mean '
         'over categories per seed (only where every category has the cell).',
         '']
  out += ['## All four metrics', '',
          'Each entry: ' + ' / '.join(h for _, h in METRICS)
          + (' (means over seeds; ± std in the tables below).'
             if len(table.seeds) > 1 else '.'), '',
          '| ' + ' | '.join(_headings(table)) + ' |',
          '|' + '---|' * (1 + 3 * len(table.groups))]
  out += ['| ' + ' | '.join(r) + ' |' for r in _overview_rows(table)]
  out.append('')
  for key, heading in METRICS:
    out += [f'## {heading}', '', '| ' + ' | '.join(_headings(table)) + ' |',
            '|' + '---|' * (1 + 3 * len(table.groups))]
    out += ['| ' + ' | '.join(r) + ' |' for r in _rows(table, key)]
    out.append('')
  lines = _status_lines(table)
  if lines:
    out += ['## Not in the table', ''] + [f'- {l}' for l in lines] + ['']
  return '\n'.join(out)


def csv_text(table: Table) -> str:
  """One row per category and the mean; a column per group, stage and metric
  (full precision), with `_std` and `_n` columns."""
  import csv  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  columns = [(g, s, k) for g in table.groups for s, _ in STAGES
             for k, _ in METRICS]
  header = ['category']
  for g, s, k in columns:
    header += [f'{g}/{s}/{k}', f'{g}/{s}/{k}_std', f'{g}/{s}/{k}_n']
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(header)
  for category in table.categories + [MEAN]:
    row = [category]
    for g, s, k in columns:
      st = table.stat(category, g, s, k)
      row += [repr(st.mean) if st.n else '',
              repr(st.std) if st.n > 1 else '', st.n]
    writer.writerow(row)
  return buf.getvalue()


def _delta_plot(table: Table) -> bytes:
  panels = []
  for key, heading in METRICS:
    series = {g: [table.stat(c, g, 'delta', key).mean for c in table.categories]
              for g in table.groups}
    panels.append((heading, table.categories, series))
  return plots.grouped_bars_png(panels, '+FAS − coarse')


def html(table: Table, title: str, links: dict[str, str]) -> str:
  body = [f'<h1>{pages.esc(title)}</h1>',
          f'<p class="muted">Written {pages.now()}. {len(table.values)} cells '
          f'done; seeds {pages.esc(table.seeds)}.</p>']
  for key, heading in METRICS:
    body.append(f'<h2>{pages.esc(heading)}</h2><table><tr>'
                + ''.join(f'<th>{pages.esc(h)}</th>' for h in _headings(table))
                + '</tr>')
    for row in _rows(table, key):
      body.append('<tr><th>' + pages.esc(row[0]) + '</th>' + ''.join(
          f'<td class="n">{pages.esc(v)}</td>' for v in row[1:]) + '</tr>')
    body.append('</table>')
  if table.values:
    body += ['<h2>+FAS delta per category</h2>',
             pages.img(pages.data_uri(_delta_plot(table), 'image/png'),
                       'bar chart of the +FAS deltas', 'plot')]
  lines = _status_lines(table)
  if lines:
    body += ['<h2>Not in the table</h2><ul>'] + [
        f'<li class="bad">{pages.esc(l)}</li>' for l in lines] + ['</ul>']
  if links:
    body += ['<h2>Cell reports</h2><ul>'] + [
        f'<li><a href="{pages.esc(href)}">{pages.esc(name)}</a></li>'
        for name, href in links.items()] + ['</ul>']
  return pages.document(title, body)


def write(root: str, cells: list[Cell], title: str) -> Table:
  """Writes results.md, results.csv and results.html under `root`."""
  table = collect(root, cells)
  links = {c.name: f'{c.name}/{c.eval_folder}/report.html' for c in cells
           if (c.category, group_label(c), c.seed) in table.values}
  fileio.write_text(os.path.join(root, 'results.md'), markdown(table, title))
  fileio.write_text(os.path.join(root, 'results.csv'), csv_text(table))
  fileio.write_text(os.path.join(root, 'results.html'),
                    html(table, title, links))
  return table
