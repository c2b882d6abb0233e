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

FSDP (fully sharded data parallel; Rajbhandari et al., ZeRO, SC 2020): on a 2-D mesh
``('data', 'fsdp')``, :func:`fsdp_sharding` shards every large leaf of the train state
(params and the optimizer state, which optaxplus keeps shaped like the params) over
``fsdp``; ``data_parallel(step, mesh, axis_name=('data', 'fsdp'), state_sharding=...)``
splits the batch over both axes and keeps the state in those shardings from step to
step. With ``Auto`` mesh axes XLA gathers each param where the forward and backward
passes need it and reduces its gradient back to the shards, so the optimizer updates
its own shard only (on ``Explicit`` axes, the default of ``jax.make_mesh``, the model
must gather its weights itself, e.g. ``jax.sharding.reshard(w, P())``)::

  mesh = jax.make_mesh((2, 4), ('data', 'fsdp'), axis_types=(AxisType.Auto,) * 2)
  create = lambda: TrainState.create(apply_fn=model.apply, params=init(key), tx=momsps())
  sharding = fsdp_sharding(jax.eval_shape(create), mesh)
  state = jax.jit(create, out_shardings=sharding)()  # never whole on one device
  step = data_parallel(make_train_step(loss_fn), mesh, axis_name=('data', 'fsdp'),
                       state_sharding=sharding, donate_state=True)
  state, metrics = step(state, batch)

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

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from optaxplus._axes import AxisName
from optaxplus._axes import axis_names
from optaxplus._checks import check_bool
from optaxplus._checks import check_range

__all__ = ['data_parallel', 'fsdp_sharding', 'shard_batch']


def _check_axis(mesh: Mesh, axis_name: AxisName) -> None:
  names = axis_names(axis_name)
  if not names or not all(isinstance(name, str) for name in names):
    raise TypeError(f'axis_name must be a mesh axis name (a str) or a non-empty tuple of '
                    f'them, got {type(axis_name).__name__} {axis_name!r}.')
  for name in names:
    if name not in mesh.axis_names:
      raise ValueError(
          f'the mesh has no axis {name!r} (its axes are {mesh.axis_names}); build it '
          f'with e.g. jax.make_mesh((jax.device_count(),), ({name!r},)).')


def _axis_size(mesh: Mesh, axis_name: AxisName) -> int:
  return int(np.prod([mesh.shape[name] for name in axis_names(axis_name)]))


def _local_axis_size(mesh: Mesh, axis_name: AxisName) -> int:
  """How many shards of the ``axis_name`` axes this process holds."""
  return _axis_size(mesh, axis_name) * len(mesh.local_devices) // mesh.devices.size


