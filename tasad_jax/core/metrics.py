"""Exact image- and pixel-level anomaly metrics on NumPy arrays.

AUROC and AP equal scikit-learn's `roc_auc_score` / `average_precision_score`
(ties included); F1-max is the best F1 over every distinct threshold; AUPRO is
the MVTec AD evaluation's: 8-connected ground-truth regions each weigh the same,
the false positive rate is over all normal pixels of the category, the curve
has a point at every distinct score, and its area up to `fpr_limit` (trapezoid,
interpolated at the limit) is divided by `fpr_limit`, never by the last FPR
reached. Pixel IoU = TP / (TP + FP + FN) of the pooled pixels, at a given
threshold (`iou_at`) or the best over every distinct threshold (`best_iou`).

All pixel metrics come from one descending sort of the pooled scores, so a
category of 13M pixels is scored in a few seconds. Maps and masks are arrays
[N, H, W], or sequences of arrays of different sizes, one per image (the
'pad' and 'tile' resize modes, `tasad_jax.core.tiling`): pixels are pooled in the
same order either way, and only pixels of the images themselves are given.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from tasad_jax.core import tiling

METRIC_KEYS = ('image_auroc', 'image_ap', 'pixel_auroc', 'pixel_ap', 'aupro',
               'pixel_f1_max', 'pixel_iou_best')


def _is_ragged(values) -> bool:
  return isinstance(values, (list, tuple)) or (
      isinstance(values, np.ndarray) and values.dtype == object)


def pooled(values, dtype=None) -> np.ndarray:
  """The values of an array, or of a sequence of arrays (one per image), 1-D."""
  if not _is_ragged(values):
    return np.asarray(values, dtype).ravel()
  parts = [np.asarray(v, dtype).ravel() for v in values]
  return np.concatenate(parts) if parts else np.zeros(0, dtype)


def per_image(values, dtype=None):
  """[N, H, W] (a trailing channel axis of 1 dropped), or for ragged input a
  1-D object array of [H_i, W_i] arrays."""
  if _is_ragged(values):
    images = [np.asarray(v, dtype) for v in values]
    return tiling.ragged([v[..., 0] if v.ndim == 3 else v for v in images])
  values = np.asarray(values, dtype)
  return values[..., 0] if values.ndim == 4 else values


def _maps_and_masks(anomaly_maps, masks):
  """float64 maps and bool masks per image ([N, H, W], or ragged); a single
  map [H, W] becomes a batch of one."""
  maps, masks = per_image(anomaly_maps, np.float64), per_image(masks, bool)
  if not _is_ragged(maps) and maps.ndim == 2:
    maps, masks = maps[None], masks[None]
  return maps, masks


def _check(scores, labels):
  scores = pooled(scores, np.float64)
  labels = pooled(labels).astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} differ')
  if not np.isfinite(scores).all():
    raise ValueError('scores contain NaN or infinity')
  return scores, labels


def _curve(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None):
  """Cumulative positives and negatives above each distinct threshold.

  Returns:
    (order, ends, tps, fps): the descending order, the index in that order of
    the last element of each tie group, and the counts of positives and
    negatives scored at or above each group's score.
  """
  order = np.argsort(-scores, kind='stable')
  s = scores[order]
  ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
  l = labels[order]
  tps = np.cumsum(l)[ends]
  fps = (ends + 1) - tps
  return order, ends, tps, fps


def _undefined(name: str) -> float:
  warnings.warn(f'{name} is undefined: the labels hold a single class',
                RuntimeWarning, stacklevel=3)
  return float('nan')


def _auroc_from(tps, fps) -> float:
  tpr = np.r_[0.0, tps / tps[-1]]
  fpr = np.r_[0.0, fps / fps[-1]]
  return float(np.trapezoid(tpr, fpr))


def _ap_from(tps, fps) -> float:
  precision = tps / (tps + fps)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1_best(tps, fps) -> tuple[float, int]:
  """The best F1 over the curve and the index of its threshold group."""
  precision = tps / (tps + fps)
  recall = tps / max(tps[-1], 1)
  f1 = np.where(precision + recall > 0,
                2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)
  best = int(np.argmax(f1))
  return float(f1[best]), best


def _f1_from(tps, fps) -> float:
  return _f1_best(tps, fps)[0]


def _iou_best_from(tps, fps) -> float:
  """The best pixel IoU, TP / (TP + FP + FN), over the curve's thresholds."""
  return float(np.max(tps / (fps + tps[-1])))  # TP + FN = all positives.


