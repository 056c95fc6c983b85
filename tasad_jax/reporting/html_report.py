"""Self-contained HTML evaluation reports: one page per category, an index.

An inspection engineer wants to see where the model fails and where to put
the threshold. `write_category_report` writes one HTML page per evaluated
category: the metrics (per defect type too), the config, checkpoint steps and
data counts; image ROC/PR and pixel PR curves with the thresholds marked; the
image-score histogram; and a gallery of the worst missed defects, the worst
false alarms and a few images of each defect type, each method's maps on one
colour scale for the whole page, stated there. Images and plots are inline
(base64), there is no script and nothing is fetched from the network, so the
page opens offline and can be mailed as one file. Plots are drawn with
matplotlib, imported lazily in `reporting.plots`; `predict.py`'s page is
`reporting.predictions_page`.
"""

from __future__ import annotations

import json
import os
import urllib.parse

import numpy as np

from tasad_jax.core import metrics, names
from tasad_jax.reporting import heatmaps, pages
from tasad_jax.runtime import fileio

def checkpoint_steps(workdir: str) -> dict[str, int]:
  """The latest step of each stage checkpointed under `<workdir>/checkpoints`."""
  from tasad_jax.runtime import checkpointing  # pylint: disable=g-import-not-at-top
  root = os.path.join(workdir, 'checkpoints')
  steps = {}
  for stage in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    if not os.path.isdir(os.path.join(root, stage)):
      continue
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir, stage))
    try:
      step = ckpt.latest_step()
    finally:
      ckpt.close()
    if step is not None:
      steps[stage] = int(step)
  return steps


def method_labels(coarse: str) -> dict[str, str]:
  """Row names of the 'cas' and 'tasad' outputs of a coarse method."""
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  return dict(zip(names.OUTPUTS, methods.method_class(coarse).row_labels()))


def decision_threshold(report: dict) -> tuple[str, float, str]:
  """(method, image threshold, where it comes from) used for the decisions.

  thresholds.json's image threshold (normal data) when it belongs to the
  final method, else the F1-optimal threshold of this test set.
  """
  final = names.final_output(report)
  trained = report.get('trained_thresholds')
  if (trained and trained.get('method', final) == final
      and np.isfinite(trained.get('image', np.nan))):
    rate = trained.get('target_false_alarm_rate', np.nan)
    return final, float(trained['image']), (
        f'thresholds.json: normal held-out images, target false-alarm rate '
        f'{rate:.2%}')
  why = ('no thresholds.json' if not trained else
         f'thresholds.json is for {trained.get("method")!r}')
  return final, float(report[final]['f1_optimal_thresholds']['image']), (
      f'F1-optimal on this test set ({why})')


def _metrics_tables(report: dict, labels: dict[str, str]) -> list[str]:
  shown = names.present(report)
  head = ''.join(f'<th>{pages.esc(k)}</th>' for k in metrics.METRIC_KEYS)
  rows = [f'<table class="metrics"><tr><th>method</th>{head}</tr>']
  for m in shown:
    cells = ''.join(f'<td class="n" data-key="{m}.{k}">{pages.fmt(report[m][k])}</td>'
                    for k in metrics.METRIC_KEYS)
    rows.append(f'<tr><th>{pages.esc(labels[m])}</th>{cells}</tr>')
  rows.append('</table>')
  defects = sorted(report[shown[0]]['per_defect'])
  keys = ('image_auroc', 'pixel_ap')
  head = ''.join(f'<th>{pages.esc(labels[m])} {k}</th>' for m in shown for k in keys)
  rows.append('<h3>Per defect type (image AUROC against the normal images)</h3>'
              f'<table class="per-defect"><tr><th>defect</th>{head}</tr>')
  for d in defects:
    cells = ''.join(
        f'<td class="n" data-key="{m}.per_defect.{pages.esc(d)}.{k}">'
        f'{pages.fmt(report[m]["per_defect"][d][k])}</td>' for m in shown for k in keys)
    rows.append(f'<tr><th>{pages.esc(d)}</th>{cells}</tr>')
  rows.append('</table>')
  return rows


def _confusion(scores, labels, threshold) -> str:
  flagged = scores >= threshold
  tp, fn = int((flagged & labels).sum()), int((~flagged & labels).sum())
  fp, tn = int((flagged & ~labels).sum()), int((~flagged & ~labels).sum())
  return (f'{tp} of {tp + fn} defective flagged ({fn} missed); '
          f'{fp} of {fp + tn} normal flagged (false alarms)')


def _threshold_table(report, labels, outputs, split_labels) -> list[str]:
  rows = ['<table class="thresholds"><tr><th>method</th><th>threshold</th>'
          '<th>image score</th><th>pixel value</th><th>on this test set</th></tr>']
  trained = report.get('trained_thresholds')
  final = names.final_output(report)
  for m in names.present(report):
    found = report[m]['f1_optimal_thresholds']
    todo = [('F1-optimal (test set)', found)]
    if trained and trained.get('method', final) == m:
      todo.append(('normal data (thresholds.json)', trained))
    for name, t in todo:
      rows.append(f'<tr><th>{pages.esc(labels[m])}</th><td>{pages.esc(name)}</td>'
                  f'<td class="n">{pages.fmt(t["image"])}</td>'
                  f'<td class="n">{pages.fmt(t["pixel"])}</td><td>'
                  + pages.esc(_confusion(outputs[f'{m}_score'], split_labels, t['image']))
                  + '</td></tr>')
  rows.append('</table>')
  return rows


