"""The segmenter's options (config.model.skip, levels, widths): the paper's
network by default, each option trains and keeps the map's shape, bad values
are refused, and whole-image inference pads to 2^levels."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasad_jax.config import schema
from tasad_jax.core import losses, sharding, tiling
from tasad_jax.fine import fas
from tasad_jax.inference import two_stage, whole_image
from tasad_jax.models import segmenter, segmenter_stage
from tasad_jax.runtime.errors import UserInputError


def _paper_tree(w: int) -> dict[str, tuple[int, ...]]:
  """Every variable of the paper's network by path, from its description:
  twelve ConvBNReLU blocks and the output conv (module docstring)."""
  convs = [(3, w), (w, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w),
           (4 * w, 4 * w), (4 * w, 4 * w), (4 * w, 4 * w), (4 * w, 2 * w),
           (2 * w, 2 * w), (2 * w, 2 * w), (2 * w, w)]
  tree = {}
  for i, (cin, cout) in enumerate(convs):
    block = f'ConvBNReLU_{i}'
    tree[f"['params']['{block}']['Conv_0']['kernel']"] = (3, 3, cin, cout)
    for name in ("['params']['{}']['Conv_0']['bias']",
                 "['params']['{}']['BatchNorm_0']['scale']",
                 "['params']['{}']['BatchNorm_0']['bias']",
                 "['batch_stats']['{}']['BatchNorm_0']['mean']",
                 "['batch_stats']['{}']['BatchNorm_0']['var']"):
      tree[name.format(block)] = (cout,)
  tree["['params']['Conv_0']['kernel']"] = (3, 3, w, 1)
  tree["['params']['Conv_0']['bias']"] = (1,)
  return tree


def _tree(variables) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in
          jax.tree_util.tree_leaves_with_path(variables)}


def test_the_default_config_builds_the_papers_network(tiny_config):
  """Default options: the paper's variables, names and shapes, 11,959,681
  parameters at w 128, and its FLOPs (as counted before the options)."""
  config = tiny_config.copy_and_resolve_references()
  config.model.width = 128
  model = segmenter_stage.segmenter(config)
  assert model == segmenter.Segmenter(width=128)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3))))
  assert _tree(shapes) == _paper_tree(128)
  assert segmenter.count_params(shapes['params']) == 11_959_681
  assert segmenter.forward_flops(128, 256) == 464_460_447_744
  assert segmenter.segmenter_flops(model, 256, 128) == 232_230_223_872
  assert segmenter_stage.multiple(config) == 4


def test_the_default_network_computes_what_it_did_before_the_options():
  """Outputs of a w 4 net on a fixed input, against values computed with
  the code before the options existed (eval and train mode)."""
  model = segmenter.Segmenter(width=4)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 48, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert _tree(variables) == _paper_tree(4)
  out = np.asarray(model.apply(variables, x, train=False), np.float64)
  np.testing.assert_allclose(
      out[0, 0, :4, 0], [0.1260213553905487, 0.12629057466983795,
                         0.12618617713451385, 0.12617214024066925], rtol=2e-6)
  np.testing.assert_allclose(
      out[1, -1, -4:, 0], [0.12471785396337509, 0.12471327930688858,
                           0.12469357252120972, 0.12190046161413193], rtol=2e-6)
  np.testing.assert_allclose(out.sum(), 386.6446720957756, rtol=2e-6)
  np.testing.assert_allclose(out.std(), 0.0006496800874281577, rtol=1e-4)
  train = np.asarray(model.apply(variables, x, train=True,
                                 mutable=['batch_stats'])[0], np.float64)
  np.testing.assert_allclose(
      train[0, 0, :4, 0], [0.12072528898715973, 0.10800633579492569,
                           0.09954661130905151, 0.1153278574347496], rtol=1e-5)
  np.testing.assert_allclose(
      train[1, -1, -4:, 0], [0.08839940279722214, 0.07604269683361053,
                             0.10233941674232483, 0.12474223226308823],
      rtol=1e-5)
  np.testing.assert_allclose(train.sum(), 391.16053349524736, rtol=2e-6)
  np.testing.assert_allclose(np.abs(train).sum(), 392.4895064756274, rtol=2e-6)


@pytest.mark.parametrize('skip,levels,widths', [
    ('concat', 2, ()), ('add', 3, ()),
    ('add', 4, (4, 8, 8, 16, 16))])  # Two levels add as they are, two project.
def test_each_option_trains_a_step_and_keeps_the_maps_shape(
    tiny_config, skip, levels, widths):
  """One Adam step of the CAS phase is finite and moves the parameters; maps
  of non-square inputs divisible by 2^levels have the input's size; the
  FLOP count's layout has the module's parameters."""
  config = tiny_config.copy_and_resolve_references()
  config.model.skip, config.model.levels, config.model.widths = (
      skip, levels, widths)
  schema.check(config)
  model = segmenter_stage.segmenter(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = segmenter_stage.segmenter_state(config, jax.random.key(0), 10, mesh)
  params = state.params[segmenter_stage.NETWORK]
  assert segmenter.count_params(params) == segmenter.layout_params(
      segmenter.conv_layout(4, levels, widths, skip))
  rng = np.random.default_rng(0)
  x = rng.random((2, 32, 48, 3), dtype=np.float32)
  mask = (rng.random((2, 32, 48, 1)) > 0.8).astype(np.float32)
  step = jax.jit(segmenter_stage.segmenter_phase(
      model, losses.cas_loss, 'augmented',
      segmenter_stage.schedule(config, 10)))
  new, metrics, finite = step(state, {'augmented': x, 'mask': mask}, None, None)
  assert bool(finite) and np.isfinite(float(metrics['loss']))
  moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: bool(jnp.any(a != b)), new.params, state.params))
  assert all(moved)
  out = jax.jit(functools.partial(model.apply, train=False))(
      new.network(segmenter_stage.NETWORK), x[:1, :16, :32])
  assert out.shape == (1, 16, 32, 1) and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize('field,value,expected', [
    ('skip', 'unet', "config.model.skip: 'unet' must be one of"),
    ('levels', 5, 'config.model.levels: 5 must be one of (2, 3, 4)'),
    ('levels', True, 'config.model.levels: True'),
    ('widths', (4, 8), 'config.model.widths: (4, 8) must be () '),
    ('widths', (4, 8, 0), 'config.model.widths: (4, 8, 0)'),
])
def test_a_bad_option_is_refused_in_one_line_naming_it(tiny_config, field,
                                                       value, expected):
  config = tiny_config.copy_and_resolve_references()
  config.model[field] = value
  with pytest.raises(UserInputError) as error:
    schema.check(config)
  assert str(error.value).startswith(expected) and '\n' not in str(error.value)


def test_the_image_size_must_divide_by_two_to_the_levels(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.model.levels = 3
  config.data.image_size = 36  # A multiple of 4, not of 8.
  with pytest.raises(UserInputError, match=r'^config.data.image_size: 36 must '
                     r'be a multiple of 8 \(.*config.model.levels=3 times\)$'):
    schema.check(config)
  config.data.image_size = 40
  schema.check(config)


def test_pad_and_tile_inference_at_three_levels(tiny_config):
  """Whole-image inference of both stages at levels 3 (with U-Net skips,
  which need exact halvings) on images whose sides are not multiples of 8:
  'pad' fits them to the S x S canvas, 'tile' puts them on canvases of a
  multiple of 8 (S x S tiles are); the maps have each image's working size."""
  config = tiny_config.copy_and_resolve_references()
  config.model.levels, config.model.skip = 3, 'concat'
  schema.check(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  fine = fas.FineStage(config)
  variables = [s.inference_variables(s.create_state(mesh))
               for s in (fine.coarse, fine)]
  runner = two_stage.TwoStage(fine, *variables,
                              fas.refine_params(config, training=False), mesh)
  assert runner.input_multiple % 8 == 0
  rng = np.random.default_rng(1)
  images = [rng.integers(0, 256, s + (3,), dtype=np.uint8)
            for s in ((45, 37), (29, 70))]
  for geometry in (tiling.Geometry(mode='pad', size=32),
                   # Canvases of lcm(bucket 12, input_multiple) = 96 pixels.
                   tiling.Geometry(mode='tile', size=32, whole_pixels=96 * 96,
                                   bucket=12)):
    working = whole_image.to_working(images, geometry)
    assert any(side % 8 for w in working for side in w.shape[:2])
    out = whole_image.run_images(runner, geometry, working, 2)
    assert [m.shape for m in out['tasad_map']] == [
        w.shape[:2] for w in working], geometry
    assert all(np.isfinite(m).all() for m in out['tasad_map'])
    assert np.isfinite(out['tasad_score']).all()
