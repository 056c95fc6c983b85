"""A plain PyTorch version of TASAD's segmenter and CAS train step.

Used only by bench/accelerator.py (`--torch`) to compare speed on the same
machine: the same layers, loss (MSE + 1 - SSIM with an 11x11 Gaussian window,
valid filtering) and Adam step as tasad_jax.
"""

import torch
from torch import nn
import torch.nn.functional as F


def _block(cin, cout):
  return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
          nn.ReLU(inplace=True)]


class Segmenter(nn.Module):
  """Encoder [w, w] pool [2w, 2w] pool [4w, 4w]; decoder as tasad_jax.models.segmenter."""

  def __init__(self, w):
    super().__init__()
    up = lambda: nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
    self.net = nn.Sequential(
        *_block(3, w), *_block(w, w), nn.MaxPool2d(2),
        *_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool2d(2),
        *_block(2 * w, 4 * w), *_block(4 * w, 4 * w),
        up(), *_block(4 * w, 4 * w), *_block(4 * w, 4 * w), *_block(4 * w, 2 * w),
        up(), *_block(2 * w, 2 * w), *_block(2 * w, 2 * w), *_block(2 * w, w),
        nn.Conv2d(w, 1, 3, padding=1))

  def forward(self, x):
    return self.net(x)


def _gaussian(size=11, sigma=1.5, device=None):
  x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
  g = torch.exp(-x**2 / (2 * sigma**2))
  return g / g.sum()


def ssim(a, b, c1=0.01**2, c2=0.03**2):
  g = _gaussian(device=a.device)
  def blur(x):
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
      (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return s.mean()


def make_step(model, lr=1e-4, dtype=None):
  opt = torch.optim.Adam(model.parameters(), lr=lr)

  def step(x, mask):
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
      pred = model(x)
    pred = pred.float()
    loss = F.mse_loss(pred, mask) + 1 - ssim(pred, mask)
    loss.backward()
    opt.step()
    return loss

  return step
