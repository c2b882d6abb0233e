"""Orbax checkpoints of a whole train state, checked when they are written and read.

Every optaxplus optimizer state is a pytree of arrays (NamedTuples of counters, step
sizes and moment trees), so orbax stores it as it is; the optimizer itself (``tx``) is
code, not data, and comes from the template state given to :func:`restore_checkpoint`.
On CPU a restored state continues training bit-identically. In a multi-host run every
process calls both functions with the same directory (a path all hosts can reach).

Nothing is lost silently. A save either writes what it is given, completely, or raises:
a step that already exists, or one below the latest, needs ``overwrite=True``. Beside the
arrays each checkpoint stores, per array, its dtype, shape and the SHA-256 of its bytes,
computed on the host at save time; a restore recomputes them, so a file changed on disk
is an error naming the array rather than different parameters.

Needs orbax-checkpoint, the ``flax`` extra: ``pip install 'optaxplus[flax]'``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from optaxplus._checks import check_bool
from optaxplus._checks import check_range

try:
  import orbax.checkpoint as ocp
except ImportError as error:
  raise ImportError("optaxplus.checkpoint needs orbax-checkpoint, which optaxplus's 'flax' "
                    f"extra installs: pip install 'optaxplus[flax]' ({error})") from error

__all__ = ['save_checkpoint', 'restore_checkpoint']

# The two items of a checkpoint: the arrays, and what they must hash to.
_STATE = 'state'
_DIGESTS = 'digests'


def _as_arrays(state: Any) -> Any:
  """Python numbers (``TrainState.create`` sets ``step=0``) as arrays, for orbax."""
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), state)


def _on_host(x: jax.Array) -> np.ndarray:
  """The whole value of ``x`` on this host, also when other processes hold parts of it."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _describe(x: jax.Array) -> dict[str, Any]:
  """The dtype, shape and SHA-256 of the bytes of ``x``: what a restore must read back."""
  value = np.ascontiguousarray(_on_host(x))
  return {'dtype': value.dtype.name, 'shape': list(value.shape),
          'sha256': hashlib.sha256(value.tobytes()).hexdigest()}


def _describe_tree(arrays: Any) -> dict[str, dict[str, Any]]:
  """:func:`_describe` of every leaf, keyed by its path (e.g. ``.params['w']``)."""
  return {jax.tree_util.keystr(path): _describe(x)
          for path, x in jax.tree_util.tree_leaves_with_path(arrays)}


def _manager(directory: str | os.PathLike, max_to_keep: int | None = None):
  return ocp.CheckpointManager(
      os.path.abspath(directory), item_names=(_STATE, _DIGESTS),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False))


def save_checkpoint(directory: str | os.PathLike, state: Any, *, step: Any = None,
                    max_to_keep: int | None = None, overwrite: bool = False) -> int:
  """Saves ``state`` (any pytree, e.g. a ``TrainState``) under ``directory/<step>``.

  Returns only once the checkpoint is completely written. With it go the dtype, shape
  and SHA-256 of every array, which :func:`restore_checkpoint` verifies.

  Args:
    directory: the checkpoint directory; created if missing.
    state: the pytree to save; its static fields (``apply_fn``, ``tx``) are not saved.
    step: the checkpoint's number, a whole number >= 0; default ``int(state.step)``.
    max_to_keep: keep only this many most recent checkpoints (``None``: all).
    overwrite: allow ``step`` to be at or below the latest checkpoint: the checkpoint
      at ``step`` is replaced and the later ones deleted, so that ``directory`` holds
      this run's history up to ``step`` (as ``flax.training.checkpoints`` does).

  Returns:
    The step saved.

  Raises:
    ValueError: ``directory`` already has a checkpoint at ``step`` or after it and
      ``overwrite`` is False; or a bad ``step`` or ``max_to_keep``.
    RuntimeError: orbax did not write the checkpoint.

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
    >>> save_checkpoint(directory, state.replace(params={'w': jnp.zeros(2)}))
    Traceback (most recent call last):
    ...
    ValueError: ... already has a checkpoint at step 0; pass overwrite=True ...
  """
  check_bool('overwrite', overwrite)
  if max_to_keep is not None:
    check_range('max_to_keep', max_to_keep, 1, integer=True)
    max_to_keep = int(max_to_keep)
  step = state.step if step is None else step
  check_range('step', step, 0, integer=True)
  step = int(step)
  arrays = _as_arrays(state)
  digests = _describe_tree(arrays)
  with _manager(directory, max_to_keep) as manager:
    later = sorted(s for s in manager.all_steps() if s >= step)
    if later and not overwrite:
      found = (f'already has a checkpoint at step {step}' if later[0] == step else
               f'has checkpoints after step {step} (the latest is {later[-1]}), which a '
               'restore would take instead')
      raise ValueError(
          f'{directory} {found}; pass overwrite=True to replace it and delete the later '
          'ones, or save to another directory.')
    for existing in later:
      manager.delete(existing)
    saved = manager.save(step, force=True, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardSave(arrays), _DIGESTS: ocp.args.JsonSave(digests)}))
    manager.wait_until_finished()
    manager.reload()  # what is on disk now, not what the manager believes it wrote
    if not saved or step not in manager.all_steps():
      raise RuntimeError(f'orbax did not write checkpoint {step} in {directory}.')
  return step


def restore_checkpoint(directory: str | os.PathLike, state: Any, *,
                       step: Any = None) -> Any:
  """Restores the checkpoint ``step`` (default: the latest) into the structure of ``state``.

  Every array read is checked against the dtype, shape and SHA-256 stored when it was
  saved, before it is cast to the template's dtype.

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
    ValueError: an array read back differs from the one saved (its path is named), or
      the checkpoint has no record of an array of the template.
  """
  if step is not None:
    check_range('step', step, 0, integer=True)
    step = int(step)
  template = _as_arrays(state)
  with _manager(directory) as manager:
    if step is None:
      step = manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(f'no checkpoint {"" if step is None else step} in {directory}.')
    saved = manager.restore(step, args=ocp.args.Composite(**{
        _DIGESTS: ocp.args.JsonRestore()}))[_DIGESTS]

    def target(path, x):
      key = jax.tree_util.keystr(path)
      if key not in saved:
        raise ValueError(f'checkpoint {step} in {directory} has no array {key}, which the '
                         'template has: was it saved from another model or optimizer?')
      return jax.ShapeDtypeStruct(x.shape, jnp.dtype(saved[key]['dtype']),
                                  sharding=x.sharding)

    restored = manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardRestore(
            jax.tree_util.tree_map_with_path(target, template))}))[_STATE]
  for key, read in _describe_tree(restored).items():
    if read != saved[key]:
      raise ValueError(
          f'checkpoint {step} in {directory}: array {key} read back differs from the one '
          f'saved (saved {saved[key]}, read {read}); its files are corrupted or were '
          'changed.')
  return jax.tree.map(lambda x, t: x if x.dtype == t.dtype else x.astype(t.dtype),
                      restored, template)
