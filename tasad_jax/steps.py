"""Train state, train step and forward pass of a stage, free of TensorFlow.

One jitted step per stage over a 1-D data mesh: the batch is split on 'data',
the state is replicated and donated. Adam with the learning rate multiplied by
`lr_decay_factor` at each fraction of `lr_decay_at`. The benchmarks import this
module on machines without TensorFlow.
"""

import functools
from typing import Any, Callable

from clu import metrics
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from tasad_jax import losses, models, refine, sharding

STAGES = ('cas', 'fas')


class TrainState(train_state.TrainState):
  """Flax train state plus BatchNorm statistics."""
  batch_stats: Any

  @property
  def variables(self) -> dict:
    """The model's variables, as `model.apply` takes them."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


@flax.struct.dataclass
class CasMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  mse: metrics.Average.from_output('mse')
  ssim: metrics.Average.from_output('ssim')
  learning_rate: metrics.LastValue.from_output('learning_rate')


@flax.struct.dataclass
class FasMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  mse: metrics.Average.from_output('mse')
  learning_rate: metrics.LastValue.from_output('learning_rate')


_STAGE = {
    'cas': (losses.cas_loss, 'augmented', CasMetrics),
    'fas': (losses.fas_loss, 'fas_input', FasMetrics),
}


def create_model(config) -> models.Segmenter:
  return models.Segmenter(width=config.model.width,
                          dtype=jnp.dtype(config.model.dtype))


def num_steps(config, stage: str) -> int:
  return int(config.train[f'{stage}_steps'])


def learning_rate_schedule(config, steps: int) -> optax.Schedule:
  """Constant, times `lr_decay_factor` at each fraction in `lr_decay_at`."""
  boundaries = {}
  for fraction in config.train.lr_decay_at:
    at = int(fraction * steps)
    boundaries[at] = boundaries.get(at, 1.0) * config.train.lr_decay_factor
  return optax.piecewise_constant_schedule(config.train.learning_rate, boundaries)


@functools.lru_cache(maxsize=8)
def _jitted_init(model: models.Segmenter, size: int) -> Callable:
  """model.init compiled once per (model, size), reused by every stage."""
  return jax.jit(lambda key: model.init(key, jnp.zeros((1, size, size, 3)),
                                        train=False))


def create_train_state(config, stage: str, mesh) -> TrainState:
  """Initialises a stage's state (deterministic in config.seed), replicated."""
  model = create_model(config)
  tx = optax.adam(learning_rate_schedule(config, num_steps(config, stage)))
  key = jax.random.fold_in(jax.random.key(config.seed), STAGES.index(stage))
  variables = _jitted_init(model, config.data.image_size)(key)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'],
                            batch_stats=variables['batch_stats'], tx=tx)
  return jax.device_put(state, sharding.replicated(mesh))


def fine_input(coarse_fn: Callable, cas_variables: Any, images: jax.Array,
               params: refine.RefineParams) -> tuple[jax.Array, jax.Array]:
  """Frozen coarse stage on `images`, then the FAS input on device.

  Args:
    coarse_fn: (variables, images) -> maps, the coarse method's `anomaly_map`.

  Returns:
    (coarse maps, fas_input).
  """
  coarse = jax.lax.stop_gradient(coarse_fn(cas_variables, images))
  return coarse, refine.fas_inputs_device(coarse, images, params)[0]


def all_finite(loss: jax.Array, grads: Any) -> jax.Array:
  """Whether the loss and every gradient entry are finite."""
  return jnp.isfinite(loss) & jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))


