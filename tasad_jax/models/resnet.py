"""ResNet-18 in Flax with torchvision's layout, and its weight conversion.

DeSTSeg's teacher is an ImageNet ResNet-18 (layers 1-3) and its student encoder
a randomly initialised one. The module names follow torchvision's state-dict
keys (`layer2.0.downsample.0.weight` -> `layer2_0/downsample_conv/kernel`), so
`from_torch_state_dict` is a rename and a transpose (OIHW -> HWIO).

To get the ImageNet weights on a machine with internet and torchvision:

    python -c "import torch, torchvision; torch.save(torchvision.models.resnet18(
        weights='IMAGENET1K_V1').state_dict(), 'resnet18.pth')"

(or download https://download.pytorch.org/models/resnet18-f37072fd.pth). A
`.pth` needs torch to read; `.npz` files of the same keys need only numpy:

    python -c "import torch, numpy as np; np.savez('resnet18.npz',
        **{k: v.numpy() for k, v in torch.load('resnet18.pth').items()})"
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tasad_jax.runtime.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_WIDTHS = (64, 128, 256, 512)


def batch_norm(train: bool, name: str, dtype=jnp.float32) -> nn.BatchNorm:
  """PyTorch's BatchNorm2d defaults (momentum 0.1, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


def conv(features: int, kernel: int, stride: int = 1, dilation: int = 1,
         name: str | None = None, dtype=jnp.float32) -> nn.Conv:
  """A bias-free conv with PyTorch's padding (kernel // 2 * dilation)."""
  pad = kernel // 2 * dilation
  return nn.Conv(features, (kernel, kernel), strides=stride,
                 padding=((pad, pad), (pad, pad)), kernel_dilation=dilation,
                 use_bias=False, name=name, dtype=dtype,
                 kernel_init=nn.initializers.variance_scaling(
                     2.0, 'fan_out', 'normal'))


class BasicBlock(nn.Module):
  """ResNet basic block; a 1x1 projection when the shape changes."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    residual = x
    y = conv(self.features, 3, self.stride, name='conv1', dtype=self.dtype)(x)
    y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
    y = conv(self.features, 3, name='conv2', dtype=self.dtype)(y)
    y = batch_norm(train, 'bn2', self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = conv(self.features, 1, self.stride, name='downsample_conv',
                      dtype=self.dtype)(x)
      residual = batch_norm(train, 'downsample_bn', self.dtype)(residual)
    return nn.relu(y + residual)


def make_layer(features: int, blocks: int, stride: int, name: str,
               dtype=jnp.float32) -> list[BasicBlock]:
  return [BasicBlock(features, stride if i == 0 else 1, dtype,
                     name=f'{name}_{i}') for i in range(blocks)]


class ResNet18(nn.Module):
  """ResNet-18 feature extractor: the outputs of layer1..layer{num_layers}.

  Takes images in [0, 1] and applies ImageNet normalisation itself.
  """
  num_layers: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = conv(64, 7, 2, name='conv1', dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu(batch_norm(train, 'bn1', self.dtype)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features = []
    for i in range(self.num_layers):
      for block in make_layer(STAGE_WIDTHS[i], 2, 1 if i == 0 else 2,
                              f'layer{i + 1}', self.dtype):
        x = block(x, train)
      features.append(x.astype(jnp.float32))
    return features


_BN_FIELDS = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
              'running_mean': ('batch_stats', 'mean'),
              'running_var': ('batch_stats', 'var')}


def from_torch_state_dict(state_dict: dict[str, Any],
                          num_layers: int = 4) -> dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} of `ResNet18` from a torchvision
  `resnet18` state dict (tensors or arrays); `fc` and deeper layers dropped.

  Raises:
    UserInputError: a needed key is missing or has the wrong shape.
  """
  arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach')
                          else v, np.float32)
            for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
  template = jax.eval_shape(
      lambda: ResNet18(num_layers).init(jax.random.key(0),
                                        jnp.zeros((1, 64, 64, 3))))
  variables: dict[str, dict] = {'params': {}, 'batch_stats': {}}
  for path, leaf in jax.tree_util.tree_leaves_with_path(template):
    collection, *modules, field = [k.key for k in path]
    torch_modules = [m.replace('_conv', '.0').replace('_bn', '.1')
                     if m.startswith('downsample') else m.replace('_', '.')
                     for m in modules]
    if field == 'kernel':
      key = '.'.join(torch_modules + ['weight'])
    else:
      torch_field = {v: k for k, v in _BN_FIELDS.items()}[(collection, field)]
      key = '.'.join(torch_modules + [torch_field])
    if key not in arrays:
      raise UserInputError(f'ResNet-18 state dict: missing {key!r} (is it a '
                           'torchvision resnet18 state dict?)')
    value = arrays[key]
    if field == 'kernel':
      value = value.transpose(2, 3, 1, 0)
    if value.shape != leaf.shape:
      raise UserInputError(f'ResNet-18 state dict: {key!r} has shape '
                           f'{value.shape}, expected {leaf.shape}')
    target = variables[collection]
    for m in modules:
      target = target.setdefault(m, {})
    target[field] = jnp.asarray(value)
  return variables


def load_weights(path: str, num_layers: int = 4) -> dict[str, Any]:
  """Reads a torchvision resnet18 state dict (`.pth`/`.pt` or `.npz`)."""
  if not os.path.isfile(path):
    raise UserInputError(f'{path}: teacher weights (config.coarse.destseg.'
                         'teacher) not found')
  if path.endswith('.npz'):
    try:
      with np.load(path) as f:
        state_dict = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      raise UserInputError(f'{path}: unreadable .npz ({e})') from None
  else:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise UserInputError(f'{path}: reading a .pth needs torch; convert it to '
                           '.npz (see tasad_jax/methods/resnet.py)') from None
    try:
      state_dict = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f'{path}: unreadable torch file ({e})') from None
  if not isinstance(state_dict, dict):
    raise UserInputError(f'{path}: not a state dict')
  return from_torch_state_dict(state_dict, num_layers)
