"""Train state of any stage: several networks, an optimiser per group.

The generic bottom layer of training (no method, no TensorFlow): one pytree
holds every array a stage trains or keeps (checkpointed whole), optimisers
update named groups of networks, and a step that saw a non-finite loss or
gradient changes nothing but its step counter. `with_ema` makes a state that
also keeps an exponential moving average of its parameters
(config.train.ema_decay; not the paper's), which inference reads
(`averaged`).

    state = TrainState.create(
        networks={'generator': g_vars, 'discriminator': d_vars},
        optimizers=[Optimizer('g', ('generator',), optax.adam(1e-4)),
                    Optimizer('d', ('discriminator',), optax.adam(1e-4))])
    state = state.apply_gradients('d', d_grads, d_stats)
    state = state.apply_gradients('g', g_grads, g_stats)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, NamedTuple

from flax import struct
import jax
import jax.numpy as jnp
import optax


class Optimizer(NamedTuple):
  """An optax transform over the parameters of some networks."""
  name: str
  networks: tuple[str, ...]
  tx: optax.GradientTransformation


class TrainState(struct.PyTreeNode):
  """Step, per-network parameters and BatchNorm statistics, optimiser states.

  Attributes:
    step: steps taken (also by skipped non-finite steps).
    params: {network: parameters} of the trained networks.
    batch_stats: {network: BatchNorm statistics} (empty dict: none).
    frozen: {network: parameters} kept fixed (e.g. a pretrained teacher).
    opt_state: {optimizer name: optax state}.
    optimizers: the Optimizer of each group (static, not checkpointed).
  """
  step: jax.Array
  params: dict
  batch_stats: dict
  frozen: dict
  opt_state: dict
  optimizers: tuple[Optimizer, ...] = struct.field(pytree_node=False)

  @classmethod
  def create(cls, networks: dict[str, dict], optimizers: Iterable[Optimizer],
             frozen: Iterable[str] = ()) -> 'TrainState':
    """A state at step 0 from each network's flax variables.

    Args:
      networks: {name: {'params': ..., 'batch_stats'?: ...}}.
      optimizers: one per group of trained networks; every network not in
        `frozen` must belong to exactly one.
      frozen: networks whose parameters are kept fixed.
    """
    optimizers, frozen = tuple(optimizers), set(frozen)
    owned = [n for o in optimizers for n in o.networks]
    trained = sorted(set(networks) - frozen)
    if sorted(owned) != trained:
      raise ValueError(f'optimizers cover {sorted(owned)}, trained networks '
                       f'are {trained}')
    params = {n: networks[n]['params'] for n in trained}
    return cls(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats={n: v['batch_stats'] for n, v in networks.items()
                     if 'batch_stats' in v},
        frozen={n: networks[n]['params'] for n in sorted(frozen)},
        opt_state={o.name: o.tx.init({n: params[n] for n in o.networks})
                   for o in optimizers},
        optimizers=optimizers)

  @property
  def variables(self) -> dict:
    """{'params': {network: ...}, 'batch_stats': {network: ...}} of all networks."""
    return {'params': {**self.params, **self.frozen},
            'batch_stats': self.batch_stats}

  def network(self, name: str) -> dict:
    """The flax variables of one network, as its `apply` takes them."""
    return network_variables(self.variables, name)

  def apply_gradients(self, optimizer: str, grads: dict,
                      batch_stats: dict | None = None) -> 'TrainState':
    """One update of an optimiser's networks; `grads` is {network: grads}.

    `batch_stats` ({network: statistics}) replaces those networks' statistics.
    The step counter does not move (`finish_step` moves it once per step).
    """
    opt = next(o for o in self.optimizers if o.name == optimizer)
    current = {n: self.params[n] for n in opt.networks}
    updates, opt_state = opt.tx.update(grads, self.opt_state[optimizer], current)
    new = optax.apply_updates(current, updates)
    return self.replace(
        params={**self.params, **new},
        batch_stats={**self.batch_stats, **(batch_stats or {})},
        opt_state={**self.opt_state, optimizer: opt_state})

  def with_ema(self, decay: float) -> 'TrainState':
    """This state keeping an EMA of its parameters (`EmaTrainState`) when
    `decay` > 0; itself, unchanged, when 0 (no new arrays: checkpoints keep
    their layout and old ones restore)."""
    if not decay:
      return self
    fields = {f.name: getattr(self, f.name)
              for f in dataclasses.fields(TrainState)}
    # A copy: the average and the parameters must not share buffers (the
    # step donates the state).
    return EmaTrainState(**fields, ema_decay=float(decay),
                         ema=jax.tree_util.tree_map(jnp.copy, self.params))

  def averaged(self) -> 'TrainState':
    """The state inference reads: itself (see `EmaTrainState.averaged`)."""
    return self

  def update_ema(self, step: jax.Array) -> 'TrainState':
    """Itself: no moving average kept (see `EmaTrainState.update_ema`)."""
    del step
    return self


class EmaTrainState(TrainState):
  """A TrainState that also keeps an EMA of its parameters.

  After each step's updates (`finish_step`), ema = d * ema + (1 - d) * params
  with d = `ema_decay_at(ema_decay, step)`; a skipped non-finite step leaves
  it as it was. Only `params` (the trained networks) are averaged: frozen
  networks do not change, and the BatchNorm statistics used with the average
  are the live ones (already a running mean of recent batches; averaging
  them again would only add lag). Inference reads the average (`averaged`).

  Attributes:
    ema: {network: averaged parameters}, the structure of `params`.
    ema_decay: the decay d (static, from config.train.ema_decay).
  """
  ema: dict
  ema_decay: float = struct.field(pytree_node=False)

  def averaged(self) -> 'TrainState':
    """This state with the average in place of the parameters."""
    return self.replace(params=self.ema)

  def update_ema(self, step: jax.Array) -> 'TrainState':
    """The average moved towards the current parameters; `step` is the
    number of updates before this one."""
    d = ema_decay_at(self.ema_decay, step)
    return self.replace(ema=jax.tree_util.tree_map(
        lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype),
        self.ema, self.params))


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay of the update after `step` updates: min(decay, (1 + step) /
  (10 + step)). The warm-up (TensorFlow's ExponentialMovingAverage with
  num_updates) keeps the initial parameters from weighing on the average of a
  short run: 0.1 at the first update; a decay of 0.999 applies from about
  step 9000 on."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def network_variables(variables: dict, name: str) -> dict:
  """{'params', 'batch_stats'?} of network `name` in a state's `variables`."""
  out = {'params': variables['params'][name]}
  if name in variables.get('batch_stats', {}):
    out['batch_stats'] = variables['batch_stats'][name]
  return out


