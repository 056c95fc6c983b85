"""DeSTSeg (Zhang et al., CVPR 2023) as a coarse stage.

* Teacher: ResNet-18 layers 1-3, frozen in eval mode; ImageNet weights from a
  torchvision state dict (`config.coarse.destseg.teacher`), or random.
* Student: a randomly initialised ResNet-18 encoder (layers 1-4) and a decoder
  of basic blocks (512, 256, 128, 64) with bilinear up-sampling, giving
  features of the teacher's three shapes. Phase 1 trains it on the
  pseudo-anomalous image to match the teacher's features of the clean image:
  mean over levels of 1 - cosine similarity.
* Segmentation net: on the concatenated products -t*s of the L2-normalised
  teacher and student features of the same image (bilinearly resized to the
  first level, 448 channels): 2 basic blocks, ASPP (rates 6, 12, 18), a 3x3
  conv and a 1x1 conv to one logit. Phase 2, student frozen, trains it with
  focal (gamma 4) + L1 loss on the mask, resized to its 1/4 resolution and
  binarised at 0.5.
* Map: the sigmoid of the logits, bilinearly up-sampled to the image size.
  Score: the mean of the top-T map values.

Optimisers as in the paper's code: SGD with momentum 0.9 and weight decay 1e-4;
lr 0.4 for the student, 0.1 for the segmentation net's blocks, 0.01 for its
head; constant. Phase 1 takes the first `student_fraction` of
`config.train.cas_steps`. Ours: the pseudo-anomalies are this project's SAIM +
Perlin mix (the paper's code uses DRAEM's Perlin with DTD).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tasad_jax.core import scoring, sharding, stage
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.methods import base, registry
from tasad_jax.models import resnet
from tasad_jax.core.train_state import (Optimizer, TrainState, all_finite,
                                        finish_step, split_networks)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of NHWC maps (PyTorch align_corners=False)."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]),
                          'bilinear', antialias=False)


def _normalize(x: jax.Array) -> jax.Array:
  """L2-normalise over channels (PyTorch F.normalize, eps 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Student(nn.Module):
  """Denoising student: ResNet-18 encoder, mirrored basic-block decoder."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    encoded = resnet.ResNet18(4, self.dtype, name='encoder')(x, train)
    y = encoded[3]
    outputs = []
    for level, features in ((4, 512), (3, 256), (2, 128), (1, 64)):
      if level < 4:
        target = encoded[level - 1]
        y = _resize(y, target.shape[1], target.shape[2])
      for block in resnet.make_layer(features, 2, 1, f'decoder_layer{level}',
                                     self.dtype):
        y = block(y, train)
      if level < 4:
        outputs.insert(0, y.astype(jnp.float32))
    return outputs


class SegmentationNet(nn.Module):
  """Two basic blocks, ASPP and a head to one logit per pixel."""
  channels: int = 256
  rates: tuple[int, ...] = (6, 12, 18)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c, dt = self.channels, self.dtype
    x = x.astype(dt)
    for block in resnet.make_layer(c, 2, 1, 'res', dt):
      x = block(x, train)

    def branch(y, kernel, dilation, name):
      y = resnet.conv(c, kernel, dilation=dilation, name=f'{name}_conv', dtype=dt)(y)
      return nn.relu(resnet.batch_norm(train, f'{name}_bn', dt)(y))

    branches = [branch(x, 1, 1, 'aspp_1x1')]
    branches += [branch(x, 3, r, f'aspp_rate{r}') for r in self.rates]
    pooled = branch(jnp.mean(x, axis=(1, 2), keepdims=True), 1, 1, 'aspp_pool')
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    x = branch(jnp.concatenate(branches, axis=-1), 1, 1, 'aspp_project')
    x = branch(x, 3, 1, 'head')
    x = nn.Conv(1, (1, 1), dtype=dt, name='head_out')(x)
    return x.astype(jnp.float32)


def focal_loss(logits: jax.Array, target: jax.Array, gamma: float) -> jax.Array:
  """Mean binary focal loss, (1 - p_t)^gamma * BCE, from logits."""
  p = jax.nn.sigmoid(logits)
  p_t = p * target + (1.0 - p) * (1.0 - target)
  bce = optax.sigmoid_binary_cross_entropy(logits, target)
  return jnp.mean(bce * (1.0 - p_t) ** gamma)


def _sgd(lr: float, momentum: float, weight_decay: float):
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(lr, momentum))


@registry.register
class DeSTSeg(base.CoarseMethod):
  """DeSTSeg: student-teacher feature distances, segmented."""

  method = 'destseg'
  defaults = {
      'teacher': 'random',  # 'random' or a torchvision resnet18 state dict (.pth/.npz; paper: ImageNet).
      'student_fraction': 0.2,  # Share of cas_steps for phase 1 (paper: 1000 of 5000).
      'lr_student': 0.4,  # SGD lr of the denoising student.
      'lr_segnet_blocks': 0.1,  # SGD lr of the segmentation net's residual blocks.
      'lr_segnet_head': 0.01,  # SGD lr of its ASPP head.
      'momentum': 0.9,  # SGD momentum.
      'weight_decay': 1e-4,  # SGD weight decay.
      'focal_gamma': 4.0,  # Focal loss exponent.
      'seg_channels': 256,  # Width of the segmentation net.
      'aspp_rates': (6, 12, 18),  # ASPP dilation rates.
      'top_k': 100,  # Image score: mean of the top-T map values.
  }

  def __init__(self, config):
    super().__init__(config)
    d = self.settings
    dtype = jnp.dtype(config.model.dtype)
    self.teacher = resnet.ResNet18(3, dtype)
    self.student = Student(dtype)
    self.segnet = SegmentationNet(d.seg_channels, tuple(d.aspp_rates), dtype)
    self.optimizers = [
        Optimizer('student', ('student',),
                  _sgd(d.lr_student, d.momentum, d.weight_decay)),
        Optimizer('segnet', ('segnet',), optax.multi_transform(
            {'res': _sgd(d.lr_segnet_blocks, d.momentum, d.weight_decay),
             'head': _sgd(d.lr_segnet_head, d.momentum, d.weight_decay)},
            _segnet_groups))]
    self.student_steps = int(round(d.student_fraction * config.train.cas_steps))

  def check_config(self) -> None:
    d = self.settings
    if not 0 <= d.student_fraction <= 1:
      raise UserInputError('config.coarse.destseg.student_fraction: must be in '
                           f'[0, 1], got {d.student_fraction}')
    if d.top_k < 1:
      raise UserInputError('config.coarse.destseg.top_k: must be >= 1')
    if d.teacher != 'random' and not d.teacher.endswith(('.pth', '.pt', '.npz')):
      raise UserInputError(
          f'config.coarse.destseg.teacher: {d.teacher!r}; use \'random\' or a '
          'torchvision resnet18 state dict (.pth, .pt or .npz)')

  # Model.

  def _init_variables(self) -> dict:
    size = self.config.data.image_size
    x = jnp.zeros((1, size, size, 3))

    def init(key):
      k_teacher, k_student, k_segnet = jax.random.split(key, 3)
      student = self.student.init(k_student, x)
      levels = self.student.apply(student, x)
      seg_in = jnp.zeros(levels[0].shape[:3] + (sum(f.shape[-1] for f in levels),))
      return {'teacher': self.teacher.init(k_teacher, x), 'student': student,
              'segnet': self.segnet.init(k_segnet, seg_in)}

    variables = stage.jit_init(init)(
        jax.random.fold_in(jax.random.key(self.config.seed), 101))
    teacher = self.settings.teacher
    if teacher != 'random':
      variables['teacher'] = resnet.load_weights(teacher, num_layers=3)
    return variables

  def _teacher(self, variables, images):
    return [_normalize(f) for f in self.teacher.apply(
        variables['teacher'], images, train=False)]

  def _segment(self, teacher_features, student_features, segnet_variables,
               train: bool):
    first = teacher_features[0].shape
    products = [_resize(-t * s, first[1], first[2])
                for t, s in zip(teacher_features, student_features)]
    return self.segnet.apply(segnet_variables, jnp.concatenate(products, -1),
                             train=train, mutable=['batch_stats'] if train else False)

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    v = split_networks(variables)
    teacher = self._teacher(v, images)
    student = [_normalize(f) for f in self.student.apply(v['student'], images)]
    logits = self._segment(teacher, student, v['segnet'], train=False)
    return _resize(jax.nn.sigmoid(logits), images.shape[1], images.shape[2])

  def image_score(self, maps: jax.Array, outputs=None, valid=None
                  ) -> jax.Array:
    del outputs
    return scoring.top_k_mean(maps, self.settings.top_k, valid)

  def score_reduction(self):
    return scoring.top_k_reduction(self.settings.top_k)

  # Training.

  def create_state(self, mesh) -> TrainState:
    state = TrainState.create(self._init_variables(), self.optimizers,
                              frozen=('teacher',))
    return jax.device_put(state, sharding.replicated(mesh))

  def _student_step(self, state: TrainState, batch, rng, context):
    """Phase 1: the student on the augmented image matches the teacher on the
    clean image (mean over levels of 1 - cosine similarity)."""
    del rng, context
    v = split_networks(state.variables)
    teacher = self._teacher(v, batch['image'])

    def loss_fn(params):
      student, updates = self.student.apply(
          {'params': params, 'batch_stats': v['student']['batch_stats']},
          batch['augmented'], train=True, mutable=['batch_stats'])
      distances = [jnp.mean(1.0 - jnp.sum(_normalize(s) * t, axis=-1))
                   for s, t in zip(student, teacher)]
      return sum(distances) / len(distances), updates['batch_stats']

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params['student'])
    finite = all_finite(loss, grads)
    new = state.apply_gradients('student', {'student': grads}, {'student': stats})
    return finish_step(state, new, finite), {'loss': loss, 'cosine': loss,
                                             'phase': jnp.float32(1)}, finite

  def _segnet_step(self, state: TrainState, batch, rng, context):
    """Phase 2, student frozen: focal + L1 loss of the segmentation net."""
    del rng, context
    v = split_networks(state.variables)
    images = batch['augmented']
    teacher = self._teacher(v, images)
    student = [_normalize(jax.lax.stop_gradient(f))
               for f in self.student.apply(v['student'], images)]
    gamma = self.settings.focal_gamma

    def loss_fn(params):
      logits, updates = self._segment(
          teacher, student,
          {'params': params, 'batch_stats': v['segnet']['batch_stats']}, True)
      mask = (_resize(batch['mask'], logits.shape[1], logits.shape[2]) >= 0.5
              ).astype(jnp.float32)
      focal = focal_loss(logits, mask, gamma)
      l1 = jnp.mean(jnp.abs(jax.nn.sigmoid(logits) - mask))
      return focal + l1, (updates['batch_stats'], focal, l1)

    (loss, (stats, focal, l1)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params['segnet'])
    finite = all_finite(loss, grads)
    new = state.apply_gradients('segnet', {'segnet': grads}, {'segnet': stats})
    return finish_step(state, new, finite), {
        'loss': loss, 'focal': focal, 'l1': l1, 'phase': jnp.float32(2)}, finite

  def phases(self) -> list[stage.Phase]:
    """Phase 1 (student) for the first `student_steps` steps, then phase 2."""
    return [stage.Phase(0, self._student_step, 'student'),
            stage.Phase(self.student_steps, self._segnet_step, 'segnet')]

  def batch_keys(self) -> tuple[str, ...]:
    return ('image', 'augmented', 'mask')


def _segnet_groups(params: dict) -> dict:
  """Optimiser labels of {'segnet': params}: 'res' blocks, the rest 'head'."""
  return {net: {k: jax.tree_util.tree_map(
      lambda _, k=k: 'res' if k.startswith('res') else 'head', v)
                for k, v in p.items()} for net, p in params.items()}

