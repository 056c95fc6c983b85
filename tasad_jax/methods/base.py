"""What a coarse stage provides, so that FAS, evaluation, predict and export
work on any of them.

A coarse method trains on the pseudo-anomaly batches of the 'cas' stage (keys
'image', 'augmented', 'mask'), keeps all its arrays in one train-state pytree
(checkpointed under `<workdir>/checkpoints/cas`), and maps images [N, S, S, 3]
in [0, 1] to anomaly maps [N, S, S, 1] whose anomalous pixels are near 1 and
normal pixels near 0: the scale the fine stage's histogram filter expects
(|map| x 255 as 8 bits).
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax


class CoarseMethod(abc.ABC):
  """A coarse stage: model(s), train state and step, map and score functions.

  Subclasses are registered by name with `tasad_jax.methods.register`.
  """

  name: str = ''
  label: str = ''  # Shown in tables: 'CAS', 'DeSTSeg'.

  def __init__(self, config):
    self.config = config

  @abc.abstractmethod
  def create_train_state(self, mesh) -> Any:
    """The initial train state (deterministic in config.seed), replicated.

    A pytree with a `step` field and a `variables` property that
    `anomaly_map` takes.
    """

  @abc.abstractmethod
  def phases(self) -> list[tuple[int, Callable]]:
    """The training phases: [(first step, train step function)], in order.

    Each function is one optimiser step on a global batch, pure and jit-able:
    (state, batch) -> (new state, clu metrics collection, finite flag); a
    non-finite step must leave the state unchanged except for its step
    counter. Each phase is its own jitted program, chosen on the host by the
    step number (a `lax.cond` over both costs ~20x on XLA:CPU).
    """

  @abc.abstractmethod
  def anomaly_map(self, variables: Any, images: jax.Array) -> jax.Array:
    """Eval-mode maps [N, S, S, 1] float32 of images [N, S, S, 3], jit-able."""

  @abc.abstractmethod
  def image_score(self, maps: jax.Array) -> jax.Array:
    """Image scores [N] of maps [N, S, S, 1] (also of coarse + FAS maps)."""

  def check_config(self) -> None:
    """Raises UserInputError naming a bad field of this method."""

  def batch_keys(self) -> tuple[str, ...]:
    """The keys of the train batch that `train_step` reads."""
    return ('augmented', 'mask')
