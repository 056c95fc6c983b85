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
import numpy as np

from configs import default  # pylint: disable=g-import-not-at-top
from tasad_jax import fine, methods, models, sharding, stage


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
  """The config of the benchmark's settings and the mesh."""
  config = default.get_config()
  config.model.width = args.width
  config.model.dtype = args.dtype
  config.data.image_size = args.size
  return config, sharding.make_mesh()


def _batch(args, mesh, keys=('image', 'augmented', 'mask')) -> dict:
  rng = np.random.default_rng(0)
  shape = (args.batch, args.size, args.size)
  images = rng.random(shape + (3,)).astype(np.float32)
  arrays = {'image': images, 'augmented': images, 'fas_input': images,
            'mask': (rng.random(shape + (1,)) > 0.9).astype(np.float32)}
  return {k: arrays[k] for k in keys}


def time_stage(args, trained: stage.Stage, mesh, context=None,
               at_step: int = 0, prepare=None) -> float:
  """Median seconds of one step of `trained` (the phase of `at_step`), with
  `prepare(batch)` (host work) inside the timed region when given."""
  holder = [trained.create_state(mesh)]
  program = stage.compile_phases(trained, holder[0], mesh, context)(at_step)
  host = _batch(args, mesh)

  def run():
    batch = prepare(host) if prepare else host
    batch = sharding.to_global({k: batch[k] for k in trained.batch_keys()}, mesh)
    holder[0], m, _ = program(holder[0], batch, context)
    jax.block_until_ready(m)

  with jax.set_mesh(mesh):
    return _median_time(run, args.warmup, args.repeats)


def bench_jax(args):
  config, mesh = _setup(args)
  return time_stage(args, methods.get(config), mesh)


def bench_fas(args):
  """FAS step with the FAS input made inside the step vs on the host."""
  config, mesh = _setup(args)
  coarse = methods.get(config)
  cas_variables = coarse.inference_variables(coarse.create_state(mesh))
  result = {}
  for on_device in (True, False):
    config.refine.on_device = on_device
    fas = fine.FineStage(config, coarse)
    key = 'fas_step_s_device_input' if on_device else 'fas_step_s_host_input'
    result[key] = round(time_stage(
        args, fas, mesh, cas_variables,
        prepare=lambda b, fas=fas: fas.prepare_batch(b, cas_variables, mesh)),
                        5)
  return result


def bench_destseg(args):
  """DeSTSeg's train step in phase 1 (student) and phase 2 (segmentation)."""
  config, mesh = _setup(args)
  config.coarse.name = 'destseg'
  config.coarse.destseg.seg_channels = args.seg_channels
  method = methods.get(config)
  result = {'seg_channels': args.seg_channels}
  for name, step in (('student', 0), ('segnet', method.student_steps)):
    result[f'destseg_{name}_step_s'] = round(
        time_stage(args, method, mesh, at_step=step), 5)
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