def _check_batch(batch: Any, mesh: Mesh, axis_name: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
    shape = np.shape(leaf)
    # A global array is checked whole; host data is this process's slice.
    is_global = isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
    shards = _axis_size(mesh, axis_name) if is_global else _local_axis_size(mesh, axis_name)
    if not shape or shape[0] % shards:
      raise ValueError(
          f'batch leaf {jax.tree_util.keystr(path)} has shape {shape}: its leading '
          f'(batch) dimension must be divisible by the {shards} devices (of this '
          f'process) on mesh axes {axis_name!r}.')


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


def shard_batch(batch: Any, mesh: Mesh, axis_name: AxisName = 'data') -> Any:
  """Places a batch on ``mesh``, split along its leading axis over ``axis_name``.

  In a multi-process run each process passes its own slice of the global batch (rows
  in process order); the result is the global array. Leaves that already have the
  target sharding are returned as they are.

  Args:
    batch: a pytree of arrays with a common leading (batch) dimension.
    mesh: the device mesh.
    axis_name: the mesh axis the batch is split over, or a tuple of axes (e.g.
      ``('data', 'fsdp')``): split over all of them, the first outermost.

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


def _fsdp_spec(shape: tuple[int, ...], axis_name: AxisName, shards: int,
               min_size: int, current: PartitionSpec) -> PartitionSpec:
  """``current`` with its largest free dimension divisible by ``shards`` on the axis."""
  spec = list(current) + [None] * (len(shape) - len(current))
  used = {name for entry in spec if entry is not None
          for name in (entry if isinstance(entry, tuple) else (entry,))}
  free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % shards == 0]
  if (int(np.prod(shape, dtype=np.int64)) < min_size or not free
      or used & set(axis_names(axis_name))):
    return current
  spec[max(free, key=lambda d: shape[d])] = axis_name  # ties: the first such dimension
  return PartitionSpec(*spec)


def fsdp_sharding(tree: Any, mesh: Mesh, axis_name: AxisName = 'fsdp', *,
                  min_size: int = 2 ** 14) -> Any:
  """Shardings for fully sharded data parallel (FSDP): large leaves split over ``axis_name``.

  Every leaf with at least ``min_size`` elements is split over the ``axis_name`` axis of
  ``mesh`` along its largest dimension that the axis size divides (the first such
  dimension on ties); the others (scalars such as step counters and Polyak step sizes,
  biases, norm scales, leaves with no divisible dimension) are replicated. A leaf that
  already has a ``NamedSharding`` on ``mesh`` (e.g. tensor parallel over a ``model``
  axis) keeps it and is split over ``axis_name`` along one of its unsharded dimensions.
  As optaxplus optimizer states hold moment trees shaped like the params, passing a
  whole train state shards the params and the optimizer state alike (ZeRO stage 3).

  Args:
    tree: any pytree of arrays or ``jax.ShapeDtypeStruct`` s: Linen params, a whole
      ``TrainState`` (its static fields are not leaves), ``jax.eval_shape`` of a
      function creating one, an NNX ``State``.
    mesh: the device mesh.
    axis_name: the mesh axis to shard over, or a tuple of axes (split over all of them).
    min_size: leaves with fewer elements are replicated, a whole number >= 1: gathering
      a small leaf costs more in latency than it saves in memory.

  Returns:
    A pytree of ``NamedSharding`` with the structure of ``tree``, for ``jax.jit``'s
    ``in_shardings``/``out_shardings``, ``jax.device_put`` or ``data_parallel``'s
    ``state_sharding``.

  Raises:
    TypeError: ``axis_name`` is not a str or tuple of str, or ``min_size`` not a whole
      number.
    ValueError: ``mesh`` has no ``axis_name`` axis, or ``min_size < 1``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((1, jax.device_count()), ('data', 'fsdp'))
    >>> params = {'kernel': jnp.zeros((16, 256)), 'bias': jnp.zeros(256)}
    >>> shardings = fsdp_sharding(params, mesh, min_size=1024)
    >>> shardings['kernel'].spec, shardings['bias'].spec
    (P(None, 'fsdp'), P())

  References:
    Rajbhandari, Rasley, Ruwase & He, `ZeRO: Memory Optimizations Toward Training
    Trillion Parameter Models <https://arxiv.org/abs/1910.02054>`_, SC 2020.
  """
  _check_axis(mesh, axis_name)
  check_range('min_size', min_size, 1, integer=True)
  shards = _axis_size(mesh, axis_name)

  def sharding(x):
    current = getattr(x, 'sharding', None)
    spec = (current.spec if isinstance(current, NamedSharding) and current.mesh == mesh
            else PartitionSpec())
    shape = tuple(getattr(x, 'shape', np.shape(x)))
    return NamedSharding(mesh, _fsdp_spec(shape, axis_name, shards, int(min_size), spec))

  return jax.tree.map(sharding, tree)


def _state_shardings(state: Any, mesh: Mesh, keep_sharded: bool) -> Any:
  """Each leaf's sharding on ``mesh``: kept if already a ``NamedSharding`` there, else replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())

  def sharding(x):
    if keep_sharded and isinstance(getattr(x, 'sharding', None), NamedSharding) and (
        x.sharding.mesh == mesh):
      return x.sharding
    return replicated

  return jax.tree.map(sharding, state)


def _state_shardings_for(state: Any, state_sharding: Any, mesh: Mesh) -> Any:
  """``state_sharding`` on the tree structure of ``state``; raises if they do not match.

  Matched leaf by leaf, by path: a ``TrainState``'s structure includes its ``tx``, so a
  state restored onto a new template has another structure with the same leaves.
  """
  paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(state)]
  shardings = jax.tree_util.tree_leaves_with_path(state_sharding)
  if paths != [path for path, _ in shardings]:
    raise ValueError(
        'state_sharding must have the structure of the state (e.g. fsdp_sharding(state, '
        f'mesh)); got leaves {[jax.tree_util.keystr(p) for p, _ in shardings]} for a '
        f'state with leaves {[jax.tree_util.keystr(p) for p in paths]}.')
  for path, sharding in shardings:
    if not isinstance(sharding, NamedSharding) or sharding.mesh != mesh:
      raise ValueError(f'state_sharding{jax.tree_util.keystr(path)} must be a '
                       f'NamedSharding on the mesh, got {sharding!r}.')
  return jax.tree.unflatten(jax.tree.structure(state), [s for _, s in shardings])


def _takes_param_sharding(train_step: Callable[..., Any]) -> bool:
  try:
    return 'param_sharding' in inspect.signature(train_step).parameters
  except (TypeError, ValueError):  # a callable without a signature
    return False


def _gathered(shardings: Any, axis_name: AxisName) -> Any:
  """``shardings`` without the batch axes ``axis_name``: FSDP's weights for compute."""
  batch_axes = set(axis_names(axis_name))

  def without(entry):
    kept = tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ())
                 if a not in batch_axes)
    return kept[0] if len(kept) == 1 else (kept or None)

  return jax.tree.map(
      lambda s: NamedSharding(s.mesh, PartitionSpec(*map(without, s.spec))), shardings)


