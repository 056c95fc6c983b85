"""The TASAD segmenter (used for both CAS and FAS) as a Flax linen module.

An encoder-decoder without skip connections, base width w (128 in the paper):

    encoder  [w, w] -> maxpool 2 -> [2w, 2w] -> maxpool 2 -> [4w, 4w]
    decoder  up 2 -> [4w] -> [4w, 2w] -> up 2 -> [2w] -> [2w, w] -> conv 1

Each [..] entry is a 3x3 conv (with bias, padding 1) + BatchNorm + ReLU (or,
with `norm='group'`, GroupNorm: not the paper's; per-sample statistics, so
nothing depends on the batch size or the batch's mix of normal and
pseudo-anomalous images, and training and inference normalise alike); up 2 is
bilinear with align-corners semantics (PyTorch `align_corners=True`); the last
conv has one output channel and no activation. 11,959,681 parameters at w=128.
Initialisation follows the reference: conv kernels N(0, 0.02), conv biases
PyTorch's U(+-1/sqrt(fan_in)), BatchNorm scale N(1, 0.02) and bias 0.

Options (config.model; not the paper's, whose values are the defaults and
give the same parameter tree and outputs as before the options existed):
with channels c_l per level l = 0..L (`widths`, or w * 2^l: doubling with
no cap) and L = `levels` poolings, level l of the encoder is [c_l, c_l]
(after a pool for l > 0), and the decoder, for l = L-1 down to 0, is up 2 ->
[c_{l+1}, c_{l+1}, c_l]; levels=2 is the network above. `skip` joins each
encoder level l < L (before its pooling) to the up-sampled decoder input of
its resolution: 'concat' concatenates them before the level's first decoder
conv; 'add' adds them, through a 1x1 conv (`skip_<l>`) to the decoder's
c_{l+1} channels where c_l differs. Inputs must divide by 2^levels.
Parameters and GFLOP per 256x256 image (`bench/segmenter_options.py`):

    w    skip    levels 2          levels 3          levels 4
    128  none    11.96M  464.5     49.72M  686.7     200.74M   909.0
    128  concat  13.43M  541.8     55.92M  802.7     225.81M  1063.6
    128  add     12.12M  473.1     50.41M  699.6     203.53M   926.2
    16   none    188.6k    7.3     780.1k   10.8      3.14M    14.3
    16   concat  211.6k    8.5     876.9k   12.6      3.53M    16.7
    16   add     191.2k    7.5     791.1k   11.0      3.19M    14.5

Layout is NHWC. `dtype` sets the compute dtype (e.g. bfloat16); parameters stay
float32 and the output is float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def _conv_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] linear interpolation weights, align_corners=True."""
  if n_in == 1:
    return np.ones((n_out, 1), np.float32)
  pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
  frac = pos - lo
  m = np.zeros((n_out, n_in), np.float32)
  m[np.arange(n_out), lo] = 1.0 - frac
  m[np.arange(n_out), lo + 1] += frac
  return m