def keep_if_finite(state: Any, updated: Any, finite: jax.Array) -> Any:
  """`updated` if `finite`, else `state`; the step counter moves either way."""
  new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old),
                                     updated, state)
  return new_state.replace(step=state.step + 1)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               cas_variables: Any = None, *, stage: str,
               schedule: optax.Schedule,
               refine_params: refine.RefineParams | None = None,
               coarse_fn: Callable | None = None):
  """One optimiser step of `stage` on a global batch.

  For FAS with `refine_params`, the FAS input is made inside the step from
  `batch['augmented']` by the frozen coarse stage (`coarse_fn` with
  `cas_variables`); otherwise the batch
  carries the network's input (`augmented` or a host-made `fas_input`).

  A step whose loss or gradients are not finite leaves the parameters,
  optimiser and BatchNorm statistics unchanged (only the step counter moves)
  and reports `finite = False`; the training loop decides to stop or go on.

  Returns:
    (new state, metrics collection of the step, finite flag).
  """
  loss_fn, key, collection = _STAGE[stage]
  if refine_params is not None:
    batch = dict(batch, fas_input=fine_input(coarse_fn, cas_variables,
                                             batch['augmented'], refine_params)[1])

  def compute_loss(params):
    prediction, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch[key],
        train=True, mutable=['batch_stats'])
    loss, parts = loss_fn(prediction, batch['mask'])
    return loss, (updates['batch_stats'], parts)

  (loss, (batch_stats, parts)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  finite = all_finite(loss, grads)
  new_state = keep_if_finite(
      state, state.apply_gradients(grads=grads, batch_stats=batch_stats), finite)
  step_metrics = collection.single_from_model_output(
      loss=loss[None], learning_rate=schedule(state.step)[None],
      mask=finite[None], **{k: v[None] for k, v in parts.items()})
  return new_state, step_metrics, finite


def refine_params(config, training: bool) -> refine.RefineParams:
  """The FAS-input thresholds of training or of test (config.refine)."""
  r = config.refine
  return refine.RefineParams(
      histogram_fraction=r.train_histogram_fraction if training else r.test_histogram_fraction,
      seed_threshold=r.train_seed_threshold if training else r.test_seed_threshold,
      n_segments=r.n_segments, compactness=r.compactness, sigma=r.sigma)


def make_train_step(config, stage: str, mesh, state: Any) -> Callable:
  """The jitted, sharded, state-donating train step of a stage.

  The 'cas' stage runs the coarse method's steps (`config.coarse.name`), one
  jitted program per training phase: its arguments are (state, batch,
  step=<steps already done>), the step choosing the phase on the host. FAS
  takes (state, batch) or, with `config.refine.on_device`, (state, batch,
  cas_variables).
  """
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  state_sharding = jax.tree_util.tree_map(lambda x: x.sharding, state)
  outs = (state_sharding, sharding.replicated(mesh), sharding.replicated(mesh))
  if stage == 'cas':
    phases = [(start, jax.jit(fn, in_shardings=(state_sharding,
                                                sharding.batch_sharded(mesh)),
                              out_shardings=outs, donate_argnums=(0,)))
              for start, fn in methods.get(config).phases()]

    def phased_step(state, batch, step: int = 0):
      return [fn for start, fn in phases if step >= start][-1](state, batch)
    return phased_step
  schedule = learning_rate_schedule(config, num_steps(config, stage))
  if config.refine.on_device:
    return jax.jit(
        functools.partial(train_step, stage=stage, schedule=schedule,
                          refine_params=refine_params(config, training=True),
                          coarse_fn=methods.get(config).anomaly_map),
        in_shardings=(state_sharding, sharding.batch_sharded(mesh),
                      sharding.replicated(mesh)),
        out_shardings=outs, donate_argnums=(0,))
  return jax.jit(
      functools.partial(train_step, stage=stage, schedule=schedule),
      in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
      out_shardings=outs, donate_argnums=(0,))


def make_predict(fn: Callable | models.Segmenter, mesh) -> Callable:
  """Jitted, batch-sharded `fn(variables, images) -> maps` (a Segmenter: its
  eval-mode forward pass)."""
  if isinstance(fn, models.Segmenter):
    fn = functools.partial(fn.apply, train=False)
  return jax.jit(fn, in_shardings=(sharding.replicated(mesh),
                                   sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


def input_key(stage: str) -> str:
  """The batch key a stage's network reads ('augmented' or 'fas_input')."""
  return _STAGE[stage][1]


def create_stage_state(config, stage: str, mesh) -> Any:
  """The initial state of a stage: the coarse method's for 'cas'."""
  if stage == 'cas':
    from tasad_jax import methods  # pylint: disable=g-import-not-at-top
    return methods.get(config).create_train_state(mesh)
  return create_train_state(config, stage, mesh)
