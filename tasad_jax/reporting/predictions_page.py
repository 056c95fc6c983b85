"""`predict.py`'s index page: the predictions of a folder by score, each
with its heat map (one self-contained file up to `inline_limit` rows)."""

from __future__ import annotations

import csv
import heapq
import os
import urllib.parse

from PIL import Image

from tasad_jax.reporting import pages
from tasad_jax.runtime import fileio


def write_predict_index(output: str, name_of, limit: int = 1000,
                        inline_limit: int = 200, thumb: int = 128) -> None:
  """Writes `<output>/index.html`: the predictions of `scores.csv`, highest
  score first, each with its heat map.

  Reads scores.csv back (memory bounded by `limit`). With at most
  `inline_limit` rows the heat maps are inline thumbnails (the page is one
  file); above, they are relative links to `heatmaps/*.png`.

  Args:
    output: predict.py's output folder (scores.csv, heatmaps/, masks/).
    name_of: the output file stem (no extension) of an input path.
    limit: the most scored rows listed (the highest scored); errors follow.
    inline_limit: the most rows whose thumbnails are inlined.
    thumb: thumbnail size in pixels.
  """
  total = 0
  errors = []

  def scored():
    nonlocal total
    with open(os.path.join(output, 'scores.csv'), newline='') as f:
      for n, row in enumerate(csv.DictReader(f)):
        if row['error']:
          if len(errors) < limit:
            errors.append(row)
          continue
        total += 1
        yield float(row['score']), -n, row

  rows = [r for _, _, r in heapq.nlargest(limit, scored())]
  inline = len(rows) <= inline_limit
  shown = (f'all {total} scored images' if len(rows) == total else
           f'the {len(rows)} highest-scored of {total} images (all in scores.csv)')
  how = ('thumbnails inline (this page is one file)' if inline else
         'thumbnails link to heatmaps/ beside this page')
  body = ['<h1>Predictions</h1>',
          f'<p>{pages.esc(shown)}, highest score first; {pages.esc(how)}.</p>',
          '<table class="predictions"><tr><th>#</th><th>heat map</th><th>path</th>'
          '<th>score</th><th>decision</th></tr>']
  decisions = {'1': 'defect', '0': 'normal', '': 'no threshold'}
  for rank, row in enumerate(rows, 1):
    stem = name_of(row['path'])
    rel = f'heatmaps/{stem}.png'
    src = urllib.parse.quote(rel)
    if inline and os.path.exists(os.path.join(output, rel)):
      with Image.open(os.path.join(output, rel)) as im:
        src = pages.jpeg(im if im.mode == 'RGB' else im.convert('RGB'), thumb)
    links = f'<a href="{pages.esc(urllib.parse.quote(rel))}">heat map</a>'
    if os.path.exists(os.path.join(output, 'masks', stem + '.png')):
      links += f' <a href="{pages.esc(urllib.parse.quote(f"masks/{stem}.png"))}">mask</a>'
    body.append(
        f'<tr data-path="{pages.esc(row["path"])}"><td class="n">{rank}</td>'
        f'<td>{pages.img(src, row["path"])}</td><td>{pages.esc(row["path"])}<br>{links}</td>'
        f'<td class="n">{pages.esc(row["score"])}</td>'
        f'<td>{pages.esc(decisions.get(row["decision"], row["decision"]))}</td></tr>')
  body.append('</table>')
  if errors:
    body.append('<h2>Unreadable files</h2><table class="errors">'
                '<tr><th>path</th><th>error</th></tr>' + ''.join(
                    f'<tr data-path="{pages.esc(r["path"])}"><td>{pages.esc(r["path"])}</td>'
                    f'<td>{pages.esc(r["error"])}</td></tr>' for r in errors) + '</table>')
  fileio.write_text(os.path.join(output, 'index.html'), pages.document('Predictions', body))
