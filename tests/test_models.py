"""The segmenter: parameter count, shapes, dtypes, initialisation, up-sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasad_jax.models import segmenter


def _init(width, shape, dtype=jnp.float32):
  model = segmenter.Segmenter(width=width, dtype=dtype)
  return model, model.init(jax.random.key(0), jnp.zeros(shape), train=False)


def test_paper_width_has_the_papers_parameter_count():
  model = segmenter.Segmenter(width=128)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3))))
  assert segmenter.count_params(variables['params']) == 11_959_681
  # About 463 GFLOP per 256x256 image (method doc).
  assert abs(segmenter.forward_flops(128, 256) / 1e9 - 463) < 3


@pytest.mark.parametrize('shape', [(2, 32, 32, 3), (1, 48, 64, 3), (3, 16, 20, 3)])
def test_forward_shapes(shape):
  model, variables = _init(4, shape)
  out = model.apply(variables, jnp.ones(shape), train=False)
  assert out.shape == shape[:3] + (1,) and out.dtype == jnp.float32
  out, updates = model.apply(variables, jnp.ones(shape), train=True,
                             mutable=['batch_stats'])
  assert out.shape == shape[:3] + (1,)
  assert jax.tree_util.tree_structure(updates['batch_stats']) == \
      jax.tree_util.tree_structure(variables['batch_stats'])


def test_group_norm_normalises_each_sample_on_its_own():
  """With norm='group' a sample's map does not depend on the rest of the
  batch, in training as in inference, and there are no BatchNorm statistics;
  with BatchNorm (the paper's) it does in training."""
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  other = x.at[1].set(jax.random.uniform(jax.random.key(2), (16, 16, 3)))
  for norm in segmenter.NORMS:
    model = segmenter.Segmenter(width=4, norm=norm)
    variables = model.init(jax.random.key(0), x, train=False)
    assert ('batch_stats' in variables) == (norm == 'batch')
    out = [model.apply(variables, batch, train=True, mutable=['batch_stats'])[0]
           for batch in (x, other)]
    same = np.allclose(out[0][0], out[1][0], atol=1e-6)
    assert same == (norm == 'group'), norm
    alone = model.apply(variables, x[:1], train=True, mutable=['batch_stats'])[0]
    assert np.allclose(alone[0], out[0][0], atol=1e-5) == (norm == 'group')


def test_bfloat16_compute_keeps_float32_parameters():
  model, variables = _init(4, (1, 32, 32, 3), jnp.bfloat16)
  dtypes = {p.dtype for p in jax.tree_util.tree_leaves(variables['params'])}
  assert dtypes == {jnp.dtype(jnp.float32)}
  out = model.apply(variables, jnp.ones((1, 32, 32, 3)), train=False)
  assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())


def test_reference_initialisation():
  _, variables = _init(32, (1, 16, 16, 3))
  params = variables['params']
  kernels = np.concatenate([np.ravel(v['Conv_0']['kernel']) for k, v in
                            params.items() if k.startswith('ConvBNReLU')])
  assert abs(kernels.std() - 0.02) < 0.002 and abs(kernels.mean()) < 0.002
  scales = np.concatenate([np.ravel(v['BatchNorm_0']['scale']) for k, v in
                           params.items() if k.startswith('ConvBNReLU')])
  assert abs(scales.mean() - 1.0) < 0.005 and 0.01 < scales.std() < 0.03
  bias = np.ravel(params['ConvBNReLU_1']['Conv_0']['bias'])
  assert np.abs(bias).max() <= 1 / np.sqrt(9 * 32)  # PyTorch's default.


def test_upsample_matches_align_corners_definition():
  x = np.random.default_rng(0).normal(size=(1, 3, 5, 2)).astype(np.float32)
  out = np.asarray(segmenter.upsample2x_align_corners(jnp.asarray(x)))
  assert out.shape == (1, 6, 10, 2)
  expected = np.zeros_like(out)
  for i in range(6):
    for j in range(10):
      y, z = i * (3 - 1) / (6 - 1), j * (5 - 1) / (10 - 1)
      y0, z0 = min(int(y), 1), min(int(z), 3)
      fy, fz = y - y0, z - z0
      expected[0, i, j] = ((1 - fy) * (1 - fz) * x[0, y0, z0]
                           + (1 - fy) * fz * x[0, y0, z0 + 1]
                           + fy * (1 - fz) * x[0, y0 + 1, z0]
                           + fy * fz * x[0, y0 + 1, z0 + 1])
  np.testing.assert_allclose(out, expected, atol=1e-5)
  # Corners are copied exactly (align_corners=True).
  np.testing.assert_allclose(out[0, [0, -1]][:, [0, -1]], x[0, [0, -1]][:, [0, -1]],
                             atol=1e-6)


def test_initialiser_compiled_for_one_run_gives_the_default_bits():
  """`stage.jit_init` (LLVM -O1 on CPU) initialises the project's building
  blocks to the same bits as XLA's default -O2, in a fraction of its compile
  time (the whole segmenter takes ~20 s at -O2: two blocks of each kind here)."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  from tasad_jax.core import stage  # pylint: disable=g-import-not-at-top
  from tasad_jax.models import resnet  # pylint: disable=g-import-not-at-top

  class Blocks(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = segmenter.ConvBNReLU(4)(segmenter.ConvBNReLU(4)(x, False), False)
      return resnet.BasicBlock(8, 2)(x, False)

  x = jnp.zeros((1, 16, 16, 3))
  init = lambda k: Blocks().init(k, x)  # pylint: disable=unnecessary-lambda-assignment
  key = jax.random.key(3)
  ours = stage.jit_init(init)(key)
  default = jax.jit(init, compiler_options={
      'xla_backend_optimization_level': 2})(key)  # Tests run at -O1 (conftest).
  leaves = jax.tree_util.tree_leaves(ours)
  assert len(leaves) == len(jax.tree_util.tree_leaves(default)) > 10
  for a, b in zip(leaves, jax.tree_util.tree_leaves(default)):
    np.testing.assert_array_equal(a, b)