def data_parallel(train_step: Callable[..., Any], mesh: Mesh, *,
                  axis_name: AxisName = 'data', state_sharding: Any = None,
                  donate_state: bool = False) -> Callable[..., Any]:
  """Jits ``train_step(state, batch, *args)`` for data parallel over mesh axes.

  A step built by ``make_train_step`` without ``axis_name`` runs under ``jax.jit`` with
  the global view; one built with ``axis_name=axis_name`` runs under ``jax.shard_map``
  (state replicated, batch split). Both give the numbers of one device on the global
  batch (``shard_map`` with per-device SAM, by design, does not). The returned step
  places the state and the batch (via :func:`shard_batch`) before calling the compiled
  step, and its outputs keep those shardings, so they are stable across steps. The
  state is placed with ``state_sharding`` when given (global view only; e.g. from
  :func:`fsdp_sharding`: FSDP), else replicated, or as sharded as it already is on
  this mesh for the global view. Further positional ``args`` (e.g. a PRNG key) are
  replicated.

  Args:
    train_step: ``train_step(state, batch, *args, sam_step=None) -> (state, metrics)``;
      a step from ``make_train_step`` says through its ``axis_name`` attribute which
      path it needs.
    mesh: the device mesh, e.g. ``jax.make_mesh((jax.device_count(),), ('data',))``.
    axis_name: the mesh axis the batch is split over, or a tuple of axes: for FSDP
      ``('data', 'fsdp')``, so that the devices sharing the state's shards each take
      their own rows of the batch.
    state_sharding: ``None``, or a pytree of ``NamedSharding`` on ``mesh`` with the
      structure of the state: the compiled step takes and returns the state with
      exactly these shardings (nothing is resharded between steps). A step from
      ``make_train_step`` computes the loss with each param gathered over the batch
      axes it is split over (FSDP: one all-gather per sharded weight and pass, the
      gradient reduce-scattered back), other axes (tensor parallel) kept.
    donate_state: donate the input state's buffers to the output (saves memory; the
      state passed in cannot be used afterwards).

  Returns:
    ``step(state, batch, *args, sam_step=None) -> (state, metrics)``. ``sam_step``
    (True, False or None) reaches ``train_step`` when not None, for
    ``unified_sam(..., every_k=k)`` driven from Python: ``sam_step=(i % k == 0)`` at
    the ``i``-th call; one step is compiled per value. ``step.lower(state, batch,
    *args, sam_step=None)`` lowers it for arrays or ``jax.ShapeDtypeStruct`` s without
    running it: ``.compile()`` gives XLA's HLO, cost and memory analyses.

  Raises:
    TypeError: ``train_step`` is not callable, ``donate_state`` not a bool,
      ``axis_name`` not a str or tuple of str; from ``step``, ``sam_step`` not a bool or
      None.
    ValueError: the mesh lacks ``axis_name``, the step was built for another axis,
      ``state_sharding`` with a ``shard_map`` step or of another structure than the
      state, a batch leading dimension is not divisible by the devices on the axis,
      state leaves are committed to devices outside the mesh, or (``shard_map``) the
      step's outputs differ across devices; all before compilation.

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
  if step_axis is not None and state_sharding is not None:
    raise ValueError(
        'state_sharding needs a global-view train step (make_train_step without '
        'axis_name): under shard_map the step would see only its shard of each leaf.')
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  compiled = {}

  def build(state, num_args, sam_step):
    if state_sharding is None:
      state_shardings = _state_shardings(state, mesh, keep_sharded=step_axis is None)
    else:
      state_shardings = _state_shardings_for(state, state_sharding, mesh)
    keywords = {} if sam_step is None else {'sam_step': sam_step}
    params_sharding = getattr(state_shardings, 'params', None)
    if state_sharding is not None and params_sharding is not None and (
        _takes_param_sharding(train_step)):
      keywords['param_sharding'] = _gathered(params_sharding, axis_name)
    body = functools.partial(train_step, **keywords)
    if step_axis is not None:
      body = jax.shard_map(
          body, mesh=mesh,
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

  def built(state, num_args, sam_step):
    if sam_step is not None and not isinstance(sam_step, bool):
      raise TypeError(f'sam_step must be True, False or None, got {sam_step!r}.')
    key = (jax.tree.structure(state), num_args, sam_step)
    if key not in compiled:
      compiled[key] = build(state, num_args, sam_step)
    return compiled[key]

  def lower(state, batch, *args, sam_step=None):
    return built(state, len(args), sam_step)[1].lower(state, batch, *args)

  def step(state, batch, *args, sam_step=None):
    state_shardings, jitted = built(state, len(args), sam_step)
    batch = shard_batch(batch, mesh, axis_name)
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

  step.lower = lower
  return step
