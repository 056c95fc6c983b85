"""Accelerator figures: train steps and two-stage inference at paper settings.

  python bench/accelerator.py [--width 128 --size 256 --dtype bfloat16]
      [--batches 8 16 32] [--max_batch] [--torch] [--compile_torch]

Prints JSON lines (one per measurement):

* `peak`: the measured dense bf16 matmul rate of the device (the reference
  for every `peak_share`);
* `cas_step`, `fas_step` (its input made inside the jitted step),
  `fas_step_given_input` (the same step fed a ready input; their difference is
  the FAS-input share of the FAS step), `fas_step_host_input` (the input made
  on the host, CAS forward + scikit-image per image, inside the timed region),
  `destseg_student`, `destseg_segnet`,
  `two_stage` (coarse -> FAS input -> FAS -> map -> score as one program) and
  `two_stage_host_input` (FAS input by scikit-image on the host) for each batch:
  seconds, images/s, XLA's FLOP count of the lowered program (cost analysis)
  and achieved FLOP/s with its share of the measured peak;
* `torch_cas_step` with `--torch`: the same CAS step in PyTorch (bf16 autocast,
  channels-last, `torch.compile` with `--compile_torch`) and JAX / PyTorch.

`--max_batch` doubles the CAS batch until the device runs out of memory and
reports the largest that fitted. Networks are randomly initialised (speed does
not depend on the weights); no TensorFlow, tfds or clu is imported (checked
with them blocked). It reads its settings from `configs/default.py`, which
needs ml_collections (pure Python): on an image without it,
`pip install --no-deps --target .device_deps ml_collections` beside the
checkout, carry `.device_deps` and run with `PYTHONPATH=.device_deps`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from tasad_jax.config.presets import default  # pylint: disable=g-import-not-at-top
from tasad_jax.fine import fas
from tasad_jax.inference import two_stage
from tasad_jax import methods
from tasad_jax.core import sharding, stage
import timing  # pylint: disable=g-import-not-at-top


def _flops(lowered) -> float:
  """XLA's FLOP count of a lowered program (0 when the backend gives none).

  Counted on the lowered HLO, so the program is not compiled a second time
  beside the jitted function that is timed.
  """
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def measure_peak(size: int, warmup: int, repeats: int) -> float:
  """FLOP/s of a [size, size] x [size, size] bf16 matmul on the device."""
  a = jnp.ones((size, size), jnp.bfloat16)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = timing.median_seconds(lambda: matmul(a, a).block_until_ready(), warmup, repeats)
  return 2.0 * size ** 3 / seconds


def _record(name, batch, seconds, flops, peak, **extra):
  out = {'bench': 'accelerator', 'what': name, 'backend': jax.default_backend(),
         'device': jax.devices()[0].device_kind, 'batch': batch,
         'step_s': round(seconds, 6), 'images_per_s': round(batch / seconds, 2),
         'xla_flops': flops,
         'flops_per_s': float(f'{flops / seconds:.4g}') if flops else None,
         'peak_share': round(flops / seconds / peak, 4) if flops else None}
  out.update(extra)
  print(json.dumps(out), flush=True)
  return out


def _host_batch(batch: int, size: int) -> dict:
  rng = np.random.default_rng(0)
  images = rng.random((batch, size, size, 3)).astype(np.float32)
  return {'image': images, 'augmented': images, 'fas_input': images,
          'mask': (rng.random((batch, size, size, 1)) > 0.9).astype(np.float32)}


def time_phase(trained: stage.Stage, mesh, batch: int, size: int, args,
               at_step: int = 0, context=None, host_prepare: bool = False
               ) -> tuple[float, float]:
  """(median seconds, XLA FLOPs) of one step of `trained`'s phase at `at_step`;
  with `host_prepare`, the stage's host-side batch preparation is timed too."""
  state = trained.create_state(mesh)
  program = stage.compile_phases(trained, state, mesh, context)(at_step)
  host = _host_batch(batch, size)

  def inputs_of(host):
    if host_prepare:
      host = trained.prepare_batch(host, context, mesh)
    return sharding.to_global({k: host[k] for k in trained.batch_keys()}, mesh)

  inputs = inputs_of(host)
  holder = [state]

  def run():
    ready = inputs_of(host) if host_prepare else inputs
    holder[0], metrics, _ = program(holder[0], ready, context)
    jax.block_until_ready(metrics)

  with jax.set_mesh(mesh):  # Lowered and called in one context: traced once.
    flops = _flops(program.lower(state, inputs, context))
    return timing.median_seconds(run, args.warmup, args.repeats), flops


