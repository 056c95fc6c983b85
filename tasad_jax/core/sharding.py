"""Data parallelism with `jax.jit` and `jax.sharding` over a 1-D data mesh.

The batch is split over the 'data' axis of a mesh of all devices; the train
state is replicated. Under jit, reductions over the batch (BatchNorm statistics,
losses) are global-batch reductions: XLA inserts the cross-device sums. Each
process feeds its own rows of the global batch. The mesh axis type is given
explicitly as `Auto`: the jitted functions' input and output shardings are
fixed, and XLA propagates shardings inside them (with `Explicit`, every
concatenation or padding in the superpixel code would need its own sharding).
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' (axis type Auto) over `devices` (default: all)."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Assembles this process's rows into global arrays split over 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def to_local(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order."""
  if jax.process_count() == 1:
    return np.asarray(array)
  shards = {}
  for shard in array.addressable_shards:
    start = shard.index[0].start or 0
    shards.setdefault(start, np.asarray(shard.data))
  return np.concatenate([shards[k] for k in sorted(shards)])