def _counts(split: dict) -> str:
  types = split['defect_type']
  defects = sorted(set(types[split['label'] > 0]))
  per = ', '.join(f'{d} {int((types == d).sum())}' for d in defects)
  return (f'{len(types)} test images: {int((split["label"] == 0).sum())} normal, '
          f'{int((split["label"] > 0).sum())} defective ({per})')


def _file_name(split: dict, i: int) -> str:
  return f'{split["defect_type"][i]}/{os.path.basename(split["path"][i])}'


def gallery_indices(split: dict, scores: np.ndarray, count: int = 4,
                    per_defect: int = 3) -> dict[str, list[int]]:
  """The worst missed defects (lowest-scored defective images), the worst
  false alarms (highest-scored normal images) and, per defect type, images
  spread over its score range (lowest, middle, highest)."""
  labels = split['label'] > 0
  order = np.argsort(scores, kind='stable')
  descending = np.argsort(-scores, kind='stable')
  chosen = {'worst missed defects (lowest-scored defective images)':
                [int(i) for i in order if labels[i]][:count],
            'worst false alarms (highest-scored normal images)':
                [int(i) for i in descending if not labels[i]][:count]}
  for defect in sorted(set(split['defect_type'][labels])):
    rows = [int(i) for i in order if split['defect_type'][i] == defect]
    picks = np.unique(np.linspace(0, len(rows) - 1, min(per_defect, len(rows)))
                      .round().astype(int))
    chosen[f'defect type {defect}'] = [rows[p] for p in picks]
  return chosen


def _gallery(split, outputs, labels, final, threshold, scales,
             sections) -> list[str]:
  shown = names.present(outputs)
  out = []
  for title, indices in sections.items():
    out.append(f'<h3>{pages.esc(title)}</h3>')
    for i in indices:
      image = np.asarray(split['image'][i])
      rgb = image if image.dtype == np.uint8 else (
          np.clip(image, 0, 1) * 255).round().astype(np.uint8)
      mask = split['mask'][i][..., 0] > 0
      gt = rgb.copy()
      gt[mask] = (0.5 * gt[mask] + [127, 0, 0]).astype(np.uint8)
      panels = [('input', rgb), ('ground truth', gt)]
      norm = {m: (outputs[f'{m}_map'][i] - scales[m][0])
                 / (scales[m][1] - scales[m][0]) for m in shown}
      for m in shown:
        panels.append((f'{labels[m]} map', heatmaps.colorize(norm[m])))
      panels.append((f'{labels[final]} overlay',
                     heatmaps.overlay(rgb, norm[final])))
      score = float(outputs[f'{final}_score'][i])
      defective = bool(split['label'][i] > 0)
      flagged = score >= threshold
      verdict = ('correct' if flagged == defective else
                 'missed defect' if defective else 'false alarm')
      scores = ', '.join(f'{pages.esc(labels[m])} score {outputs[f"{m}_score"][i]:.4f}'
                         for m in shown)
      name = _file_name(split, i)
      out.append(
          f'<div class="item" data-file="{pages.esc(name)}"><div><b>{pages.esc(name)}</b> '
          f'({"defective" if defective else "normal"}): {scores}; '
          f'{"flagged" if flagged else "passed"} at {threshold:.4f}: '
          f'<span class="{"ok" if verdict == "correct" else "bad"}">{verdict}'
          '</span></div><div class="panels">' + ''.join(
              f'<figure>{pages.img(pages.jpeg(p), f"{name} {c}")}<figcaption>{pages.esc(c)}'
              '</figcaption></figure>' for c, p in panels) + '</div></div>')
  return out


def map_scales(outputs: dict) -> dict[str, tuple[float, float]]:
  """One colour scale per method for all its maps on the page: the 1st to
  99.9th percentile of its map values over the test split (as the heat-map
  PNGs). Methods differ in range (coarse+FAS adds the FAS map), so one scale
  for both would leave one of them flat."""
  scales = {}
  for m in names.present(outputs):
    values = metrics.pooled(outputs[f'{m}_map'])  # Maps of any sizes.
    if values.size > 4_000_000:  # The percentiles of a fixed subsample suffice.
      values = values[np.random.default_rng(0).choice(values.size, 4_000_000,
                                                      replace=False)]
    lo, hi = np.percentile(values, [1, 99.9])
    scales[m] = (float(lo), float(max(hi, lo + 1e-6)))
  return scales


def _config_text(config) -> str:
  if hasattr(config, 'to_json_best_effort'):
    return config.to_json_best_effort(indent=2, sort_keys=True)
  return json.dumps(config, indent=2, sort_keys=True, default=str)


