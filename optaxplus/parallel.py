"""Data-parallel train steps over a device mesh, on one host or many.

:func:`data_parallel` turns a train step from :func:`optaxplus.training.make_train_step`
into a jitted step over the ``axis_name`` axis of a ``jax.sharding.Mesh``:

- built without ``axis_name`` (the global view), it is ``jax.jit`` with the batch sharded
  on the axis and the state replicated (or kept as sharded as it comes): XLA inserts the
  gradient all-reduce, and the loss, gradient norms, Polyak steps and SAM perturbations
  are those of the global batch;
- built with ``axis_name``, it is ``jax.shard_map``: each device runs the step on its
  shard, the step averages the loss and gradients over the axis before the optimizer,
  and ``local_gradients=True`` lets ``unified_sam(axis_name=...)`` perturb per device.

``jax.pmap(make_train_step(loss_fn, axis_name='data'), axis_name='data')`` runs the same
step on a state stacked once per device and a batch reshaped to ``(devices, -1, ...)``;
``pmap`` is in maintenance mode, so prefer the two paths above.

Multi-host (the recipe tests/test_multihost.py runs with 2 processes): in every process
call ``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` first
(on CPU after ``jax.config.update('jax_cpu_collectives_implementation', 'gloo')``), build
the mesh over ``jax.devices()`` (all processes' devices) and run the same program, each
process passing its own slice of the global batch (rows in process order):
:func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``. ``optaxplus.checkpoint`` saves and restores
from every process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from optaxplus._checks import check_bool

__all__ = ['data_parallel', 'shard_batch']


def _check_axis(mesh: Mesh, axis_name: str) -> None:
  if axis_name not in mesh.axis_names:
    raise ValueError(
        f'the mesh has no axis {axis_name!r} (its axes are {mesh.axis_names}); build it '
        f'with e.g. jax.make_mesh((jax.device_count(),), ({axis_name!r},)).')


def _local_axis_size(mesh: Mesh, axis_name: str) -> int:
  """How many shards of the ``axis_name`` axis this process holds."""
  return mesh.shape[axis_name] * len(mesh.local_devices) // mesh.devices.size


def _check_batch(batch: Any, mesh: Mesh, axis_name: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
    shape = np.shape(leaf)
    # A global array is checked whole; host data is this process's slice.
    is_global = isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
    shards = mesh.shape[axis_name] if is_global else _local_axis_size(mesh, axis_name)
    if not shape or shape[0] % shards:
      raise ValueError(
          f'batch leaf {jax.tree_util.keystr(path)} has shape {shape}: its leading '
          f'(batch) dimension must be divisible by the {shards} devices (of this '
          f'process) on mesh axis {axis_name!r}.')


def _place(x: Any, sharding: NamedSharding, path: Any) -> Any:
  """``x`` with ``sharding``; committed arrays on devices outside the mesh are an error."""
  current = getattr(x, 'sharding', None)
  if current == sharding:
    return x
  if isinstance(x, jax.Array) and x.committed:
    outside = current.device_set - set(sharding.mesh.devices.flat)
    if outside:
      raise ValueError(
          f'state leaf {jax.tree_util.keystr(path)} is committed to '
          f'{sorted(map(str, outside))}, outside the mesh; move the state onto the mesh '
          'devices (or create it without committing it to a device) before training.')
  return jax.device_put(x, sharding)


def shard_batch(batch: Any, mesh: Mesh, axis_name: str = 'data') -> Any:
  """Places a batch on ``mesh``, split along its leading axis over ``axis_name``.

  In a multi-process run each process passes its own slice of the global batch (rows
  in process order); the result is the global array. Leaves that already have the
  target sharding are returned as they are.

  Args:
    batch: a pytree of arrays with a common leading (batch) dimension.
    mesh: the device mesh.
    axis_name: the mesh axis the batch is split over.

  Returns:
    The batch as ``jax.Array`` s with sharding ``NamedSharding(mesh, P(axis_name))``.

  Raises:
    ValueError: ``mesh`` has no ``axis_name`` axis, or a leading dimension is not
      divisible by this process's number of devices on that axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((jax.device_count(),), ('data',))
    >>> batch = shard_batch({'x': jnp.ones((8, 2))}, mesh)
    >>> batch['x'].sharding.spec
    P('data',)
  """
  _check_axis(mesh, axis_name)
  _check_batch(batch, mesh, axis_name)
  sharding = NamedSharding(mesh, PartitionSpec(axis_name))

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if jax.process_count() > 1:
      return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    return jax.device_put(x, sharding)

  return jax.tree.map(put, batch)


def _state_shardings(state: Any, mesh: Mesh, keep_sharded: bool) -> Any:
  """Each leaf's sharding on ``mesh``: kept if already a ``NamedSharding`` there, else replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())

  def sharding(x):
    if keep_sharded and isinstance(getattr(x, 'sharding', None), NamedSharding) and (
        x.sharding.mesh == mesh):
      return x.sharding
    return replicated

  return jax.tree.map(sharding, state)


