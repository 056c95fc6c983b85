"""The HTML reports: self-contained, the metrics.json numbers, the worst cases."""

import base64
import csv
import html.parser
import io
import json
import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from tasad_jax.evaluation import evaluate
from tasad_jax.core import metrics
from tasad_jax.reporting import predictions_page


class _Page(html.parser.HTMLParser):
  """Every tag's attributes, the text of each data-key cell, and the gallery
  items (data-file) under each h3 heading."""

  def __init__(self, text):
    super().__init__()
    self.tags, self.cells, self.sections = [], {}, {}
    self._key = self._heading = None
    self._in_h3 = False
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append((tag, attrs))
    if 'data-key' in attrs:
      self._key = attrs['data-key']
      self.cells[self._key] = ''
    if tag == 'h3':
      self._in_h3, self._heading = True, ''
    if 'data-file' in attrs:
      self.sections.setdefault(self._heading, []).append(attrs['data-file'])

  def handle_endtag(self, tag):
    if tag in ('td', 'th'):
      self._key = None
    if tag == 'h3':
      self._in_h3 = False

  def handle_data(self, data):
    if self._key is not None:
      self.cells[self._key] += data
    if self._in_h3:
      self._heading += data


def _check_self_contained(text):
  assert not re.search(r'https?://', text)
  page = _Page(text)
  assert not [t for t, _ in page.tags if t in ('script', 'link', 'iframe')]
  images = 0
  for tag, attrs in page.tags:
    for name in ('src', 'href'):
      value = attrs.get(name)
      if value is None:
        continue
      assert not value.startswith('//') and not re.match(
          r'[a-z]+:', value) or value.startswith('data:'), value
      if value.startswith('data:'):
        head, data = value.split(',', 1)
        assert head.startswith('data:image/') and head.endswith(';base64')
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
          im.load()
        images += tag == 'img'
  return page, images


@pytest.fixture(scope='module')
def evaluated(tiny_workdir, tmp_path_factory):
  """The tiny workdir evaluated in a copy: (workdir, metrics.json, the test
  split and the inference outputs the report was made from)."""
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('report') / 'run')
  shutil.copytree(tiny_workdir, workdir)
  seen = {}
  original = evaluate.run_inference

  def spy(config, path, split):
    seen['split'], seen['outputs'] = split, original(config, path, split)
    return seen['outputs']

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(evaluate, 'run_inference', spy)
    evaluate.evaluate(tiny.get_config(), workdir, ['brick'])
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    values = json.load(f)
  return workdir, values, seen['split'], seen['outputs']


def test_report_opens_offline_and_every_image_decodes(evaluated):
  workdir = evaluated[0]
  with open(os.path.join(workdir, 'eval', 'report.html'), encoding='utf-8') as f:
    page, images = _check_self_contained(f.read())
  # 3 plots, the colour scale, and 5 panels per gallery image.
  assert images >= 4 + 5 * 8


def test_report_numbers_are_those_of_metrics_json(evaluated):
  workdir, values = evaluated[:2]
  with open(os.path.join(workdir, 'eval', 'report.html'), encoding='utf-8') as f:
    text = f.read()
  page = _Page(text)
  expected = {}
  for m in ('cas', 'tasad'):
    for k in metrics.METRIC_KEYS:
      expected[f'{m}.{k}'] = values[m][k]
    for defect, row in values[m]['per_defect'].items():
      for k, v in row.items():
        expected[f'{m}.per_defect.{defect}.{k}'] = v
  assert len(expected) == 2 * (len(metrics.METRIC_KEYS) + 2 * 4)
  assert {k: page.cells.get(k) for k in expected} == {
      k: f'{v:.4f}' for k, v in expected.items()}
  assert values['checkpoint_steps'] == {'cas': 6, 'fas': 4}
  assert 'cas 6, fas 4' in text
  assert 'thresholds.json: normal held-out images' in text


def test_gallery_shows_the_worst_missed_defect_and_false_alarm(evaluated):
  workdir, _, split, outputs = evaluated
  with open(os.path.join(workdir, 'eval', 'report.html'), encoding='utf-8') as f:
    page = _Page(f.read())
  scores, labels = outputs['tasad_score'], split['label'] > 0
  name = lambda i: f'{split["defect_type"][i]}/{os.path.basename(split["path"][i])}'
  score_of = {name(i): s for i, s in enumerate(scores)}
  missed = next(v for k, v in page.sections.items() if k.startswith('worst missed'))
  alarms = next(v for k, v in page.sections.items()
                if k.startswith('worst false alarms'))
  # The lowest-scored defective image (any of them, on a tie), and so on.
  assert score_of[missed[0]] == scores[labels].min()
  assert all(n.split('/')[0] != 'good' for n in missed)
  assert score_of[alarms[0]] == scores[~labels].max()
  assert all(n.split('/')[0] == 'good' for n in alarms)
  for defect in ('crack', 'hole', 'scratch', 'stain'):
    shown = page.sections[f'defect type {defect}']
    assert len(shown) == 3 and all(s.startswith(defect + '/') for s in shown)


def test_predict_index_lists_outputs_by_score(tmp_path):
  out = tmp_path / 'out'
  (out / 'heatmaps').mkdir(parents=True)
  rows = [('a b.png', '0.300000', '0'), ('c.png', '0.900000', '1'),
          ('d.png', '0.100000', '0')]
  with open(out / 'scores.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'score', 'decision', 'error'])
    for path, score, decision in rows:
      writer.writerow([path, score, decision, ''])
      Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(
          out / 'heatmaps' / path)
    writer.writerow(['bad.png', '', '', 'bad.png: cannot decode image'])
  stem = lambda p: os.path.splitext(p)[0]
  for inline_limit, inline_images in ((10, 3), (1, 0)):
    predictions_page.write_predict_index(str(out), stem, inline_limit=inline_limit)
    text = (out / 'index.html').read_text(encoding='utf-8')
    page, images = _check_self_contained(text)
    order = [a['data-path'] for t, a in page.tags if 'data-path' in a]
    assert order == ['c.png', 'a b.png', 'd.png', 'bad.png']
    assert images == inline_images
    linked = [a['src'] for t, a in page.tags if t == 'img'
              and not a['src'].startswith('data:')]
    assert all(os.path.exists(out / l.replace('%20', ' ')) for l in linked)
