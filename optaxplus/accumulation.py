"""Gradient accumulation over micro-batches that keeps the loss and survives a bad batch.

:func:`multi_steps` is ``optax.MultiSteps`` with the mean loss passed on as ``value`` (which
Polyak step sizes need) and non-finite micro-batches skipped instead of freezing training.
It needs only JAX and optax.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_range
from optaxplus._checks import is_tracer
from optaxplus._wide import tree_wide_dtype


class MultiStepsValueState(NamedTuple):
  """State of :func:`multi_steps`: ``optax.MultiSteps``'s, the mean loss and the skip count."""

  multi_steps: optax.MultiStepsState
  value_mean: jax.Array  # shape=(), float32 or float64 params' dtype; this cycle's mean loss.
  num_skipped: jax.Array  # shape=(), dtype=int32; non-finite micro-batches skipped so far.


def _all_finite(tree: Any) -> jax.Array:
  """Whether every entry of every leaf is finite (``True`` for an empty tree)."""
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def multi_steps(optimizer: optax.GradientTransformation, every_k_schedule: Any, *,
                should_skip_update_fn: Any = None) -> optax.GradientTransformationExtraArgs:
  """``optax.MultiSteps`` that passes on the MEAN ``value`` and skips non-finite micro-batches.

  ``optax.MultiSteps`` averages the gradients of ``k`` calls but passes the optimizer only
  the last call's ``value``, so a Polyak step divides one micro-batch's loss by the norm
  of the averaged gradient. This wrapper keeps the running mean of ``value`` (same
  weights as the gradient mean) and passes that instead; on the ``k``-th call it is the
  mean loss of the micro-batches the gradient averages:
  ``g = (1/k) Σ_i g_i``, ``value = (1/k) Σ_i f_i``.

  A micro-batch whose gradient or ``value`` is not finite (NaN or ±inf) is skipped: the
  call returns zero updates, leaves the accumulated gradient, the mean loss and the inner
  optimizer state as they were, does not count towards ``k``, and adds one to
  ``num_skipped`` in the state. (``optax.MultiSteps`` alone resets its accumulator with
  ``(1 − emit)·acc``, and ``0·NaN = NaN``: one NaN micro-batch would freeze training.)

  Accumulating inside one step with ``make_train_step(..., accumulation_steps=k)`` does
  the same without this state; prefer it for SAM, since ``MultiSteps`` runs the inner
  update (and so ``grad_fn``) on every micro-step and SAM would perturb with a partial
  gradient on the last micro-batch only.

  Args:
    optimizer: the optimizer to apply every ``k`` calls.
    every_k_schedule: ``k``, a whole number ``>= 1``, or a schedule of the number of
      optimizer steps returning it.
    should_skip_update_fn: as in ``optax.MultiSteps``, a further test of which calls to
      skip (not counted in ``num_skipped``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`MultiStepsValueState`.

  Raises:
    TypeError, ValueError: ``every_k_schedule`` is not a whole number ``>= 1`` or a
      callable.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optaxplus.polyak import sps
    >>> tx = multi_steps(sps(c=1.0, max_learning_rate=10.0), every_k_schedule=2)
    >>> params = {'w': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> loss = lambda p, y: jnp.mean((p['w'] - y) ** 2)
    >>> for y in (jnp.ones(2), jnp.full(2, jnp.nan), 3 * jnp.ones(2)):  # NaN: skipped
    ...   value, grads = jax.value_and_grad(loss)(params, y)
    ...   updates, state = tx.update(grads, state, params, value=value)
    ...   params = optax.apply_updates(params, updates)
    >>> print(params['w'].round(4))  # SPS step 5 / ‖(-2, -2)‖² = 0.625; optax.MultiSteps: 9 / 8
    [1.25 1.25]
    >>> int(state.num_skipped), int(state.multi_steps.gradient_step)
    (1, 1)
  """
  check_range('every_k_schedule', every_k_schedule, 1, integer=True, allow_schedule=True)
  if callable(every_k_schedule):
    schedule = every_k_schedule
  else:  # A number, or a tracer under inject_hyperparams: a constant schedule either way.
    k = every_k_schedule if is_tracer(every_k_schedule) else int(every_k_schedule)
    schedule = lambda step: jnp.asarray(k, jnp.int32)

  def inner(accumulator_dtype) -> optax.MultiSteps:
    return optax.MultiSteps(optax.with_extra_args_support(optimizer), schedule,
                            should_skip_update_fn=should_skip_update_fn,
                            accumulator_dtype=accumulator_dtype)

  def init_fn(params):
    # optax accumulates in float32 by default: that drops the imaginary part of complex
    # gradients and the precision of float64 ones.
    accumulator_dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(params))
    return MultiStepsValueState(multi_steps=inner(accumulator_dtype).init(params),
                                value_mean=jnp.zeros((), tree_wide_dtype(params)),
                                num_skipped=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    before = state.multi_steps
    accumulator_dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(before.acc_grads))
    finite = _all_finite(updates)
    if 'value' in extra_args:
      value = jnp.asarray(extra_args['value'], state.value_mean.dtype)
      finite &= _all_finite(value)
    # The inner update runs on zeros in place of a non-finite micro-batch, so that no NaN
    # reaches its state; its results are then discarded.
    updates = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), updates)
    value_mean = state.value_mean
    if 'value' in extra_args:
      value = jnp.where(finite, value, value_mean)
      value_mean = value_mean + (value - value_mean) / (before.mini_step + 1)
      extra_args['value'] = value_mean
    new_updates, after = inner(accumulator_dtype).update(updates, before, params, **extra_args)
    emitted = after.gradient_step != before.gradient_step
    skipped = (after.mini_step == before.mini_step) & ~emitted  # by should_skip_update_fn
    value_mean = jnp.where(emitted, 0.0, jnp.where(skipped, state.value_mean, value_mean))
    keep_if_not_finite = lambda new, old: jnp.where(finite, new, old)
    return (
        jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates),
        MultiStepsValueState(
            multi_steps=jax.tree.map(keep_if_not_finite, after, before),
            value_mean=keep_if_not_finite(value_mean, state.value_mean).astype(
                state.value_mean.dtype),
            num_skipped=state.num_skipped + (~finite).astype(jnp.int32)))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
