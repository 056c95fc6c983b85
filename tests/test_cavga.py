"""CAVGA: Grad-CAM in JAX, the attention expansion loss, the sampled latent,
and both variants + FAS end to end."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from conftest import run_script
import method_runs
import method_settings
from method_runs import method_run
from tasad_jax.config.presets import tiny
from tasad_jax.evaluation import evaluate
from tasad_jax.data import weak_labels
from tasad_jax import methods
from tasad_jax.inference import predictor
from tasad_jax.core import sharding, stage, train_state
from tasad_jax.methods import cavga

SMALL = method_settings.SMALL['cavga']
SMALL_FLAGS = [f'--config.coarse.cavga.{k}={v}' for k, v in SMALL.items()]


def _config(**settings):
  config = tiny.get_config()
  config.coarse.name = 'cavga'
  for k, v in {**SMALL, **settings}.items():
    config.coarse.cavga[k] = v
  return config


def _batch(n=4, size=32, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.random((n, size, size, 3)).astype(np.float32)
  return {'image': image, 'augmented': image.copy(),
          'label': np.zeros(n, np.int32), 'real': np.zeros(n, np.int32)}


def _direct_gradcam(features, per_image_grad):
  """Grad-CAM by the book, one image at a time, in numpy."""
  out = []
  for f, g in zip(features, per_image_grad):
    alpha = g.mean(axis=(0, 1))  # Gradients averaged over space.
    cam = np.maximum((f * alpha).sum(-1), 0.0)  # Weighted sum, ReLU.
    out.append(cam / (cam.max() + 1e-8))
  return np.stack(out)


def test_gradcam_equals_the_direct_computation():
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(3, 4, 5, 6)), jnp.float32)
  w1 = jnp.asarray(rng.normal(size=(6, 7)), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(7,)), jnp.float32)

  # A small nonlinear head: per-position MLP, summed over space.
  def head(f):
    return jnp.sum(jnp.tanh(f @ w1) @ w2, axis=(-2, -1))

  attention, scores, aux = cavga.gradcam(lambda f: (head(f), 'aux'), features)
  grads = [np.asarray(jax.grad(head)(features[n])) for n in range(3)]
  np.testing.assert_allclose(attention, _direct_gradcam(np.asarray(features), grads),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scores, [head(features[n]) for n in range(3)],
                             rtol=1e-5)
  assert aux == 'aux' and attention.shape == (3, 4, 5)
  assert float(attention.min()) >= 0 and np.allclose(attention.max((1, 2)), 1)

  # A linear head: d s / d F is the weight vector at every position.
  w = rng.normal(size=6).astype(np.float32)
  linear, _, _ = cavga.gradcam(
      lambda f: (jnp.sum(f @ jnp.asarray(w), axis=(1, 2)), None), features)
  cam = np.maximum(np.asarray(features) @ w, 0)
  np.testing.assert_allclose(linear, cam / (cam.max((1, 2), keepdims=True) + 1e-8),
                             rtol=1e-5, atol=1e-6)


def test_attention_expansion_gradient_is_finite_and_raises_attention():
  """L_ae alone: finite gradients, also through Grad-CAM's own gradient (the
  latent head reaches A only through the gradient), and A grows over steps."""
  config = _config(rec_weight=0.0, kl_weight=0.0, adv_weight=0.0,
                   ae_weight=1.0, learning_rate=1e-3)
  mesh = sharding.make_mesh()
  method = methods.get(config)
  state = method.create_state(mesh)
  batch = _batch()
  v = train_state.split_networks(method.inference_variables(state))

  def ae_loss(latent_params):
    features = method.encoder.apply(v['encoder'], batch['image'])[-1]
    p = dict(v, latent={'params': latent_params})
    return jnp.mean(1.0 - method._attention(p, features, 'latent')[0])

  grads = jax.jit(jax.grad(ae_loss))(v['latent']['params'])  # One program.
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert max(float(jnp.abs(g).max()) for g in leaves) > 0

  program_at = stage.compile_phases(method, state, mesh)
  global_batch = sharding.to_global(batch, mesh)
  attention = []
  with jax.set_mesh(mesh):
    for i in range(6):
      state, m, finite = program_at(i)(state, global_batch, None)
      assert bool(finite)
      attention.append(float(m['attention']))
  assert attention[-1] > attention[0] + 0.02, attention
  assert np.isclose(float(m['ae']), 1.0 - attention[-1], atol=1e-5)


def _run(program_at, state, batch, steps, mesh):
  metrics = []
  with jax.set_mesh(mesh):
    for _ in range(steps):
      state, m, _ = program_at(int(state.step))(state, batch, None)
      metrics.append(float(m['rec']))
  return state, metrics


def test_sampled_latent_differs_between_steps_and_survives_a_resume(tmp_path):
  config = _config()
  mesh = sharding.make_mesh()
  method = methods.get(config)
  batch = sharding.to_global(_batch(), mesh)
  host = lambda s: jax.tree_util.tree_map(np.asarray, s)  # pylint: disable=unnecessary-lambda-assignment
  fresh = host(method.create_state(mesh))
  put = lambda s: jax.device_put(s, sharding.replicated(mesh))  # pylint: disable=unnecessary-lambda-assignment
  # One compiled step for every run of this method: the key comes from the
  # state's step number, not from anything the program keeps.
  program_at = stage.compile_phases(method, put(fresh), mesh)
  # Same parameters and batch, another step number: another draw of z.
  _, at0 = _run(program_at, put(fresh), batch, 1, mesh)
  _, at0_again = _run(program_at, put(fresh), batch, 1, mesh)
  _, at7 = _run(program_at, put(fresh.replace(step=np.int32(7))), batch, 1,
                mesh)
  assert at0 == at0_again and at0 != at7

  method_runs.assert_resume_is_exact(config, _batch(), tmp_path)


def test_cavga_with_fas_end_to_end(tmp_path):
  """CAVGA-Rw on one real defect per type, with FAS (`method_runs`; predict
  and export: the contract test): evaluate.py with the method's flags leaves
  the trained-on defect out; the same checkpoints evaluated with CAVGA-R's
  test map (the latent attention) too. CAVGA-R's own steps: the tests above."""
  config, trained_run, root, _ = method_run('cavga')
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run, workdir, ignore=shutil.ignore_patterns('eval'))
  flags = [f'--workdir={workdir}', f'--config.data.root={root}',
           '--config.data.category=widget', '--config.coarse.name=cavga',
           '--config.coarse.cavga.weak=True',
           '--config.data.labelled_anomalies=test:1', *SMALL_FLAGS]
  with open(os.path.join(workdir, weak_labels.RECORD)) as f:
    files = json.load(f)['files']
  # 'crack' has 2 images, 'hole' 1: one crack is trained on, none of hole.
  assert [os.path.basename(os.path.dirname(p)) for p in files] == ['crack']
  result = run_script('evaluate.py', *flags)
  assert result.returncode == 0, result.stderr
  assert 'cavga+fas' in result.stdout and 'cavga ' in result.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['labelled_anomalies_excluded'] == 1
  assert report['num_images'] == 4
  latent = config.copy_and_resolve_references()
  latent.coarse.cavga.map_attention = 'latent'
  latent.eval.folder = 'eval_latent'
  latent_report = evaluate.evaluate(latent, workdir, ['widget'])
  for r in (report, latent_report):
    assert r['coarse'] == 'cavga'
    for method in ('cas', 'tasad'):
      assert 0.0 <= r[method]['pixel_ap'] <= 1.0
  # Another test map: other coarse maps, the same images.
  assert report['cas'] != latent_report['cas']
  model = predictor.load(workdir)
  assert model.runner.coarse.method == 'cavga' and model.runner.coarse.weak
  assert 'discriminator' not in model.runner.cas['params']
