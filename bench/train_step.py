"""Speed of the jitted CAS train step, beside a plain PyTorch step.

  python bench/train_step.py --width 32 --size 128 --batch 4 [--dtype bfloat16]

Prints one JSON line: `step_s` (median seconds per step), `images_per_s`,
`flops_per_s` (convolution FLOPs counted analytically: forward + backward = 3x
forward) on the JAX devices present, and the same for PyTorch when it is
installed (`torch_*`). With `--fas`, also the FAS step with its input made
inside the jitted step (`fas_step_s_device_input`) and on the host
(`fas_step_s_host_input`, CAS forward + scikit-image per image). With
`--destseg`, also DeSTSeg's step in each phase (`destseg_student_step_s`,
`destseg_segnet_step_s`, segmentation width `--seg_channels`). Arrays are made
on device; TensorFlow is not needed.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from configs import default  # pylint: disable=g-import-not-at-top
from tasad_jax import models, sharding, steps


def _median_time(fn, warmup, repeats):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _setup(args):
  """The config of the benchmark's settings, the mesh, and CAS's train state."""
  config = default.get_config()
  config.model.width = args.width
  config.model.dtype = args.dtype
  config.data.image_size = args.size
  mesh = sharding.make_mesh()
  return config, mesh, steps.create_train_state(config, 'cas', mesh)


def bench_jax(args):
  config, mesh, state = _setup(args)
  step_fn = steps.make_train_step(config, 'cas', mesh, state)
  key = jax.random.key(0)
  shape = (args.batch, args.size, args.size)
  batch = jax.device_put({
      'augmented': jax.random.uniform(key, shape + (3,)),
      'mask': (jax.random.uniform(key, shape + (1,)) > 0.9).astype(jnp.float32),
  }, sharding.batch_sharded(mesh))
  holder = [state]

  def run():
    holder[0], m, _ = step_fn(holder[0], batch)
    jax.block_until_ready(m)

  with jax.set_mesh(mesh):
    return _median_time(run, args.warmup, args.repeats)


def bench_fas(args):
  """FAS step with the FAS input made inside the step vs on the host."""
  from tasad_jax import refine  # pylint: disable=g-import-not-at-top
  config, mesh, cas = _setup(args)
  cas_variables = cas.variables
  shape = (args.batch, args.size, args.size)
  rng = np.random.default_rng(0)
  images = rng.random(shape + (3,)).astype(np.float32)
  mask = (rng.random(shape + (1,)) > 0.9).astype(np.float32)
  result = {}
  for on_device in (True, False):
    config.refine.on_device = on_device
    holder = [steps.create_train_state(config, 'fas', mesh)]
    step_fn = steps.make_train_step(config, 'fas', mesh, holder[0])
    predict = steps.make_predict(steps.create_model(config), mesh)
    params = steps.refine_params(config, training=True)

    def run():
      batch = sharding.to_global({'augmented': images, 'mask': mask}, mesh)
      if on_device:
        holder[0], m, _ = step_fn(holder[0], batch, cas_variables)
      else:
        coarse = np.asarray(predict(cas_variables, batch['augmented']))
        fas_input = refine.fas_inputs(coarse, images, params)
        holder[0], m, _ = step_fn(holder[0], sharding.to_global(
            {'fas_input': fas_input, 'mask': mask}, mesh))
      jax.block_until_ready(m)

    with jax.set_mesh(mesh):
      result['fas_step_s_device_input' if on_device else
             'fas_step_s_host_input'] = round(
                 _median_time(run, args.warmup, args.repeats), 5)
  return result


def bench_destseg(args):
  """DeSTSeg's train step in phase 1 (student) and phase 2 (segmentation)."""
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  config, mesh, _ = _setup(args)
  config.coarse.name = 'destseg'
  config.coarse.destseg.seg_channels = args.seg_channels
  method = methods.get(config)
  holder = [method.create_train_state(mesh)]
  step_fn = steps.make_train_step(config, 'cas', mesh, holder[0])
  rng = np.random.default_rng(0)
  shape = (args.batch, args.size, args.size)
  images = rng.random(shape + (3,)).astype(np.float32)
  batch = sharding.to_global({
      'image': images, 'augmented': images,
      'mask': (rng.random(shape + (1,)) > 0.9).astype(np.float32)}, mesh)
  result = {'seg_channels': args.seg_channels}
  for name, step in (('student', 0), ('segnet', method.student_steps)):
    def run(step=step):
      holder[0], m, _ = step_fn(holder[0], batch, step=step)
      jax.block_until_ready(m)
    with jax.set_mesh(mesh):
      result[f'destseg_{name}_step_s'] = round(
          _median_time(run, args.warmup, args.repeats), 5)
  return result


def bench_torch(args):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_reference  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  model = torch_reference.Segmenter(args.width).to(device)
  if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
  dtype = torch.bfloat16 if args.dtype == 'bfloat16' else None
  step = torch_reference.make_step(model, dtype=dtype)
  x = torch.rand(args.batch, 3, args.size, args.size, device=device)
  mask = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.9).float()
  if args.channels_last:
    x = x.to(memory_format=torch.channels_last)

  def run():
    step(x, mask)
    if device == 'cuda':
      torch.cuda.synchronize()

  return _median_time(run, args.warmup, args.repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=32)
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--channels_last', action='store_true',
                      help='PyTorch in channels-last memory format.')
  parser.add_argument('--fas', action='store_true',
                      help='Also time the FAS step, FAS input on device vs host.')
  parser.add_argument('--destseg', action='store_true',
                      help="Also time DeSTSeg's step in both phases.")
  parser.add_argument('--seg_channels', type=int, default=256)
  args = parser.parse_args()
  flops = 3 * models.forward_flops(args.width, args.size) * args.batch
  step_s = bench_jax(args)
  result = {
      'bench': 'train_step', 'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind, 'devices': jax.device_count(),
      'width': args.width, 'size': args.size, 'batch': args.batch,
      'dtype': args.dtype, 'step_s': round(step_s, 5),
      'images_per_s': round(args.batch / step_s, 2),
      'flops_per_s': float(f'{flops / step_s:.4g}'),
  }
  if args.fas:
    result.update(bench_fas(args))
  if args.destseg:
    result.update(bench_destseg(args))
  torch_s = None if args.no_torch else bench_torch(args)
  if torch_s is not None:
    result.update({'torch_step_s': round(torch_s, 5),
                   'torch_images_per_s': round(args.batch / torch_s, 2),
                   'jax_speed_over_torch': round(torch_s / step_s, 3)})
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