def split_networks(variables: dict) -> dict[str, dict]:
  """{'params': {net: ...}, 'batch_stats': {net: ...}} -> {net: its variables}."""
  return {name: network_variables(variables, name) for name in variables['params']}


def all_finite(*trees: Any) -> jax.Array:
  """Whether every entry of every array in `trees` is finite."""
  leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def finish_step(state: TrainState, updated: TrainState,
                finite: jax.Array) -> TrainState:
  """`updated` (its moving average moved, if it keeps one) if `finite`, else
  `state`; the step counter moves either way."""
  updated = updated.update_ema(state.step)
  new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b),
                               updated, state)
  return new.replace(step=state.step + 1)


SCHEDULES = ('step', 'cosine')


def piecewise_schedule(learning_rate: float, steps: int,
                       decay_at: Iterable[float] = (),
                       decay_factor: float = 1.0) -> optax.Schedule:
  """Constant `learning_rate`, times `decay_factor` at each fraction of `steps`."""
  boundaries: dict[int, float] = {}
  for fraction in decay_at:
    at = int(fraction * steps)
    boundaries[at] = boundaries.get(at, 1.0) * decay_factor
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def schedule_fields(train_config) -> tuple[str, float]:
  """(lr_schedule, lr_warmup) of config.train."""
  return train_config.lr_schedule, float(train_config.lr_warmup)


def lr_schedule(train_config, learning_rate: float, steps: int) -> optax.Schedule:
  """The learning rate over `steps` that `train_config` (config.train) asks for.

  `lr_schedule` 'step' (TASAD's): `learning_rate`, times `lr_decay_factor` at
  each `lr_decay_at` fraction of the steps; 'cosine': a linear warm-up from 0
  over the `lr_warmup` fraction of the steps, then a cosine decay to 0, the
  common choice when the step budget is short. Configs written before these
  fields existed get the step schedule without warm-up.
  """
  kind, warmup_fraction = schedule_fields(train_config)
  warmup = int(warmup_fraction * steps)
  if kind == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), 0.0)
  decay = piecewise_schedule(learning_rate, steps, train_config.lr_decay_at,
                             train_config.lr_decay_factor)
  if not warmup:
    return decay
  return lambda step: jnp.where(step < warmup,
                                learning_rate * step / warmup, decay(step))
