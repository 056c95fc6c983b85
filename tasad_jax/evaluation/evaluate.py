"""Evaluation of trained stages on a category's test split.

Restores the latest coarse and FAS checkpoints of a training workdir, runs the
test split through the two-stage inference (batched, jitted, sharded), and
reports the metrics of the coarse stage alone ('cas') and of coarse+FAS
('tasad'); the table names them after the coarse method ('cas' and 'tasad', or
e.g. 'destseg' and 'destseg+fas'):
an aligned table on stdout, `<workdir>/eval/metrics.json`, a self-contained
`<workdir>/eval/report.html` (see `report`), heat-map PNGs under
`<workdir>/eval/heatmaps/` and the same figures as TensorBoard images. Without a
FAS checkpoint only the coarse stage is evaluated, and the table says so.
Nothing is written unless the whole evaluation succeeds.

With `config.data.resize` 'pad' or 'tile' (`tasad_jax.core.tiling`), the maps are
the padded or tiled images' maps cropped or stitched back to each image, and
pixel metrics are computed at the evaluation resolution (the working
resolution, its long side capped at `config.eval.max_side`), over the images'
own pixels only.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging
import jax
import numpy as np

from tasad_jax.config import saved, schema
from tasad_jax.data import splits
from tasad_jax.core import names
from tasad_jax.runtime import preemption, distributed, fileio
from tasad_jax.inference import (two_stage, thresholds,
                                 whole_image)
from tasad_jax.data import weak_labels
from tasad_jax import methods
from tasad_jax.core import metrics, sharding, tiling
from tasad_jax.reporting import html_report, heatmaps
from tasad_jax.data import imageio, layouts
from tasad_jax.runtime.errors import UserInputError

# Table columns: the metrics of every evaluation, then the pixel IoU at the
# normal-data pixel threshold of thresholds.json (NaN without one).
TABLE_KEYS = metrics.METRIC_KEYS + ('pixel_iou_at_threshold',)


def method_label(method: str, coarse: str) -> str:
  """The table row of output key `method` ('cas' or 'tasad') of a coarse
  method: 'cas'/'tasad' for TASAD, e.g. 'destseg'/'destseg+fas' otherwise."""
  return html_report.method_labels(coarse)[method]


def _check_split(split: dict, where: str, good: str) -> None:
  """`where`, `good`: the test split's source and its normal images'."""
  labels = split['label']
  if len(labels) == 0:
    raise UserInputError(f'{where}: no test images')
  if labels.all():
    raise UserInputError(f'{good}: no good test image; image metrics '
                         'need both classes')
  if not labels.any():
    raise UserInputError(f'{where}: no defect images; pixel metrics need '
                         'anomalies')


def run_inference(config, workdir: str, split: dict) -> dict[str, np.ndarray]:
  """Maps and scores of the whole test split, for 'cas' and (if trained)
  'tasad'; with 'pad' and 'tile', maps of the masks' sizes."""
  saved.check_matches(config, workdir)
  runner = two_stage.TwoStage.from_workdir(config, workdir, sharding.make_mesh())
  return whole_image.run_images(
      runner, tiling.Geometry.from_config(config), split['image'],
      config.eval.batch_size, [m.shape[:2] for m in split['mask']])


def _images_at_map_size(split: dict) -> dict:
  """The split with its images resized to their masks' size, for figures
  ('pad' and 'tile', whose masks are at the evaluation resolution)."""
  if split['image'].dtype != object:
    return split
  return dict(split, image=tiling.ragged([
      imageio.resize_image(x, m.shape[:2])
      for x, m in zip(split['image'], split['mask'])]))