def write_category_report(path: str, split: dict, outputs: dict, report: dict,
                          config, created: str | None = None,
                          gallery_size: int = 4, per_defect: int = 3,
                          scales: dict | None = None) -> None:
  """Writes the self-contained HTML report of one evaluated category.

  Args:
    path: the HTML file to write.
    split: the test split (image, mask, label, defect_type, path).
    outputs: inference outputs ('cas_map', 'cas_score', 'tasad_*').
    report: the evaluation report (as in metrics.json).
    config: the evaluation config, shown on the page.
    created: the time shown on the page (default: now).
    gallery_size: images in each of the worst-missed and false-alarm rows.
    per_defect: images shown per defect type.
    scales: each method's colour scale (default `map_scales(outputs)`).
  """
  from tasad_jax.reporting import plots  # pylint: disable=g-import-not-at-top
  labels = method_labels(report['coarse'])
  shown = names.present(report)
  final, threshold, source = decision_threshold(report)
  created = created or pages.now()
  scales = scales or map_scales(outputs)
  split_labels = split['label'] > 0
  steps = report.get('checkpoint_steps') or {}
  trained = report.get('trained_thresholds')
  title = f'{report["category"]}: {" vs ".join(labels[m] for m in shown)}'
  body = [f'<h1>Evaluation report: {pages.esc(title)}</h1>',
          f'<p class="muted">evaluated {pages.esc(created)}; coarse method '
          f'{pages.esc(report["coarse"])}; image size {pages.esc(report["image_size"])}; '
          'checkpoint steps ' + (', '.join(f'{pages.esc(k)} {v}'
                                           for k, v in steps.items())
                                 or 'unknown') + '</p>',
          f'<p>{pages.esc(_counts(split))}.' + (
              f' Normal-data thresholds from {trained.get("num_images", "?")} '
              'held-out normal train images.' if trained else '') + '</p>']
  if 'note' in report:
    body.append(f'<p class="bad">{pages.esc(report["note"])}</p>')
  body += ['<h2>Metrics</h2>'] + _metrics_tables(report, labels)
  body += ['<h2>Thresholds</h2>'] + _threshold_table(report, labels, outputs,
                                                     split_labels)
  body.append(f'<p>Decisions below use {pages.esc(labels[final])} at image score '
              f'{threshold:.4f} ({pages.esc(source)}).</p>')
  curves = plots.curves_png(split, outputs, report, labels)
  hist = plots.histogram_png(split_labels, outputs, report, labels)
  bar = plots.colorbar_png(scales, labels)
  body += ['<h2>Curves</h2>',
           '<p class="muted">Circles: F1-optimal threshold of each method; '
           'squares: the normal-data threshold of thresholds.json.</p>',
           pages.img(pages.data_uri(curves, 'image/png'), 'ROC and PR curves', 'plot'),
           '<h2>Image scores</h2>',
           pages.img(pages.data_uri(hist, 'image/png'), 'image score histogram', 'plot')]
  body += ['<h2>Gallery</h2>',
           '<p>The maps of a method use one colour scale on the whole page, '
           'from dark blue to dark red: ' + '; '.join(
               f'{pages.esc(labels[m])} {lo:.4f} to {hi:.4f}'
               for m, (lo, hi) in scales.items())
           + ' (the 1st to 99.9th percentile of its map values on the test '
           'split). Overlays use the map of the decision method.</p>',
           pages.img(pages.data_uri(bar, 'image/png'), 'colour scale', 'plot')]
  body += _gallery(split, outputs, labels, final, threshold, scales,
                   gallery_indices(split, outputs[f'{final}_score'],
                                   gallery_size, per_defect))
  body += ['<h2>Config</h2>', '<details><summary>the evaluation config</summary>'
           f'<pre>{pages.esc(_config_text(config))}</pre></details>']
  fileio.write_text(path, pages.document(f'{title}: evaluation', body))


def write_index(path: str, summary: dict, links: dict[str, str]) -> None:
  """Writes the page linking each category's report, with the summary table.

  Args:
    path: the HTML file to write.
    summary: {'categories': [report, ..., mean]} as in summary.json.
    links: category -> report.html path relative to `path`'s folder.
  """
  head = ''.join(f'<th>{pages.esc(k)}</th>' for k in metrics.METRIC_KEYS)
  body = ['<h1>Evaluation reports</h1>',
          f'<p class="muted">written {pages.esc(pages.now())}</p>',
          '<table class="metrics"><tr><th>category</th><th>method</th>'
          f'{head}</tr>']
  for entry in summary['categories']:
    labels = method_labels(entry['coarse'])
    name = entry['category']
    cell = (f'<a href="{pages.esc(urllib.parse.quote(links[name]))}">{pages.esc(name)}</a>'
            if name in links else pages.esc(name))
    for m in names.OUTPUTS:
      if m in entry:
        cells = ''.join(f'<td class="n">{pages.fmt(entry[m][k])}</td>'
                        for k in metrics.METRIC_KEYS)
        body.append(f'<tr><th>{cell}</th><td>{pages.esc(labels[m])}</td>{cells}</tr>')
  body.append('</table>')
  fileio.write_text(path, pages.document('Evaluation reports', body))
