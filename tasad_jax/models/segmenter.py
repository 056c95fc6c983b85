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

Layout is NHWC. `dtype` sets the compute dtype (e.g. bfloat16); parameters stay
float32 and the output is float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any

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
  """
  width: int = 128
  dtype: Dtype = jnp.float32
  out_channels: int = 1
  norm: str = 'batch'
  norm_groups: int = 8

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images [N, H, W, C] (H, W divisible by 4) to [N, H, W, out_channels]."""
    w = self.width
    block = functools.partial(ConvBNReLU, dtype=self.dtype, norm=self.norm,
                              norm_groups=self.norm_groups)
    x = x.astype(self.dtype)
    for i, features in enumerate((w, w, 2 * w, 2 * w, 4 * w, 4 * w)):
      if i in (2, 4):
        x = max_pool_2x2(x)
      x = block(features)(x, train)
    for i, features in enumerate((4 * w, 4 * w, 2 * w, 2 * w, 2 * w, w)):
      if i in (0, 3):
        x = upsample2x_align_corners(x)
      x = block(features)(x, train)
    x = output_conv(self.out_channels, w, self.dtype)(x)
    return x.astype(jnp.float32)


def output_conv(features: int, in_channels: int, dtype: Dtype,
                name: str | None = None) -> nn.Conv:
  """The last 3x3 conv of a network (no norm, no activation), with the
  reference's initialisation; call it inside a compact module."""
  return nn.Conv(features, (3, 3), padding=1, dtype=dtype, name=name,
                 kernel_init=nn.initializers.normal(0.02),
                 bias_init=_conv_bias_init(9 * in_channels))


def forward_flops(width: int, height: int, image_width: int | None = None) -> int:
  """Multiply-adds x 2 of one forward pass (convolutions), per image."""
  image_width = image_width or height
  w = width
  convs = [  # (cin, cout, spatial downscale)
      (3, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 2),
      (2 * w, 4 * w, 4), (4 * w, 4 * w, 4), (4 * w, 4 * w, 2),
      (4 * w, 4 * w, 2), (4 * w, 2 * w, 2), (2 * w, 2 * w, 1),
      (2 * w, 2 * w, 1), (2 * w, w, 1), (w, 1, 1)]
  total = 0
  for cin, cout, down in convs:
    total += 2 * 9 * cin * cout * (height // down) * (image_width // down)
  return total


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