def compute_metrics(split: dict, outputs: dict, fpr_limit: float,
                    trained_thresholds: dict | None = None) -> dict:
  """The metric dicts of each evaluated method, with a per-defect breakdown.

  With `trained_thresholds` (thresholds.json), 'pixel_iou_at_threshold' is the
  pixel IoU at that method's normal-data pixel threshold (NaN when it has none).
  """
  masks = metrics.per_image(split['mask'], bool)
  labels = split['label']
  result = {}
  for method in names.OUTPUTS:
    if f'{method}_map' not in outputs:
      continue
    maps, scores = outputs[f'{method}_map'], outputs[f'{method}_score']
    values, f1_thresholds = metrics.evaluate_maps_and_thresholds(
        maps, masks, scores, labels, fpr_limit)
    per_defect = {}
    good = split['defect_type'] == 'good'
    for defect in sorted(set(split['defect_type'][labels > 0])):
      rows = split['defect_type'] == defect
      both = rows | good
      per_defect[defect] = {
          'image_auroc': metrics.auroc(scores[both], labels[both]),
          'pixel_ap': metrics.average_precision(maps[rows], masks[rows]),
      }
    result[method] = {k: float(v) for k, v in values.items()}
    pixel_t = thresholds.pixel_threshold(trained_thresholds, method)
    result[method]['pixel_iou_at_threshold'] = (
        float('nan') if pixel_t is None else metrics.iou_at(maps, masks, pixel_t))
    result[method]['per_defect'] = per_defect
    result[method]['f1_optimal_thresholds'] = f1_thresholds
  return result


def format_table(report: dict) -> str:
  """An aligned text table: one row per (category, method), one column per metric."""
  rows = [('category', 'method') + TABLE_KEYS]
  for entry in report['categories'] if 'categories' in report else [report]:
    for method in names.OUTPUTS:
      if method in entry:
        label = method_label(method, entry['coarse'])
        rows.append((entry['category'], label) + tuple(
            f'{entry[method].get(k, float("nan")):.4f}' for k in TABLE_KEYS))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _visual_indices(split: dict, count: int) -> list[int]:
  """Up to `count` test images, taken round-robin over the defect types."""
  by_type: dict[str, list[int]] = {}
  for i, defect in enumerate(split['defect_type']):
    by_type.setdefault(defect, []).append(i)
  order = sorted(by_type, key=lambda d: (d == 'good', d))
  chosen = []
  while len(chosen) < count and any(by_type[d] for d in order):
    for d in order:
      if by_type[d] and len(chosen) < count:
        chosen.append(by_type[d].pop(0))
  return chosen


def _write_heatmaps(split, outputs, folder, count, writer, coarse: str,
                    ranges: dict[str, tuple[float, float]]) -> list[str]:
  """Heat-map PNGs of `count` test images, each method's maps on its colour
  scale `ranges` (the report's)."""
  shown = names.present(outputs)
  labels = {m: method_label(m, coarse) for m in shown}
  os.makedirs(folder, exist_ok=True)
  written, images = [], {}
  for i in _visual_indices(split, count):
    stem = os.path.splitext(os.path.basename(split['path'][i]))[0]
    name = f'{split["defect_type"][i]}_{stem}'
    fig = heatmaps.figure(split['image'][i] / 255.0, split['mask'][i][..., 0],
                           {m: outputs[f'{m}_map'][i] for m in shown}, ranges,
                           f'{split["defect_type"][i]}/{stem}  ' + '  '.join(
                               f'{m} score {outputs[f"{m}_score"][i]:.3f}'
                               for m in shown), labels)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    Image.fromarray(fig).save(os.path.join(folder, name + '.png'))
    written.append(name + '.png')
    images[f'heatmaps/{name}'] = fig[None].astype(np.float32) / 255.0
  if writer is not None and images:
    writer.write_images(0, images)
  return written


