"""Orbax checkpoints of a whole train state: parameters, model state, optimizer state.

Every optaxplus optimizer state is a pytree of arrays (NamedTuples of counters, step
sizes and moment trees), so orbax stores it as it is; the optimizer itself (``tx``) is
code, not data, and comes from the template state given to :func:`restore_checkpoint`.
On CPU a restored state continues training bit-identically. In a multi-host run every
process calls both functions with the same directory (a path all hosts can reach).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from optaxplus.training import _missing_extra

try:
  import orbax.checkpoint as ocp
except ImportError as error:
  raise _missing_extra('optaxplus.checkpoint', 'orbax-checkpoint', error) from error

__all__ = ['save_checkpoint', 'restore_checkpoint']


def _as_arrays(state: Any) -> Any:
  """Python numbers (``TrainState.create`` sets ``step=0``) as arrays, for orbax."""
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), state)


def _manager(directory: str | os.PathLike, max_to_keep: int | None = None):
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False))


def save_checkpoint(directory: str | os.PathLike, state: Any, *, step: int | None = None,
                    max_to_keep: int | None = None) -> int:
  """Saves ``state`` (any pytree, e.g. a :class:`~optaxplus.training.TrainState`) under ``directory/<step>``.

  Args:
    directory: the checkpoint directory; created if missing.
    state: the pytree to save; its static fields (``apply_fn``, ``tx``) are not saved.
    step: the checkpoint's number; default ``int(state.step)``.
    max_to_keep: keep only this many most recent checkpoints (``None``: all).

  Returns:
    The step saved.

  Examples:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> from optaxplus.training import TrainState
    >>> from optaxplus.polyak import momsps
    >>> state = TrainState.create(apply_fn=None, params={'w': jnp.ones(2)}, tx=momsps())
    >>> directory = tempfile.mkdtemp()
    >>> save_checkpoint(directory, state)
    0
    >>> restored = restore_checkpoint(directory, state)
    >>> restored.params['w'], type(restored.opt_state) is type(state.opt_state)
    (Array([1., 1.], dtype=float32), True)
  """
  if step is None:
    step = int(state.step)
  with _manager(directory, max_to_keep) as manager:
    manager.save(step, args=ocp.args.StandardSave(_as_arrays(state)))
    manager.wait_until_finished()
  return step


def restore_checkpoint(directory: str | os.PathLike, state: Any, *,
                       step: int | None = None) -> Any:
  """Restores the checkpoint ``step`` (default: the latest) into the structure of ``state``.

  Args:
    directory: the directory given to :func:`save_checkpoint`.
    state: a template with the saved structure, e.g. a freshly created ``TrainState``
      with the same model and optimizer; its values are ignored, the restored arrays
      get its shapes, dtypes and shardings.
    step: the checkpoint to restore; default the latest.

  Returns:
    ``state`` with every array replaced by the saved one.

  Raises:
    FileNotFoundError: ``directory`` holds no checkpoint (or not ``step``).
  """
  with _manager(directory) as manager:
    if step is None:
      step = manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(f'no checkpoint {"" if step is None else step} in {directory}.')
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_arrays(state))
    return manager.restore(step, args=ocp.args.StandardRestore(target))
