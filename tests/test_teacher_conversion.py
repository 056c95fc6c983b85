"""DeSTSeg's teacher: torchvision resnet18 state dicts converted to Flax."""

import numpy as np
import jax.numpy as jnp
import pytest

from tasad_jax.models import segmenter
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.models import resnet

torch = pytest.importorskip('torch')


class _TorchBlock(torch.nn.Module):
  """torchvision's BasicBlock, with its attribute (= state-dict) names."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet18(torch.nn.Module):
  """torchvision.models.resnet18's layout, written out (no torchvision here)."""

  def __init__(self):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    widths = [64, 64, 128, 256, 512]
    for i in range(1, 5):
      setattr(self, f'layer{i}', nn.Sequential(
          _TorchBlock(widths[i - 1], widths[i], 1 if i == 1 else 2),
          _TorchBlock(widths[i], widths[i], 1)))
    self.fc = nn.Linear(512, 1000)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    out = []
    for i in range(1, 4):
      x = getattr(self, f'layer{i}')(x)
      out.append(x)
    return out


@pytest.mark.parametrize('suffix', ['.pth', '.npz'])
def test_torchvision_teacher_converts_to_flax(tmp_path, suffix):
  """A torchvision resnet18 state dict in Flax gives the same features."""
  torch.manual_seed(0)
  net = _TorchResNet18().eval()
  with torch.no_grad():  # Non-trivial BatchNorm statistics and affine terms.
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  path = str(tmp_path / f'resnet18{suffix}')
  if suffix == '.pth':
    torch.save(net.state_dict(), path)
  else:
    np.savez(path, **{k: v.numpy() for k, v in net.state_dict().items()})
  variables = resnet.load_weights(path, num_layers=3)
  rng = np.random.default_rng(0)
  images = rng.random((2, 64, 64, 3)).astype(np.float32)
  mean, std = np.array(resnet.IMAGENET_MEAN), np.array(resnet.IMAGENET_STD)
  with torch.no_grad():
    expected = net(torch.from_numpy(
        ((images - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)))
  got = resnet.ResNet18(3).apply(variables, jnp.asarray(images))
  for e, g in zip(expected, got):
    np.testing.assert_allclose(np.asarray(g), e.numpy().transpose(0, 2, 3, 1),
                               atol=1e-4, rtol=1e-4)
  assert segmenter.count_params(variables['params']) == 2_782_784


def test_teacher_weights_of_another_network_are_refused(tmp_path):
  state = {k: v.numpy() for k, v in _TorchResNet18().state_dict().items()}
  state['conv1.weight'] = np.zeros((64, 3, 3, 3), np.float32)
  path = str(tmp_path / 'other.npz')
  np.savez(path, **state)
  with pytest.raises(UserInputError, match=r"'conv1.weight' has shape"):
    resnet.load_weights(path)
  del state['layer3.1.bn2.running_var']
  np.savez(path, **state)
  with pytest.raises(UserInputError, match=r"missing 'layer3.1.bn2.running_var'"):
    resnet.load_weights(path)
  with pytest.raises(UserInputError, match='not found'):
    resnet.load_weights(str(tmp_path / 'missing.pth'))