def iou_at(anomaly_maps, masks, threshold: float) -> float:
  """Pixel IoU of the region `map >= threshold` with the masks' union;
  NaN (with a warning) when both are empty."""
  scores, labels = _check(anomaly_maps, masks)
  predicted = scores >= threshold
  union = np.count_nonzero(predicted | labels)
  if union == 0:
    return _undefined('IoU')
  return float(np.count_nonzero(predicted & labels) / union)


def best_iou(anomaly_maps, masks) -> float:
  """The best pixel IoU over every threshold; NaN without positives."""
  return _score(anomaly_maps, masks, 'IoU', _iou_best_from, need_negatives=False)


def _threshold_at(scores, order, ends, tps, fps) -> float:
  return float(scores[order[ends[_f1_best(tps, fps)[1]]]])


def curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The points of the ROC and PR curves, from one descending sort.

  Returns:
    (thresholds, tps, fps): each distinct score, descending, with the counts
    of positives and negatives scored at or above it.
  """
  scores, labels = _check(scores, labels)
  order, ends, tps, fps = _curve(scores, labels)
  return scores[order[ends]], tps, fps


def f1_optimal_threshold(scores, labels) -> float:
  """The score threshold (inclusive) that maximises F1 on labelled data."""
  scores, labels = _check(scores, labels)
  return _threshold_at(scores, *_curve(scores, labels))


def _single_class(labels) -> bool:
  return labels.all() or not labels.any()


def _score(scores, labels, name: str, from_curve, need_negatives: bool) -> float:
  scores, labels = _check(scores, labels)
  if not labels.any() or (need_negatives and labels.all()):
    return _undefined(name)
  _, _, tps, fps = _curve(scores, labels)
  return from_curve(tps, fps)


def auroc(scores, labels) -> float:
  """Area under the ROC curve; NaN with a warning for a single class."""
  return _score(scores, labels, 'AUROC', _auroc_from, need_negatives=True)


def average_precision(scores, labels) -> float:
  """Average precision (step-wise, as scikit-learn); NaN without positives."""
  return _score(scores, labels, 'AP', _ap_from, need_negatives=False)


def f1_max(scores, labels) -> float:
  """The best F1 score over all thresholds; NaN without positives."""
  return _score(scores, labels, 'F1-max', _f1_from, need_negatives=False)


def _regions(masks) -> tuple[np.ndarray, int]:
  """8-connected regions of each mask [H, W], numbered across images (0 =
  normal), pooled as `pooled` pools the masks."""
  parts, count = [], 0
  structure = np.ones((3, 3), bool)
  for mask in masks:
    labelled, n = ndimage.label(mask, structure=structure)
    parts.append(np.where(labelled > 0, labelled + count, 0).ravel())
    count += n
  return (np.concatenate(parts).astype(np.int64) if parts
          else np.zeros(0, np.int64)), count


def _trapezoid_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
  """Area under y(x) from 0 to `limit`, interpolating y at the limit."""
  keep = x <= limit
  xs, ys = x[keep], y[keep]
  if xs[-1] < limit and keep.sum() < len(x):
    j = keep.sum()
    t = (limit - x[j - 1]) / (x[j] - x[j - 1])
    xs = np.r_[xs, limit]
    ys = np.r_[ys, y[j - 1] + t * (y[j] - y[j - 1])]
  return float(np.trapezoid(ys, xs))


def _aupro_sorted(order, ends, regions, num_regions, region_sizes, fpr_limit):
  flat = regions[order]
  normal = flat == 0
  pro_step = np.where(normal, 0.0,
                      1.0 / (region_sizes[flat] * num_regions))
  fpr = np.cumsum(normal)[ends] / normal.sum()
  pro = np.cumsum(pro_step)[ends]
  return _trapezoid_to(np.r_[0.0, fpr], np.r_[0.0, pro], fpr_limit) / fpr_limit


def aupro(anomaly_maps, masks, fpr_limit: float = 0.3) -> float:
  """Normalised area under the per-region-overlap curve up to `fpr_limit`."""
  maps, masks = _maps_and_masks(anomaly_maps, masks)
  if [m.shape for m in maps] != [m.shape for m in masks]:
    raise ValueError('maps and masks differ in shape')
  if not 0 < fpr_limit <= 1:
    raise ValueError(f'fpr_limit must be in (0, 1], got {fpr_limit}')
  regions, n = _regions(masks)
  scores, flat = _check(maps, masks)
  if n == 0 or flat.all():
    return _undefined('AUPRO')
  sizes = np.bincount(regions, minlength=n + 1).astype(np.float64)
  order, ends, _, _ = _curve(scores, flat)
  return _aupro_sorted(order, ends, regions, n, sizes, fpr_limit)


def evaluate_maps(anomaly_maps, masks, image_scores, labels,
                  fpr_limit: float = 0.3) -> dict[str, float]:
  """All metrics of a category (see `evaluate_maps_and_thresholds`)."""
  return evaluate_maps_and_thresholds(anomaly_maps, masks, image_scores, labels,
                                      fpr_limit)[0]


def evaluate_maps_and_thresholds(anomaly_maps, masks, image_scores, labels,
                                 fpr_limit: float = 0.3
                                 ) -> tuple[dict[str, float], dict[str, float]]:
  """All metrics of a category: image AUROC/AP, pixel AUROC/AP/F1-max, AUPRO,
  and the F1-optimal image and pixel thresholds, sorting the pixels once.

  Args:
    anomaly_maps: [N, H, W] (or [N, H, W, 1]) pixel scores, or one array per
      image when sizes differ.
    masks: like `anomaly_maps`, ground truth, nonzero = anomalous.
    image_scores: [N] image scores.
    labels: [N] image labels, 1 = anomalous.
    fpr_limit: AUPRO's integration limit.

  Returns:
    (a dict with the keys of METRIC_KEYS, {'image', 'pixel'} thresholds);
    'pixel_iou_best' is the best pixel IoU over all thresholds;
    undefined metrics and thresholds (a single class) are NaN, with a
    RuntimeWarning.
  """
  maps, masks = _maps_and_masks(anomaly_maps, masks)
  result = {'image_auroc': auroc(image_scores, labels),
            'image_ap': average_precision(image_scores, labels)}
  image_scores, labels = _check(image_scores, labels)
  found = {'image': float('nan') if _single_class(labels) else
           _threshold_at(image_scores, *_curve(image_scores, labels))}
  scores, flat = _check(maps, masks)
  if _single_class(flat):
    for key in ('pixel_auroc', 'pixel_ap', 'aupro', 'pixel_f1_max',
                'pixel_iou_best'):
      result[key] = _undefined(key)
    return result, dict(found, pixel=float('nan'))
  order, ends, tps, fps = _curve(scores, flat)
  result['pixel_auroc'] = _auroc_from(tps, fps)
  result['pixel_ap'] = _ap_from(tps, fps)
  result['pixel_f1_max'] = _f1_from(tps, fps)
  result['pixel_iou_best'] = _iou_best_from(tps, fps)
  found['pixel'] = _threshold_at(scores, order, ends, tps, fps)
  regions, n = _regions(masks)
  sizes = np.bincount(regions, minlength=n + 1).astype(np.float64)
  result['aupro'] = _aupro_sorted(order, ends, regions, n, sizes, fpr_limit)
  return result, found
