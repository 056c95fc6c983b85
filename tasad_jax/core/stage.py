"""The contract every trainable stage keeps, and the jitted programs it makes.

A stage (a coarse method, or TASAD's fine stage around one) gives:

* `create_state(mesh)`: its `TrainState` (deterministic in config.seed),
  replicated over the mesh; training starts from `initial_state(mesh)`, the
  same with the moving average of its parameters that
  config.train.ema_decay asks for (`TrainState.with_ema`), and
  `abstract_state(mesh)` is that one's shape alone, the template checkpoints
  restore into;
* `phases()`: its training phases, each a pure function
  `(state, batch, rng, context) -> (state, metrics, finite)` and the first
  step it runs at. `batch` holds `batch_keys()` of the train stream (split
  over the mesh), `rng` is a key folded in by the step number (the same
  stream after a resume), `context` is read-only replicated data from earlier
  stages (`context(workdir, mesh)`, e.g. the frozen coarse variables of the
  fine stage; None for most). `metrics` is a flat dict of scalars; a
  non-finite step must leave the state unchanged but for its step counter
  (`train_state.finish_step` does it, and moves the moving average);
* `prepare_batch(batch, context, mesh)`: host-side work on a numpy batch before the
  step (identity unless a stage needs the host, e.g. scikit-image SLIC);
* `summary_images(state, batch, context, mesh)`: a few images for TensorBoard;
* `inference_variables(state)`: what inference needs (no optimiser states, no
  discriminators), the only variables that reach maps, export and predict;
  a trained state is read through `trained_variables(state)`, which gives
  them of its moving average of the parameters when it keeps one.

This module is the generic layer: it imports no method. Each phase becomes
one jitted program with fixed shardings (batch split on 'data', the state
replicated and donated); the host picks the phase by step number (a
`lax.cond` over phases costs ~20x on XLA:CPU).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from tasad_jax.core import sharding
from tasad_jax.core.train_state import TrainState

# (state, batch, rng, context) -> (state, {name: scalar}, finite flag)
PhaseFn = Callable[[TrainState, dict, jax.Array, Any],
                   tuple[TrainState, dict, jax.Array]]


_ABSTRACT_STATES: dict = {}  # (stage type, config key, mesh) -> abstract state
_MAX_ABSTRACT_STATES = 16


def _config_key(config) -> str:
  """Every field of a config, as text: equal configs give equal keys."""
  if hasattr(config, 'to_json_best_effort'):
    return config.to_json_best_effort(sort_keys=True)
  return repr(config)


@dataclasses.dataclass(frozen=True)
class Phase:
  """A training phase: its step function and the first step it runs at."""
  start: int
  fn: PhaseFn
  name: str = 'train'


class Stage(abc.ABC):
  """A trainable stage; `name` is its checkpoint and log folder."""

  name: str = ''
  seed_index: int = 0  # Folded into config.seed for init and step keys.

  def __init__(self, config):
    self.config = config

  @property
  def num_steps(self) -> int:
    return int(self.config.train[f'{self.name}_steps'])

  def init_key(self) -> jax.Array:
    return jax.random.fold_in(jax.random.key(self.config.seed), self.seed_index)

  @abc.abstractmethod
  def create_state(self, mesh) -> TrainState:
    """The initial train state, replicated over `mesh`."""

  def initial_state(self, mesh) -> TrainState:
    """`create_state`, keeping an EMA of the parameters when
    config.train.ema_decay > 0 (replicated like them); unchanged when 0."""
    state = self.create_state(mesh)
    decay = float(self.config.train.ema_decay)
    if not decay:
      return state
    return jax.device_put(state.with_ema(decay), sharding.replicated(mesh))

  def abstract_state(self, mesh) -> TrainState:
    """The state's structure, shapes, dtypes and replicated shardings, without
    initialising it: the template a checkpoint restores into (compiling an
    initialiser costs seconds; tracing it less, but a run restores the same
    stage several times: kept per stage type, config and mesh)."""
    key = (type(self), _config_key(self.config), mesh)
    if key not in _ABSTRACT_STATES:
      if len(_ABSTRACT_STATES) >= _MAX_ABSTRACT_STATES:
        _ABSTRACT_STATES.pop(next(iter(_ABSTRACT_STATES)))
      shapes = jax.eval_shape(lambda: self.initial_state(mesh))
      rep = sharding.replicated(mesh)
      _ABSTRACT_STATES[key] = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
          shapes)
    return _ABSTRACT_STATES[key]

  @abc.abstractmethod
  def phases(self) -> list[Phase]:
    """The training phases in order of their first step (the first at 0)."""

  def batch_keys(self) -> tuple[str, ...]:
    """The keys of the (prepared) train batch the phases read."""
    return ('augmented', 'mask')

  def context(self, workdir: str, mesh) -> Any:
    """Read-only replicated inputs of every step (None: none)."""
    del workdir, mesh
    return None

  def prepare_batch(self, batch: dict[str, np.ndarray], context: Any, mesh
                    ) -> dict[str, np.ndarray]:
    """Host-side preparation of this process's numpy batch (default: none)."""
    del context, mesh
    return batch

  def summary_images(self, state: TrainState, batch: dict[str, np.ndarray],
                     context: Any, mesh) -> dict[str, np.ndarray]:
    """Images [n, H, W, C] in [0, 1] by name, for TensorBoard (default none).

    `batch` is this process's prepared numpy batch; the state is global.
    """
    del state, batch, context, mesh
    return {}

  def inference_variables(self, state: TrainState) -> Any:
    """The variables inference takes (default: every network's)."""
    return state.variables

  def trained_variables(self, state: TrainState) -> Any:
    """`inference_variables` of a trained state's averaged parameters (the
    EMA of config.train.ema_decay, else the parameters): what evaluation,
    export, predict and the fine stage's coarse input read."""
    return self.inference_variables(state.averaged())

  def check_config(self) -> None:
    """Raises UserInputError naming a bad field of this stage."""