def upsample2x_align_corners(x: jax.Array) -> jax.Array:
  """Bilinear x2 up-sampling of NHWC `x`, as PyTorch's align_corners=True.

  Done as two small interpolation matmuls (rows, then columns), which map onto
  the matrix units of accelerators better than gathers do.
  """
  _, h, w, _ = x.shape
  mh = jnp.asarray(_align_corners_matrix(h, 2 * h), x.dtype)
  mw = jnp.asarray(_align_corners_matrix(w, 2 * w), x.dtype)
  x = jnp.einsum('oh,nhwc->nowc', mh, x)
  return jnp.einsum('pw,nowc->nopc', mw, x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, as the maximum of four strided slices.

  Same values as `nn.max_pool`; its gradient is padding of the slices instead
  of XLA's select-and-scatter, which is several times slower on CPU.
  """
  return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 1::2, 0::2]),
                     jnp.maximum(x[:, 0::2, 1::2], x[:, 1::2, 1::2]))


NORMS = ('batch', 'group')
SKIPS = ('none', 'concat', 'add')
# 2 ** max(LEVELS) divides `CoarseMethod.input_multiple` (32), so the coarse
# methods built on the segmenter keep the canvases they had at 2 levels.
LEVELS = (2, 3, 4)


class ConvBNReLU(nn.Module):
  """3x3 conv (bias) + BatchNorm (or GroupNorm of `norm_groups` groups, at
  most one per channel) + ReLU, with the reference initialisation."""
  features: int
  dtype: Dtype = jnp.float32
  norm: str = 'batch'
  norm_groups: int = 8

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fan_in = 9 * x.shape[-1]
    x = nn.Conv(self.features, (3, 3), padding=1, dtype=self.dtype,
                kernel_init=nn.initializers.normal(0.02),
                bias_init=_conv_bias_init(fan_in))(x)
    if self.norm == 'group':
      x = nn.GroupNorm(num_groups=math.gcd(self.features, self.norm_groups),
                       epsilon=1e-5, dtype=self.dtype,
                       scale_init=_bn_scale_init)(x)
    else:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype,
                       scale_init=_bn_scale_init)(x)
    return nn.relu(x)


class Segmenter(nn.Module):
  """TASAD's segmentation network; CAS and FAS are two instances of it.

  Attributes:
    width: base width w (128 in the paper).
    dtype: compute dtype; parameters are float32.
    out_channels: channels of the last conv (1 for TASAD; more for methods
      with extra heads, e.g. AnoSeg's reconstruction).
    norm: 'batch' (the paper's) or 'group' (no 'batch_stats' collection).
    norm_groups: GroupNorm's groups (the gcd with each layer's channels).
    skip: 'none' (the paper's), 'concat' or 'add': skip connections from
      each encoder level to the decoder level of its resolution.
    levels: 2x poolings (2 in the paper); inputs divide by 2 ** levels.
    widths: channels of each level, levels + 1 of them (() = w * 2^level).
  """
  width: int = 128
  dtype: Dtype = jnp.float32
  out_channels: int = 1
  norm: str = 'batch'
  norm_groups: int = 8
  skip: str = 'none'
  levels: int = 2
  widths: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images [N, H, W, C] (H, W divisible by 2 ** levels) to
    [N, H, W, out_channels]."""
    c = level_widths(self.width, self.levels, self.widths)
    block = functools.partial(ConvBNReLU, dtype=self.dtype, norm=self.norm,
                              norm_groups=self.norm_groups)
    x = x.astype(self.dtype)
    encoded = []  # Each level's encoder output, before its pooling.
    for level, features in enumerate(c):
      if level:
        encoded.append(x)
        x = max_pool_2x2(x)
      for _ in range(2):
        x = block(features)(x, train)
    for level in reversed(range(self.levels)):
      x = upsample2x_align_corners(x)
      x = self._merge(x, encoded[level], level, c)
      for features in (c[level + 1], c[level + 1], c[level]):
        x = block(features)(x, train)
    x = output_conv(self.out_channels, c[0], self.dtype)(x)
    return x.astype(jnp.float32)

  def _merge(self, x: jax.Array, skip: jax.Array, level: int,
             c: tuple[int, ...]) -> jax.Array:
    """The up-sampled decoder input `x` of a level with its encoder output."""
    if self.skip == 'concat':
      return jnp.concatenate([x, skip], axis=-1)
    if self.skip == 'add':
      if c[level] != c[level + 1]:  # 1x1 projection to the decoder's channels.
        skip = nn.Conv(c[level + 1], (1, 1), dtype=self.dtype,
                       name=f'skip_{level}',
                       kernel_init=nn.initializers.normal(0.02),
                       bias_init=_conv_bias_init(c[level]))(skip)
      return x + skip
    return x


def level_widths(width: int, levels: int = 2,
                 widths: Sequence[int] = ()) -> tuple[int, ...]:
  """Channels of each level (full resolution first): `widths`, or the
  paper's doubling w * 2^level."""
  if widths:
    if len(widths) != levels + 1:
      raise ValueError(f'{len(widths)} widths for {levels} levels; give '
                       f'{levels + 1}, one per level')
    return tuple(int(c) for c in widths)
  return tuple(width * 2 ** level for level in range(levels + 1))


def output_conv(features: int, in_channels: int, dtype: Dtype,
                name: str | None = None) -> nn.Conv:
  """The last 3x3 conv of a network (no norm, no activation), with the
  reference's initialisation; call it inside a compact module."""
  return nn.Conv(features, (3, 3), padding=1, dtype=dtype, name=name,
                 kernel_init=nn.initializers.normal(0.02),
                 bias_init=_conv_bias_init(9 * in_channels))


def conv_layout(width: int, levels: int = 2, widths: Sequence[int] = (),
                skip: str = 'none', in_channels: int = 3,
                out_channels: int = 1) -> list[tuple[int, int, int, int, bool]]:
  """(in, out channels, kernel side, level, normalised) of each conv of a
  `Segmenter` in order: what its FLOPs and parameters are counted from."""
  c = level_widths(width, levels, widths)
  convs, cin = [], in_channels
  for level, features in enumerate(c):
    convs += [(cin, features, 3, level, True), (features, features, 3, level, True)]
    cin = features
  for level in reversed(range(levels)):
    up = cin
    if skip == 'concat':
      up += c[level]
    elif skip == 'add' and c[level] != c[level + 1]:
      convs.append((c[level], c[level + 1], 1, level, False))
    convs += [(up, c[level + 1], 3, level, True),
              (c[level + 1], c[level + 1], 3, level, True),
              (c[level + 1], c[level], 3, level, True)]
    cin = c[level]
  return convs + [(c[0], out_channels, 3, 0, False)]


def layout_params(layout) -> int:
  """Parameters of the convs of `conv_layout` (kernel, bias, norm's two)."""
  return sum(k * k * cin * cout + cout + (2 * cout if norm else 0)
             for cin, cout, k, _, norm in layout)


def forward_flops(width: int, height: int, image_width: int | None = None,
                  **options) -> int:
  """Multiply-adds x 2 of one forward pass (convolutions), per image of
  `height` x `image_width` (default square); `options` are `conv_layout`'s
  (levels, widths, skip, in_channels, out_channels; default the paper's)."""
  image_width = image_width or height
  return sum(2 * k * k * cin * cout * (height // 2 ** level)
             * (image_width // 2 ** level)
             for cin, cout, k, level, _ in conv_layout(width, **options))


def segmenter_flops(model: Segmenter, height: int,
                    image_width: int | None = None, in_channels: int = 3) -> int:
  """`forward_flops` of a `Segmenter` with its options."""
  return forward_flops(model.width, height, image_width, levels=model.levels,
                       widths=model.widths, skip=model.skip,
                       in_channels=in_channels, out_channels=model.out_channels)


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
