"""Flax train steps that work with every optaxplus and optax optimizer.

Two things stand between an optaxplus optimizer and a Flax train step: Polyak step sizes
need the mini-batch loss (``value=``) and SAM needs a second gradient on the same batch
(``grad_fn=``). Linen's ``TrainState.apply_gradients`` forwards neither, and data
parallelism must average the loss and the gradient before the optimizer sees them.
This module supplies a :class:`TrainState` that forwards both, a train-step builder
:func:`make_train_step` (one device, ``shard_map``/``pmap`` with an ``axis_name``,
in-step gradient accumulation) and :func:`nnx_grad_fn`, the ``grad_fn`` for
``flax.nnx`` models.

This module needs Flax (the ``flax`` extra, ``pip install 'optaxplus[flax]'``); importing
it without Flax raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optaxplus._axes import axis_names
from optaxplus._axes import cast_varying
from optaxplus._checks import check_bool
from optaxplus._checks import check_range
from optaxplus._wide import global_norm
from optaxplus._wide import wide_dtype

try:
  from flax.training import train_state
except ImportError as error:
  raise ImportError("optaxplus.training needs Flax, which optaxplus's 'flax' extra "
                    f"installs: pip install 'optaxplus[flax]' ({error})") from error

__all__ = ['TrainState', 'make_train_step', 'nnx_grad_fn']


class TrainState(train_state.TrainState):
  """A Linen ``TrainState`` whose ``apply_gradients`` forwards extra args to ``tx``.

  Drop-in for ``flax.training.train_state.TrainState``. ``create`` wraps ``tx`` with
  ``optax.with_extra_args_support`` so any optax transform accepts ``value=`` and
  ``grad_fn=``; ``model_state`` carries the mutable variable collections of the model
  (e.g. ``{'batch_stats': ...}``), ``None`` when it has none.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> params = {'w': jnp.ones(3)}
    >>> state = TrainState.create(apply_fn=None, params=params,
    ...                           tx=optax.polyak_sgd(max_learning_rate=1.0))
    >>> loss_fn = lambda p: jnp.sum(p['w'] ** 2)
    >>> loss, grads = jax.value_and_grad(loss_fn)(state.params)
    >>> state = state.apply_gradients(grads=grads, value=loss)
    >>> state.params['w']
    Array([0.5, 0.5, 0.5], dtype=float32)
  """

  model_state: Any = None

  @classmethod
  def create(cls, *, apply_fn, params, tx, **kwargs):
    """Creates a state with ``step=0`` and ``opt_state = tx.init(params)``.

    Args:
      apply_fn: usually ``model.apply``; stored, not traced.
      params: the parameters ``tx`` updates.
      tx: any optax ``GradientTransformation``; wrapped to accept extra args.
      **kwargs: other fields, e.g. ``model_state={'batch_stats': ...}``.

    Returns:
      A new ``TrainState``.
    """
    return super().create(apply_fn=apply_fn, params=params,
                          tx=optax.with_extra_args_support(tx), **kwargs)

  def apply_gradients(self, *, grads, **kwargs):
    """Applies ``tx`` to ``grads``, forwarding extra args such as ``value`` and ``grad_fn``.

    Args:
      grads: gradients with the structure of ``params``.
      **kwargs: names of fields of this state are ``replace``-d (as in Flax, e.g.
        ``model_state=``); every other keyword goes to ``tx.update``.

    Returns:
      The state with ``step`` incremented and ``params``, ``opt_state`` updated.
    """
    fields = {field.name for field in dataclasses.fields(self)}
    replaced = {k: v for k, v in kwargs.items() if k in fields}
    extra_args = {k: v for k, v in kwargs.items() if k not in fields}
    # As in Flax: fp8 scales under OVERWRITE_WITH_GRADIENT are replaced, not optimized.
    overwrite = isinstance(grads, Mapping) and train_state.OVERWRITE_WITH_GRADIENT in grads
    opt_grads, opt_params = ((grads['params'], self.params['params']) if overwrite
                             else (grads, self.params))
    updates, opt_state = self.tx.update(opt_grads, self.opt_state, opt_params,
                                        **extra_args)
    params = optax.apply_updates(opt_params, updates)
    if overwrite:
      params = {'params': params, train_state.OVERWRITE_WITH_GRADIENT:
                grads[train_state.OVERWRITE_WITH_GRADIENT]}
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        **replaced)


def _step_size(opt_state):
  """The step size the optimizer took, when exactly one ``step_size`` field exists."""
  found = optax.tree_utils.tree_get_all_with_path(opt_state, 'step_size')
  if len(found) != 1 or jnp.shape(found[0][1]) != ():
    return None
  return found[0][1]


def _reduce_over_devices(tree, axis_name, integer_reduction):
  """``pmean`` of the floating leaves; ``integer_reduction`` (``psum``/``pmax``) of the rest."""
  return jax.tree.map(
      lambda x: (jax.lax.pmean if jnp.issubdtype(x.dtype, jnp.inexact)
                 else integer_reduction)(x, axis_name), tree)


def _device_varying(tree, axis_name):
  """Marks every leaf as varying over ``axis_name`` (a name or a tuple of them; leaves
  already varying over some of them are cast over the others only).

  Under ``shard_map(check_vma=True)`` JAX transposes the implicit broadcast of a
  replicated input into a ``psum``: the gradient with respect to replicated params is
  the SUM of the per-device gradients. Taken with respect to varying params it is the
  device's own gradient, as under ``pmap`` and ``check_vma=False``, which the step then
  averages itself. The accumulation scan's carry is cast too: under ``check_vma`` its
  type may not change from invariant to varying within an iteration.
  """
  return cast_varying(tree, axis_names(axis_name))


def _split_microbatches(batch, accumulation_steps):
  """Splits every leaf ``(B, ...)`` into ``(k, B // k, ...)``, micro-batch ``i`` = rows ``i::k``.

  Strided rows keep every micro-batch spread evenly over a batch sharded on its leading
  axis, so splitting moves no data between devices, and the micro-batches of the global
  batch are the same whether it is split globally or per device.
  """
  def split(x):
    if x.shape[0] % accumulation_steps:
      raise ValueError(
          f'accumulation_steps={accumulation_steps} must divide the (per-device) batch '
          f'size, got a leaf with leading dimension {x.shape[0]}.')
    x = x.reshape((x.shape[0] // accumulation_steps, accumulation_steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def _describe(out: Any) -> str:
  """What ``loss_fn`` returned, for an error message."""
  if isinstance(out, (tuple, list)):
    return (f'a {type(out).__name__} of {len(out)} ('
            + ', '.join(_describe(x) for x in out) + ')')
  if hasattr(out, 'shape') and hasattr(out, 'dtype'):
    return f'an array of shape {tuple(out.shape)} and dtype {out.dtype}'
  return type(out).__name__


def _split_loss_output(out: Any, *, has_aux: bool, has_state: bool | None,
                       caller: str) -> tuple[Any, Any, Any]:
  """``loss_fn``'s output as ``(loss, new_model_state, aux)``; a clear error on a mismatch.

  ``has_state=None``: the caller has no such option.

  Without this check ``has_aux=False`` with a ``(loss, aux)`` loss fails deep inside JAX
  (``TracerArrayConversionError``) and ``has_aux=True`` with a scalar loss fails with an
  unpacking error that names neither.
  """
  def pair(x):
    return isinstance(x, (tuple, list)) and len(x) == 2

  flags = [name for name, flag in (('has_aux', has_aux), ('has_state', has_state)) if flag]
  expected = ('(loss, (new_model_state, aux))' if has_state and has_aux
              else '(loss, new_model_state)' if has_state
              else '(loss, aux)' if has_aux else 'the scalar loss')
  if not flags and isinstance(out, (tuple, list)):
    hint = 'pass has_aux=True if its second element is auxiliary output' + (
        ', or has_state=True if it is the new model state' if has_state is not None else '')
  elif flags and not isinstance(out, (tuple, list)):
    hint = 'pass ' + ' and '.join(f'{name}=False' for name in flags) + f', or return {expected}'
  elif flags and not (pair(out) and (not (has_aux and has_state) or pair(out[1]))):
    hint = f'return {expected}'
  else:
    hint = None
  if hint is not None:
    options = ', '.join(f'{name}={flag}' for name, flag in
                        (('has_aux', has_aux), ('has_state', has_state)) if flag is not None)
    raise TypeError(f'{caller}({options}) expects loss_fn to return {expected}, but it '
                    f'returned {_describe(out)}: {hint}.')
  if has_state and has_aux:
    return out[0], out[1][0], out[1][1]
  if has_state:
    return out[0], out[1], None
  if has_aux:
    return out[0], None, out[1]
  return out, None, None


def make_train_step(loss_fn: Callable[..., Any], *, has_aux: bool = False,
                    has_state: bool = False, has_rng: bool = False,
                    axis_name: str | None = None, local_gradients: bool = False,
                    accumulation_steps: int = 1):
  """Builds ``train_step(state, batch[, rng]) -> (state, metrics)`` for any optimizer.

  The step computes the loss and gradient of ``loss_fn`` at ``state.params`` and calls
  ``state.apply_gradients(grads=g, value=loss, grad_fn=grad_fn)``: Polyak step sizes get
  the loss of the same batch, SAM gets ``grad_fn(p)``, the gradient at ``p`` on the same
  batch (from the same ``model_state`` and ``rng``; its model-state updates are
  discarded, so BatchNorm statistics come from the one clean pass); other optimizers
  ignore both. Call it under ``jax.jit``.

  ``loss_fn`` is called as ``loss_fn(params, batch)``, with ``has_state`` as
  ``loss_fn(params, model_state, batch)`` and with ``has_rng`` with a trailing ``rng``.
  It returns the scalar mean loss, ``(loss, aux)`` with ``has_aux``, ``(loss,
  new_model_state)`` with ``has_state`` and ``(loss, (new_model_state, aux))`` with both.

  Args:
    loss_fn: the loss, as above; it must return a scalar (the mean over the batch).
    has_aux: ``loss_fn`` also returns auxiliary outputs, reported as ``metrics['aux']``.
    has_state: ``loss_fn`` takes and returns ``state.model_state`` (e.g. BatchNorm).
    has_rng: the step takes a PRNG key ``rng`` and passes it to ``loss_fn``.
    axis_name: set for ``shard_map``/``pmap`` (per-device view): the loss, gradients
      and floating model state are averaged over this axis before the optimizer sees
      them (floating aux averaged, integer aux summed), and ``rng`` is folded with the
      device index. Works under ``shard_map`` with or without ``check_vma``. ``None`` for one device
      and for ``jit`` over sharded arrays (global view, nothing to average).
    local_gradients: with ``axis_name``, give the optimizer the LOCAL gradient and a
      local ``grad_fn``; for ``unified_sam(..., axis_name=axis_name)``, which perturbs per
      device (m-sharpness) and averages the SAM gradient itself. ``value`` stays global.
      Under ``optaxplus.parallel.data_parallel`` an optimizer that does not average
      (devices would drift apart) is an error before compilation.
    accumulation_steps: split the batch into this many micro-batches (rows ``i::k``),
      and average the loss, gradient and floating aux over them (integer aux is
      summed) before one optimizer update, so ``value`` matches the gradient;
      ``grad_fn`` accumulates the same way.

  Returns:
    ``train_step(state, batch, rng=None, *, sam_step=None, param_sharding=None) ->
    (state, metrics)`` with
    ``metrics`` holding ``loss``, ``grad_norm`` (of the averaged gradient), ``step_size``
    when the optimizer state has exactly one scalar ``step_size`` field, and ``aux``
    with ``has_aux``. ``sam_step`` reaches the optimizer when it is not None: for
    ``unified_sam(..., every_k=k)`` trained from a Python loop, jit the step with
    ``static_argnames='sam_step'`` and pass ``sam_step=(i % k == 0)`` at the ``i``-th
    call. Two steps are compiled, with and without the second gradient, instead of one
    with a ``lax.cond`` (inside which XLA:CPU runs convolutions many times slower); keep
    the default None inside a jitted loop (``lax.scan``), where SAM chooses in-graph.
    ``param_sharding`` (a pytree of shardings like ``state.params``; global view) is
    the sharding the loss computes with: FSDP gathers each weight over its FSDP axes
    there, and its gradient is reduce-scattered back to the params' sharding
    (``optaxplus.parallel.data_parallel`` passes it for a ``state_sharding``).

  Raises:
    TypeError: an option of the wrong type, or (while tracing, before compilation)
      ``loss_fn`` returning other than what ``has_aux`` and ``has_state`` announce.
    ValueError: an option out of range, or (while tracing) a non-scalar loss or a batch
      that ``accumulation_steps`` does not divide.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> def loss_fn(params, batch):
    ...   return jnp.mean((batch['x'] @ params['w'] - batch['y']) ** 2)
    >>> state = TrainState.create(apply_fn=None, params={'w': jnp.zeros(2)},
    ...                           tx=optax.polyak_sgd(max_learning_rate=1.0))
    >>> batch = {'x': jnp.eye(2), 'y': jnp.ones(2)}
    >>> train_step = jax.jit(make_train_step(loss_fn))
    >>> state, metrics = train_step(state, batch)
    >>> float(metrics['loss']), float(metrics['grad_norm'])
    (1.0, 1.4142135381698608)
    >>> float(loss_fn(state.params, batch))
    0.25
  """
  if not callable(loss_fn):
    raise TypeError(f'loss_fn must be a callable, got {type(loss_fn).__name__}.')
  for name, flag in (('has_aux', has_aux), ('has_state', has_state), ('has_rng', has_rng),
                     ('local_gradients', local_gradients)):
    check_bool(name, flag)
  check_range('accumulation_steps', accumulation_steps, 1, integer=True)
  accumulation_steps = int(accumulation_steps)
  if local_gradients and axis_name is None:
    raise ValueError('local_gradients=True needs an axis_name (shard_map or pmap).')

  def normalized_loss(params, model_state, batch, rng):
    """``loss_fn`` in one calling convention: returns ``(loss, (model_state, aux))``."""
    args = (params, model_state, batch) if has_state else (params, batch)
    out = loss_fn(*args, rng) if has_rng else loss_fn(*args)
    loss, new_model_state, aux = _split_loss_output(
        out, has_aux=has_aux, has_state=has_state, caller='make_train_step')
    if jnp.shape(loss) != ():
      raise ValueError(
          'loss_fn must return a scalar loss (the mean over the batch): optimizers such '
          'as momsps use it as `value` and the gradient is taken of it; got shape '
          f'{jnp.shape(loss)}. Reduce it, e.g. with jnp.mean.')
    return loss, (new_model_state if has_state else model_state, aux)

  def accumulated_value_and_grad(params, model_state, batch, rng, param_sharding):
    """Loss, (model_state, aux) and gradient averaged over ``accumulation_steps``."""
    # Constrained inside the differentiated function, so that the gradient leaves with
    # the params' own sharding (FSDP: weights gathered, gradients reduce-scattered).
    value_and_grad = jax.value_and_grad(
        lambda params, *args: normalized_loss(_constrained(params, param_sharding), *args),
        has_aux=True)
    if accumulation_steps == 1:
      return value_and_grad(params, model_state, batch, rng)
    micro_batches = _split_microbatches(batch, accumulation_steps)

    def body(carry, inputs):
      model_state, loss_sum, grad_sum = carry
      micro_batch, index = inputs
      micro_rng = None if rng is None else jax.random.fold_in(rng, index)
      (loss, (model_state, aux)), grads = value_and_grad(
          params, model_state, micro_batch, micro_rng)
      return (model_state, loss_sum + loss, optax.tree.add(grad_sum, grads)), aux

    # Sums in float32 or wider, also for bfloat16 params.
    init = (model_state, jnp.zeros((), jnp.float32),
            jax.tree.map(lambda p: jnp.zeros(p.shape, wide_dtype(p)), params))
    if axis_name is not None:
      init = _device_varying(init, axis_name)
    (model_state, loss_sum, grad_sum), auxs = jax.lax.scan(
        body, init, (micro_batches, jnp.arange(accumulation_steps)))
    # Means average over micro-batches, counts add up: as on the whole batch.
    aux = jax.tree.map(
        lambda x: x.mean(0) if jnp.issubdtype(x.dtype, jnp.inexact) else x.sum(0), auxs)
    grads = jax.tree.map(lambda g, p: (g / accumulation_steps).astype(p.dtype),
                         grad_sum, params)
    return (loss_sum / accumulation_steps, (model_state, aux)), grads

  def train_step(state, batch, rng=None, *, sam_step=None, param_sharding=None):
    if has_rng and rng is None:
      raise ValueError('has_rng=True: call train_step(state, batch, rng).')
    if rng is not None and axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    params = state.params
    if axis_name is not None:
      params = _device_varying(params, axis_name)
    (loss, (model_state, aux)), local_grads = accumulated_value_and_grad(
        params, state.model_state, batch, rng, param_sharding)
    if axis_name is None:
      grads = local_grads
    else:
      loss = jax.lax.pmean(loss, axis_name)
      grads = jax.lax.pmean(local_grads, axis_name)
      aux = _reduce_over_devices(aux, axis_name, jax.lax.psum)
      # Integer model state (counters) is equal on all devices: pmax keeps it.
      model_state = _reduce_over_devices(model_state, axis_name, jax.lax.pmax)

    def grad_fn(perturbed_params):
      if axis_name is not None:
        perturbed_params = _device_varying(perturbed_params, axis_name)
      _, perturbed_grads = accumulated_value_and_grad(
          perturbed_params, state.model_state, batch, rng, param_sharding)
      if axis_name is not None and not local_gradients:
        perturbed_grads = jax.lax.pmean(perturbed_grads, axis_name)
      return perturbed_grads

    schedule = {} if sam_step is None else {'sam_step': sam_step}
    state = state.apply_gradients(
        grads=local_grads if local_gradients else grads, value=loss, grad_fn=grad_fn,
        model_state=model_state, **schedule)
    metrics = {'loss': loss, 'grad_norm': global_norm(grads)}
    step_size = _step_size(state.opt_state)
    if step_size is not None:
      metrics['step_size'] = step_size
    if has_aux:
      metrics['aux'] = aux
    return state, metrics

  train_step.axis_name = axis_name
  return train_step


def _constrained(params, sharding):
  """``params`` with ``sharding`` (None: as they are): resharded on explicit mesh axes,
  a sharding constraint on automatic ones."""
  if sharding is None:
    return params

  def constrain(x, s):
    explicit = jax.sharding.AxisType.Explicit in getattr(s.mesh, 'axis_types', ())
    return (jax.sharding.reshard(x, s) if explicit
            else jax.lax.with_sharding_constraint(x, s))

  return jax.tree.map(constrain, params, sharding)


def nnx_grad_fn(loss_fn: Callable[..., Any], model: Any, *args, wrt: Any = None,
                has_aux: bool = False):
  """The SAM ``grad_fn`` for an NNX model: gradient at given params, model untouched.

  ``grad_fn(params)`` merges ``params`` (a pure state, as ``nnx.Optimizer.update`` hands
  them to the optimizer) into a copy of ``model`` taken now, and returns the gradient of
  ``loss_fn(copy, *args)`` as a pure state of the same structure. Changes the pass makes
  to the copy (BatchNorm statistics, RNG counters) are discarded, so the model keeps the
  statistics of the one clean pass.

  Args:
    loss_fn: ``loss_fn(model, *args)`` returning the scalar loss, or ``(loss, aux)``.
    model: the model whose current non-``wrt`` state the perturbed pass uses.
    *args: the batch (and anything else ``loss_fn`` takes), the same as the clean pass.
    wrt: the variable filter the gradient is taken for, as in ``nnx.Optimizer``;
      ``None`` (the default) is ``nnx.Param``.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; ``aux`` is discarded.

  Returns:
    ``grad_fn(params) -> grads``, to pass as ``optimizer.update(model, grads,
    value=loss, grad_fn=grad_fn)``.

  Raises:
    ImportError: Flax is not installed (the ``flax`` extra).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    >>> loss_fn = lambda model, x, y: jnp.mean((model(x) - y) ** 2)
    >>> loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    >>> grad_fn = nnx_grad_fn(loss_fn, model, x, y)
    >>> _ = optimizer.update(model, grads, value=loss, grad_fn=grad_fn)
    >>> jax.tree.map(jnp.shape, grad_fn(nnx.as_pure(nnx.state(model, nnx.Param))))
    State({
      'bias': (1,),
      'kernel': (2, 1)
    })
  """
  check_bool('has_aux', has_aux)
  from flax import nnx  # pylint: disable=import-outside-toplevel  (imported on use: slow)
  graphdef, _, rest = nnx.split(model, nnx.Param if wrt is None else wrt, ...)

  def pure_loss(params):
    copy = nnx.merge(graphdef, params, rest, copy=True)
    loss, _, _ = _split_loss_output(loss_fn(copy, *args), has_aux=has_aux,
                                    has_state=None, caller='nnx_grad_fn')
    return loss

  def grad_fn(params):
    return jax.grad(pure_loss)(nnx.as_pure(params))

  return grad_fn