def data_parallel(train_step: Callable[..., Any], mesh: Mesh, *, axis_name: str = 'data',
                  donate_state: bool = False) -> Callable[..., Any]:
  """Jits ``train_step(state, batch, *args)`` for data parallel over a mesh axis.

  A step built by ``make_train_step`` without ``axis_name`` runs under ``jax.jit`` with
  the global view; one built with ``axis_name=axis_name`` runs under ``jax.shard_map``
  (state replicated, batch split). Both give the numbers of one device on the global
  batch (``shard_map`` with per-device SAM, by design, does not). The returned step
  places the state (replicated, or as sharded as it already is on this mesh, for the
  global view) and the batch (via :func:`shard_batch`) before calling the compiled
  step, and its outputs keep those shardings, so they are stable across steps.
  Further positional ``args`` (e.g. a PRNG key) are replicated.

  Args:
    train_step: ``train_step(state, batch, *args) -> (state, metrics)``; a step from
      ``make_train_step`` says through its ``axis_name`` attribute which path it needs.
    mesh: the device mesh, e.g. ``jax.make_mesh((jax.device_count(),), ('data',))``.
    axis_name: the mesh axis the batch is split over.
    donate_state: donate the input state's buffers to the output (saves memory; the
      state passed in cannot be used afterwards).

  Returns:
    ``step(state, batch, *args) -> (state, metrics)``.

  Raises:
    TypeError: ``train_step`` is not callable or ``donate_state`` not a bool.
    ValueError: the mesh lacks ``axis_name``, the step was built for another axis, a
      batch leading dimension is not divisible by the devices on the axis, state
      leaves are committed to devices outside the mesh, or (``shard_map``) the step's
      outputs differ across devices; all before compilation.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optaxplus.training import TrainState, make_train_step
    >>> from optaxplus.polyak import momsps
    >>> loss_fn = lambda p, b: jnp.mean((b['x'] @ p['w'] - b['y']) ** 2)
    >>> state = TrainState.create(apply_fn=None, params={'w': jnp.zeros(2)}, tx=momsps())
    >>> mesh = jax.make_mesh((jax.device_count(),), ('data',))
    >>> step = data_parallel(make_train_step(loss_fn), mesh)
    >>> batch = {'x': jnp.ones((8, 2)), 'y': jnp.ones(8)}
    >>> state, metrics = step(state, batch)
    >>> print(f"{metrics['loss']:.2f} {metrics['step_size']:.4f}")  # 0.1 / ‖g‖² = 0.1 / 8
    1.00 0.0125
  """
  if not callable(train_step):
    raise TypeError(f'train_step must be a callable, got {type(train_step).__name__}.')
  check_bool('donate_state', donate_state)
  _check_axis(mesh, axis_name)
  step_axis = getattr(train_step, 'axis_name', None)
  if step_axis is not None and step_axis != axis_name:
    raise ValueError(
        f'the train step averages over axis {step_axis!r} but data_parallel splits the '
        f'batch over {axis_name!r}; build the step with axis_name={axis_name!r} or None.')
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  compiled = {}

  def build(state, num_args):
    state_shardings = _state_shardings(state, mesh, keep_sharded=step_axis is None)
    if step_axis is None:
      body = train_step
    else:
      body = jax.shard_map(
          train_step, mesh=mesh,
          in_specs=(PartitionSpec(), PartitionSpec(axis_name)) + (PartitionSpec(),) * num_args,
          out_specs=PartitionSpec(),
          # With varying-value checks a state that is not the same on every device (an
          # optimizer given local gradients that does not average them) fails to trace.
          check_vma=True)
    jitted = jax.jit(body,
                     in_shardings=(state_shardings, batch_sharding) + (replicated,) * num_args,
                     out_shardings=(state_shardings, replicated),
                     donate_argnums=(0,) if donate_state else ())
    return state_shardings, jitted

  def step(state, batch, *args):
    batch = shard_batch(batch, mesh, axis_name)
    key = (jax.tree.structure(state), len(args))
    if key not in compiled:
      compiled[key] = build(state, len(args))
    state_shardings, jitted = compiled[key]
    state = jax.tree_util.tree_map_with_path(
        lambda path, x, s: _place(x, s, path), state, state_shardings)
    if step_axis is None:
      return jitted(state, batch, *args)
    try:
      return jitted(state, batch, *args)
    except ValueError as error:
      if 'out_specs' not in str(error):
        raise
      raise ValueError(
          'the train step returns values that differ across the devices of axis '
          f'{axis_name!r}: with local_gradients=True the optimizer must average the '
          f'gradient itself, e.g. unified_sam(..., axis_name={axis_name!r}).') from error

  return step