def bench_batch(config, mesh, batch: int, peak: float, args) -> dict:
  size = config.data.image_size
  results = {}
  coarse = methods.get(config)
  seconds, flops = time_phase(coarse, mesh, batch, size, args)
  results['cas'] = _record('cas_step', batch, seconds, flops, peak)
  cas_variables = coarse.inference_variables(coarse.create_state(mesh))
  fine_stage = fas.FineStage(config, coarse)
  with_input = _record('fas_step', batch, *time_phase(
      fine_stage, mesh, batch, size, args, context=cas_variables), peak)
  config.refine.on_device = False  # Same step, fed a ready FAS input.
  host_fas = fas.FineStage(config, coarse)
  given = _record('fas_step_given_input', batch, *time_phase(
      host_fas, mesh, batch, size, args, context=cas_variables), peak)
  _record('fas_step_host_input', batch, *time_phase(
      host_fas, mesh, batch, size, args, context=cas_variables,
      host_prepare=True), peak)
  config.refine.on_device = True
  share = max(0.0, 1.0 - given['step_s'] / with_input['step_s'])
  print(json.dumps({'bench': 'accelerator', 'what': 'fas_input_share',
                    'batch': batch, 'share_of_fas_step': round(share, 4)}),
        flush=True)
  if args.destseg:
    destseg_config = config.copy_and_resolve_references()
    destseg_config.coarse.name = 'destseg'
    method = methods.get(destseg_config)
    for name, at in (('destseg_student', 0), ('destseg_segnet',
                                              method.student_steps)):
      _record(name, batch, *time_phase(method, mesh, batch, size, args, at),
              peak)
  images = _host_batch(batch, size)['image']
  rates = {}
  for on_device in (True, False):
    runner = two_stage.TwoStage(
        fine_stage, cas_variables,
        fine_stage.inference_variables(fine_stage.create_state(mesh)),
        fas.refine_params(config, training=False), mesh, on_device=on_device)
    seconds = timing.median_seconds(lambda runner=runner: runner(images), args.warmup,
                        args.repeats)
    rates[on_device] = batch / seconds
    flops = 0.0
    if on_device:
      x = sharding.to_global({'x': images}, mesh)['x']
      flops = _flops(runner._program.lower(  # pylint: disable=protected-access
          runner.cas, runner.fas, x))
    _record('two_stage' if on_device else 'two_stage_host_input', batch,
            seconds, flops, peak)
  print(json.dumps({'bench': 'accelerator', 'what': 'two_stage_speedup',
                    'batch': batch,
                    'device_over_host': round(rates[True] / rates[False], 3)}),
        flush=True)
  return results


def largest_batch(config, mesh, args, start: int) -> int:
  """The largest power-of-two CAS batch (from `start`) whose step runs."""
  fitted, batch = 0, start
  while batch <= args.max_batch_limit:
    try:
      time_phase(methods.get(config), mesh, batch, config.data.image_size,
                 argparse.Namespace(warmup=1, repeats=1))
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' in str(e) or 'out of memory' in str(e).lower():
        break
      raise
    fitted, batch = batch, batch * 2
  return fitted


def bench_torch(args, jax_step_s: float, batch: int) -> None:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print(json.dumps({'bench': 'accelerator', 'what': 'torch_cas_step',
                      'skipped': 'torch not installed'}), flush=True)
    return
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_reference  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  model = torch_reference.Segmenter(args.width).to(device).to(
      memory_format=torch.channels_last)
  step = torch_reference.make_step(
      model, dtype=torch.bfloat16 if args.dtype == 'bfloat16' else None)
  compiled = False
  if args.compile_torch:
    try:
      step = torch.compile(step)
      compiled = True
    except Exception:  # pylint: disable=broad-except
      compiled = False
  x = torch.rand(batch, 3, args.size, args.size, device=device).to(
      memory_format=torch.channels_last)
  mask = (torch.rand(batch, 1, args.size, args.size, device=device) > 0.9).float()

  def run():
    step(x, mask)
    if device == 'cuda':
      torch.cuda.synchronize()

  seconds = timing.median_seconds(run, args.warmup, args.repeats)
  print(json.dumps({
      'bench': 'accelerator', 'what': 'torch_cas_step', 'device': device,
      'torch': torch.__version__, 'compiled': compiled, 'batch': batch,
      'step_s': round(seconds, 6), 'images_per_s': round(batch / seconds, 2),
      'jax_over_torch': round(seconds / jax_step_s, 3)}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--batches', type=int, nargs='+', default=[8, 16, 32])
  parser.add_argument('--max_batch', action='store_true')
  parser.add_argument('--max_batch_limit', type=int, default=1024)
  parser.add_argument('--peak_size', type=int, default=8192)
  parser.add_argument('--destseg', action='store_true')
  parser.add_argument('--torch', action='store_true')
  parser.add_argument('--compile_torch', action='store_true')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  config = default.get_config()
  config.model.width, config.model.dtype = args.width, args.dtype
  config.data.image_size = args.size
  config.train.cas_steps = config.train.fas_steps = 1000
  mesh = sharding.make_mesh()
  peak = measure_peak(args.peak_size, args.warmup, args.repeats)
  print(json.dumps({'bench': 'accelerator', 'what': 'peak',
                    'backend': jax.default_backend(),
                    'device': jax.devices()[0].device_kind,
                    'bf16_matmul_flops_per_s': float(f'{peak:.4g}')}),
        flush=True)
  batches = list(args.batches)
  if args.max_batch:
    largest = largest_batch(config, mesh, args, max(batches))
    print(json.dumps({'bench': 'accelerator', 'what': 'max_batch',
                      'cas_batch': largest}), flush=True)
    if largest and largest not in batches:
      batches.append(largest)
  for batch in batches:
    results = bench_batch(config, mesh, batch, peak, args)
    if args.torch:
      bench_torch(args, results['cas']['step_s'], batch)


if __name__ == '__main__':
  main()
