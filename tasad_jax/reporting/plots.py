"""The report's plots, drawn with matplotlib into PNG bytes.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas: no pyplot,
no global backend switch, no figure kept alive after its PNG is written.
The curves come from `metrics.curve` (the metrics' own sort); a pixel curve
over millions of pixels is thinned to a few thousand plotted points, the data
never subsampled.
"""

from __future__ import annotations

import io

import numpy as np

from tasad_jax.core import names
from tasad_jax.core import metrics
from tasad_jax.reporting import heatmaps

_COLORS = {'cas': '#1f77b4', 'tasad': '#d62728'}
_DPI = 100


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=_DPI, layout='constrained')
  FigureCanvasAgg(fig)
  return fig


def _png(fig) -> bytes:
  buf = io.BytesIO()
  # No metadata: the PNG then names no software and no URL.
  fig.savefig(buf, format='png', metadata={'Software': None})
  fig.clear()
  return buf.getvalue()


def thin(x: np.ndarray, y: np.ndarray, points: int = 1000) -> np.ndarray:
  """Indices of the curve points to plot: both ends, evenly spaced ranks,
  and the first point of each 1/points step of x and of y."""
  n = len(x)
  if n <= 4 * points:
    return np.arange(n)
  keep = [np.array([0, n - 1]), np.linspace(0, n - 1, points).astype(int),
          np.unique(np.floor(x * points), return_index=True)[1],
          np.unique(np.floor(y * points), return_index=True)[1]]
  return np.unique(np.concatenate(keep))


class _Curve:
  """ROC and PR points of one method, with the point at any threshold."""

  def __init__(self, scores, labels):
    self.thresholds, tps, fps = metrics.curve(scores, labels)
    self.tpr = np.r_[0.0, tps / tps[-1]]
    self.fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    self.precision = np.r_[1.0, tps / (tps + fps)]

  def index(self, threshold: float) -> int:
    """The point of 'flag what scores >= threshold'."""
    return int(np.sum(self.thresholds >= threshold))


def _marks(report: dict, method: str, level: str):
  """(threshold, marker, label) pairs to mark on a method's curve."""
  out = []
  found = report[method]['f1_optimal_thresholds'][level]
  if np.isfinite(found):
    out.append((found, 'o', 'F1-optimal'))
  trained = report.get('trained_thresholds')
  final = names.final_output(report)
  if trained and trained.get('method', final) == method and np.isfinite(
      trained.get(level, np.nan)):
    out.append((trained[level], 's', 'normal data'))
  return out


def _plot(ax, curve, x, y, method, label, marks):
  keep = thin(x, y)
  ax.plot(x[keep], y[keep], color=_COLORS[method], label=label, lw=1.5)
  for threshold, marker, name in marks:
    k = curve.index(threshold)
    ax.plot(x[k], y[k], marker, color=_COLORS[method], ms=8, mfc='none', mew=2,
            label=f'{label} {name} ({threshold:.3g})')


def curves_png(split: dict, outputs: dict, report: dict,
               labels: dict[str, str]) -> bytes:
  """Image ROC, image PR and pixel PR curves of each method, side by side."""
  fig = _figure(13, 4.2)
  axes = fig.subplots(1, 3)
  image_labels = split['label'] > 0
  masks = metrics.per_image(split['mask'], bool)
  for m in names.present(report):
    image = _Curve(outputs[f'{m}_score'], image_labels)
    marks = _marks(report, m, 'image')
    _plot(axes[0], image, image.fpr, image.tpr, m, labels[m], marks)
    _plot(axes[1], image, image.tpr, image.precision, m, labels[m], marks)
    pixel = _Curve(outputs[f'{m}_map'], masks)
    _plot(axes[2], pixel, pixel.tpr, pixel.precision, m, labels[m],
          _marks(report, m, 'pixel'))
  titles = [('image ROC', 'false positive rate', 'true positive rate'),
            ('image PR', 'recall', 'precision'),
            ('pixel PR', 'recall', 'precision')]
  for ax, (title, xl, yl) in zip(axes, titles):
    ax.set(title=title, xlabel=xl, ylabel=yl, xlim=(-0.02, 1.02),
           ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower left' if title != 'image ROC'
              else 'lower right')
  return _png(fig)


def histogram_png(labels: np.ndarray, outputs: dict, report: dict,
                  labels_by_output: dict[str, str]) -> bytes:
  """Image scores of normal and defective images, per method, thresholds
  drawn as vertical lines."""
  methods = names.present(report)
  fig = _figure(6.5 * len(methods), 3.4)
  axes = np.atleast_1d(fig.subplots(1, len(methods)))
  for ax, m in zip(axes, methods):
    # float64: float32 scores a few ulps apart have no 30 finite bins.
    scores = np.asarray(outputs[f'{m}_score'], np.float64)
    bins = np.histogram_bin_edges(scores, bins=30)
    ax.hist(scores[~labels], bins=bins, alpha=0.6, color='#2ca02c',
            label=f'normal ({int((~labels).sum())})')
    ax.hist(scores[labels], bins=bins, alpha=0.6, color='#d62728',
            label=f'defective ({int(labels.sum())})')
    for threshold, marker, name in _marks(report, m, 'image'):
      ax.axvline(threshold, color='black', ls='--' if marker == 'o' else '-',
                 label=f'{name} {threshold:.3g}')
    ax.set(title=f'{labels_by_output[m]} image scores', xlabel='image score',
           ylabel='images')
    ax.legend(fontsize=8)
  return _png(fig)


def colorbar_png(scales: dict[str, tuple[float, float]],
                 labels: dict[str, str]) -> bytes:
  """The gallery's colour scale of each method (heatmaps.colorize)."""
  from matplotlib.cm import ScalarMappable  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import ListedColormap, Normalize  # pylint: disable=g-import-not-at-top
  cmap = ListedColormap(heatmaps.colorize(np.linspace(0, 1, 256)) / 255.0)
  fig = _figure(6, 0.75 * len(scales))
  axes = np.atleast_1d(fig.subplots(len(scales), 1))
  for ax, (m, scale) in zip(axes, scales.items()):
    fig.colorbar(ScalarMappable(Normalize(*scale), cmap), cax=ax,
                 orientation='horizontal', label=f'{labels[m]} map value')
  return _png(fig)


def grouped_bars_png(panels: list[tuple[str, list[str], dict[str, list[float]]]],
                     ylabel: str) -> bytes:
  """Side-by-side bar charts, one per (title, x labels, {series: values});
  a missing value (NaN) draws no bar."""
  fig = _figure(min(4.5 * len(panels), 18), 3.8)
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (title, xs, series) in zip(axes, panels):
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
      ax.bar(np.arange(len(xs)) + (i - (len(series) - 1) / 2) * width,
             np.asarray(values, np.float64), width, label=label)
    ax.axhline(0.0, color='black', lw=0.8)
    ax.set_xticks(np.arange(len(xs)), xs, rotation=45 if len(xs) > 4 else 0,
                  ha='right' if len(xs) > 4 else 'center')
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis='y', alpha=0.3)
  axes[0].legend(fontsize=8)
  return _png(fig)
