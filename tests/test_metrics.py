"""Metrics against scikit-learn and a direct implementation of the PRO curve."""

import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from tasad_jax.core import metrics


def _ties(rng, n, levels=7):
  return rng.integers(0, levels, n) / levels  # Few distinct values: many ties.


@pytest.mark.parametrize('seed', range(5))
def test_auroc_ap_f1_equal_scikit_learn_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(500) < 0.3
  for scores in (_ties(rng, 500), rng.normal(size=500) + labels):
    assert metrics.auroc(scores, labels) == pytest.approx(
        skm.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(scores, labels) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12)
    p, r, _ = skm.precision_recall_curve(labels, scores)
    f1 = np.max(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0))
    assert metrics.f1_max(scores, labels) == pytest.approx(f1, abs=1e-12)


def _pro_reference(maps, masks, limit):
  """The PRO definition, threshold by threshold, in plain loops."""
  regions = []
  for mask in masks:
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
    regions += [(len(regions), labelled == k + 1) for k in range(n)]
  normal = ~masks
  fprs, pros = [0.0], [0.0]
  for t in np.unique(maps)[::-1]:
    above = maps >= t
    fprs.append((above & normal).sum() / normal.sum())
    overlaps = []
    for i, mask in enumerate(masks):
      labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
      overlaps += [(above[i] & (labelled == k + 1)).sum() / (labelled == k + 1).sum()
                   for k in range(n)]
    pros.append(np.mean(overlaps))
  fprs, pros = np.array(fprs), np.array(pros)
  area = 0.0
  for j in range(1, len(fprs)):
    x0, x1, y0, y1 = fprs[j - 1], fprs[j], pros[j - 1], pros[j]
    if x0 >= limit:
      break
    if x1 > limit:
      y1 = y0 + (limit - x0) / (x1 - x0) * (y1 - y0)
      x1 = limit
    area += (x1 - x0) * (y0 + y1) / 2
  return area / limit


def _maps_and_masks(seed, n=3, size=12):
  rng = np.random.default_rng(seed)
  masks = np.zeros((n, size, size), bool)
  masks[0, 2:5, 2:6] = True  # Several regions in one image,
  masks[0, 8:11, 7:9] = True
  masks[1, 5:7, 5:7] = True  # one small region, and a normal image.
  maps = _ties(rng, masks.size, levels=11).reshape(masks.shape) + 0.3 * masks
  return maps, masks


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('limit', [0.3, 1.0, 0.05])
def test_aupro_equals_the_definition(seed, limit):
  maps, masks = _maps_and_masks(seed)
  assert metrics.aupro(maps, masks, limit) == pytest.approx(
      _pro_reference(maps, masks, limit), abs=1e-10)


def test_aupro_one_region_and_perfect_maps():
  masks = np.zeros((2, 10, 10), bool)
  masks[0, 3:6, 3:6] = True
  assert metrics.aupro(masks.astype(float), masks) == pytest.approx(1.0)
  assert metrics.aupro(-masks.astype(float), masks) == pytest.approx(0.0)
  # Is normalised by the limit, not the last FPR reached (anomalib #1651):
  # a constant map reaches only FPR 1 at PRO 1, in one step.
  value = metrics.aupro(np.zeros((2, 10, 10)), masks, 0.3)
  assert value == pytest.approx(0.15)


def test_evaluate_maps_keys_and_consistency():
  maps, masks = _maps_and_masks(0)
  labels = masks.reshape(3, -1).any(1).astype(int)
  image_scores = maps.reshape(3, -1).max(1)
  result = metrics.evaluate_maps(maps[..., None], masks[..., None],
                                 image_scores, labels)
  assert set(result) == set(metrics.METRIC_KEYS)
  assert result['pixel_auroc'] == pytest.approx(
      skm.roc_auc_score(masks.ravel(), maps.ravel()))
  assert result['pixel_ap'] == pytest.approx(
      skm.average_precision_score(masks.ravel(), maps.ravel()))
  assert result['aupro'] == pytest.approx(metrics.aupro(maps, masks))
  assert all(0.0 <= v <= 1.0 for v in result.values())


def test_all_normal_gives_nan_with_a_warning():
  maps = np.random.default_rng(0).random((2, 8, 8))
  masks = np.zeros_like(maps, bool)
  with pytest.warns(RuntimeWarning, match='undefined'):
    result = metrics.evaluate_maps(maps, masks, [0.1, 0.2], [0, 0])
  assert all(np.isnan(v) for v in result.values())
  with pytest.warns(RuntimeWarning):
    assert np.isnan(metrics.auroc([0.1, 0.2], [1, 1]))


def test_rejects_nan_scores_and_shape_mismatch():
  with pytest.raises(ValueError, match='NaN'):
    metrics.auroc([0.1, np.nan], [0, 1])
  with pytest.raises(ValueError, match='differ'):
    metrics.auroc([0.1, 0.2, 0.3], [0, 1])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    metrics.auroc([0.1, 0.2], [0, 1])


def test_iou_matches_a_direct_computation():
  maps, masks = _maps_and_masks(3)
  maps = np.round(maps, 2)  # Ties between pixels.
  for t in (0.1, 0.5, float(np.median(maps)), 0.9):
    pred = maps >= t
    direct = (pred & masks).sum() / (pred | masks).sum()
    assert metrics.iou_at(maps, masks, t) == pytest.approx(direct)
  brute = max(((maps >= t) & masks).sum() / ((maps >= t) | masks).sum()
              for t in np.unique(maps))
  assert metrics.best_iou(maps, masks) == pytest.approx(brute)
  labels = masks.reshape(3, -1).any(1).astype(int)
  result = metrics.evaluate_maps(maps, masks, maps.reshape(3, -1).max(1), labels)
  assert result['pixel_iou_best'] == pytest.approx(brute)
  # A perfect map reaches IoU 1 at a threshold between the classes.
  assert metrics.iou_at(masks * 0.9 + 0.05, masks, 0.5) == 1.0
  assert metrics.best_iou(masks.astype(float), masks) == 1.0