def evaluate_category(config, workdir: str) -> dict:
  """Evaluates one category; writes `<workdir>/eval/` atomically; returns the report."""
  if not os.path.isdir(workdir):
    raise UserInputError(f'{workdir}: workdir not found')
  if not config.eval.while_training:
    preemption.refuse_if_locked(workdir, hint=(
        'wait for it, or evaluate the checkpoints it has finished with '
        '--config.eval.while_training=True'))
  split = splits.load_split(config, 'test')
  # Real defects used in training (weak supervision) are not evaluated.
  split, excluded = weak_labels.exclude(config, workdir, split)
  _check_split(split, *layouts.test_location(config))
  outputs = run_inference(config, workdir, split)
  split = _images_at_map_size(split)
  report = {'category': config.data.category,
            'coarse': methods.name_of(config),
            'image_size': config.data.image_size,
            'num_images': int(len(split['label'])),
            'labelled_anomalies_excluded': excluded}
  geometry = tiling.Geometry.from_config(config)
  if geometry.mode != 'squash':  # Squash keeps metrics.json as it was.
    report['resize'] = dict(dataclasses.asdict(geometry),
                            stride=geometry.tile_stride)
  trained = thresholds.load(workdir)
  report.update(compute_metrics(split, outputs, config.eval.aupro_fpr_limit,
                                trained))
  if trained is not None:
    report['trained_thresholds'] = trained
  report['checkpoint_steps'] = html_report.checkpoint_steps(workdir)
  if names.TWO_STAGE not in report:
    report['note'] = 'no FAS checkpoint: coarse stage only'
  if jax.process_index() == 0:
    _publish(config, workdir, split, outputs, report)
  return report


def _publish(config, workdir, split, outputs, report) -> None:
  """Writes metrics.json, heat maps and TensorBoard images, all or nothing."""
  from tasad_jax.runtime.tf_host import metric_writers  # pylint: disable=g-import-not-at-top
  final = os.path.join(workdir, config.eval.folder)

  scales = html_report.map_scales(outputs)  # One scale for PNGs and page.

  def build(tmp):
    writer = metric_writers.create_default_writer(os.path.join(tmp, 'logs'))
    report['heatmaps'] = _write_heatmaps(split, outputs,
                                         os.path.join(tmp, 'heatmaps'),
                                         config.eval.num_visualizations, writer,
                                         report['coarse'], scales)
    writer.close()
    fileio.write_json(os.path.join(tmp, 'metrics.json'), report)
    html_report.write_category_report(os.path.join(tmp, 'report.html'), split,
                                     outputs, report, config, scales=scales)

  fileio.atomic_dir(final, build)
  logging.info('Wrote %s', os.path.join(final, 'metrics.json'))


def mean_report(reports: list[dict]) -> dict:
  """The mean of each metric over categories, per method."""
  mean = {'category': 'mean', 'coarse': reports[0]['coarse'],
          'num_images': sum(r['num_images'] for r in reports),
          'labelled_anomalies_excluded': sum(
              r.get('labelled_anomalies_excluded', 0) for r in reports)}
  for method in names.OUTPUTS:
    rows = [r[method] for r in reports if method in r]
    if len(rows) == len(reports):
      mean[method] = {k: float(np.mean([r.get(k, np.nan) for r in rows]))
                      for k in TABLE_KEYS}
  return mean


def evaluate(config, workdir: str, categories: list[str]) -> dict:
  """Evaluates each category (in `workdir/<category>` when several).

  Returns the report of the single category, or {'categories': [...], 'mean'}
  (also written to `<workdir>/eval/summary.json`) for several.
  """
  distributed.initialize(config)
  schema.check(config, schema.EVALUATE)
  if len(categories) == 1:
    config = config.copy_and_resolve_references()
    config.data.category = categories[0]
    report = evaluate_category(config, workdir)
    if jax.process_index() == 0:
      note = weak_labels.note(report)
      print(format_table(report) + ('\n' + report['note'] if 'note' in report else '')
            + ('\n' + note if note else ''))
    return report
  reports = []
  for name in categories:
    c = config.copy_and_resolve_references()
    c.data.category = name
    reports.append(evaluate_category(c, os.path.join(workdir, name)))
  summary = {'categories': reports + [mean_report(reports)]}
  if jax.process_index() == 0:
    note = weak_labels.note(summary['categories'][-1])
    print(format_table(summary) + ('\n' + note if note else ''))
    folder = config.eval.folder
    fileio.write_json(os.path.join(workdir, folder, 'summary.json'), summary)
    html_report.write_index(os.path.join(workdir, folder, 'index.html'), summary,
                           {n: f'../{n}/{folder}/report.html' for n in categories})
  return summary