# XLA:CPU at its default LLVM -O2 took 7-32 s to compile the bundled methods'
# initialisers (a few hundred small random-number fusions, run once); at -O1
# 5-9 s, with the same bits (checked on every method; tests/test_models.py
# checks the building blocks).
CPU_INIT_OPTIONS = {'xla_backend_optimization_level': 1}


def jit_init(fn: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
  """`jax.jit(fn)` for a network initialiser `fn(key)`, compiled for a single
  run; inside another trace (`abstract_state`) it is only traced."""

  def init(key: jax.Array) -> Any:
    compiled_here = not isinstance(key, jax.core.Tracer)
    cpu = compiled_here and jax.default_backend() == 'cpu'
    return jax.jit(fn, compiler_options=CPU_INIT_OPTIONS if cpu else None)(key)
  return init


def compile_phases(stage: Stage, state: TrainState, mesh, context: Any = None
                   ) -> Callable[[int], Callable]:
  """Jits each phase of `stage`; returns step -> the program of that step.

  Each program is `(state, batch, context) -> (state, metrics, finite)`, with
  the phase's key `fold_in(fold_in(key(seed), stage), step)` made inside.
  """
  state_sharding = jax.tree_util.tree_map(lambda x: x.sharding, state)
  rep = sharding.replicated(mesh)
  context_sharding = jax.tree_util.tree_map(lambda _: rep, context)
  key = stage.init_key()
  programs = []
  for phase in sorted(stage.phases(), key=lambda p: p.start):

    def step(state, batch, context, fn=phase.fn):
      return fn(state, batch, jax.random.fold_in(key, state.step), context)

    programs.append((phase.start, jax.jit(
        step, in_shardings=(state_sharding, sharding.batch_sharded(mesh),
                            context_sharding),
        out_shardings=(state_sharding, rep, rep), donate_argnums=(0,))))

  def program_at(step: int) -> Callable:
    return [fn for start, fn in programs if step >= start][-1]
  return program_at


def make_predict(fn: Callable, mesh) -> Callable:
  """Jitted `fn(variables, images)` with variables replicated, images and
  outputs split over the batch."""
  return jax.jit(fn, in_shardings=(sharding.replicated(mesh),
                                   sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))
