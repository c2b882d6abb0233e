r"""Preconditioned stochastic Polyak steps: PSPS and SANIA, with heavy-ball momentum.

A positive diagonal preconditioner ``D_t`` turns the gradient into the direction
``d_t = D_t⁻¹ g_t``; the Polyak step then projects the iterate, in the ``D_t``-norm, onto
a model of the loss that reaches the lower bound ``f*``:

- PSPS projects onto the linear model:
  ``γ_t = (f_t − f*) / (c ⟨g_t, d_t⟩)`` (capped as SPS_max), ``x_{t+1} = x_t − γ_t d_t``.
  ``D = I`` is SPS exactly.
- SANIA projects onto the quadratic model ``f_t + ⟨g_t, x − x_t⟩ + ½ ‖x − x_t‖²_{D_t}``:
  with ``r_t = (f_t − f*) / ⟨g_t, d_t⟩``, ``λ_t = 1 − √(1 − 2 r_t)`` when ``r_t ≤ ½`` and
  ``λ_t = 1`` (the model's minimiser) otherwise; ``x_{t+1} = x_t − λ_t d_t``. With the
  square-root-free preconditioners ``D = v`` (AdaGrad-SQR, Adam-SQR) every quantity of the
  step is invariant to a fixed diagonal rescaling ``x ↦ S x`` of the parameters.

Momentum follows MomSPS: the step is multiplied by ``1 − β`` and fed to the heavy ball
``u_t = −γ_t d_t + β u_{t−1}``; ``β = 0`` gives the plain method. The Polyak maths (loss
gap, caps, skips, the state holding ``step_size``) is :mod:`optaxplus.polyak`'s, applied
to the scalar ``√⟨g_t, d_t⟩`` in place of ``‖g_t‖``, in float32 or wider.

Skipped updates: when the loss or ``⟨g_t, d_t⟩`` is not finite, ``⟨g_t, d_t⟩ ≤ 0``, or the
loss is at or below ``f_min``, the update is zero and the whole state, the
preconditioner's included, is left unchanged. ``⟨g_t, d_t⟩`` is summed in float32 (float64
for float64 params), exactly where only the sum would under/overflow.

Reading the step taken: ``optax.tree_utils.tree_get(state, 'step_size')`` (``γ_t`` or
``(1 − β) λ_t``, in units of ``d_t``).

References:
  Abdukhakimov, Xiang, Kamzolov, Takáč, *Stochastic Gradient Descent with Preconditioned
  Polyak Step-size*, Comput. Math. Math. Phys. 64 (2024), arXiv:2310.02093.
  Abdukhakimov, Xiang, Kamzolov, Gower, Takáč, *SANIA: Polyak-type Optimization Framework
  Leads to Scale Invariant Stochastic Algorithms*, arXiv:2312.17369.
  Oikonomou, Loizou, *Stochastic Polyak Step-sizes and Momentum: Convergence Guarantees and
  Practical Performance*, ICLR 2025, arXiv:2406.04142.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_range
from optaxplus._wide import rescaling_powers
from optaxplus._wide import tree_wide_dtype
from optaxplus._wide import wide
from optaxplus.polyak import _RANGES as _POLYAK_RANGES
from optaxplus.polyak import _descend_with_heavy_ball
from optaxplus.polyak import _polyak
from optaxplus.polyak import _polyak_step
from optaxplus.polyak import PolyakStepState
from optaxplus.polyak import scale_by_sps

_RANGES = {
    **_POLYAK_RANGES,
    'b2': dict(low=0.0, high=1.0, high_open=True),
    'eps': dict(low=0.0, low_open=True),
    'seed': dict(low=0.0, integer=True),
    'init_samples': dict(low=1.0, integer=True),
}

_MISSING_HVP = (
    'The Hutchinson preconditioner needs Hessian-vector products of the mini-batch loss at '
    'the current parameters: call `optimizer.update(grads, state, params, value=loss, '
    'hvp_fn=lambda v: jax.jvp(jax.grad(loss_fn), (params,), (v,))[1])`, with loss_fn the '
    'loss of the same batch.'
)


def _check(**hyperparams: Any) -> None:
  for name, value in hyperparams.items():
    check_range(name, value, **_RANGES[name])


class PreconditionedPolyakState(NamedTuple):
  """State of a preconditioned Polyak step: the direction's state and the Polyak step's."""

  direction: Any  # the state of the transform that maps g_t to d_t = D_t⁻¹ g_t
  polyak: PolyakStepState  # count, step_size (the step last taken), ...


class DiagonalPreconditionerState(NamedTuple):
  """State of a diagonal preconditioner: updates seen and its running estimate."""

  count: jax.Array  # shape=(), dtype=int32; updates applied.
  estimate: optax.Updates  # v_t, Σ g², or the Hessian diagonal; real, shaped as params.


def _inner(g, d) -> jax.Array:
  """``⟨g, d⟩ = Σ Re(conj(g) d)`` in float32 or wider, exact where only the sum under/overflows.

  As :func:`optaxplus._wide.global_norm`: the plain sum, a scaled-up and a scaled-down
  one and the largest ``|g_i d_i|`` in ONE variadic reduce per leaf (which XLA also fuses
  with the maths that computes ``d``); the scaled-up sum serves when every term is below
  1, the scaled-down one when the plain sum overflows. Each product must be finite.
  """
  dtype = tree_wide_dtype(g)
  up, down = rescaling_powers(dtype)
  zero = jnp.zeros([], dtype)
  totals = (zero,) * 4
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)):
    x = jnp.real(jnp.conj(wide(a)) * wide(b)).astype(dtype)
    terms = (x, jnp.clip(x, -1, 1) * up, x * down, jnp.abs(x))
    totals = _sums_and_max(totals, jax.lax.reduce(terms, (zero,) * 4, _sums_and_max,
                                                  tuple(range(x.ndim))))
  plain, tiny, huge, largest = totals
  return jnp.where(largest < 1, tiny / up, jnp.where(jnp.isinf(plain), huge / down, plain))


def _sums_and_max(a: tuple, b: tuple) -> tuple:
  """Three sums and a maximum; one module-level function, so eager reduces hit the cache."""
  return a[0] + b[0], a[1] + b[1], a[2] + b[2], jnp.maximum(a[3], b[3])


def _preconditioned(direction, polyak) -> optax.GradientTransformationExtraArgs:
  """Multiplies ``d = direction(g)`` by ``polyak``'s step for ``‖g‖ := √⟨g, d⟩``."""
  direction = optax.with_extra_args_support(direction)

  def init_fn(params):
    return PreconditionedPolyakState(direction.init(params), polyak.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    d, direction_state = direction.update(updates, state.direction, params, **extra_args)
    # The Polyak step of a one-entry gradient √⟨g, d⟩ is gap / (c ⟨g, d⟩): the Polyak
    # family's rule, skips and state as they are. A negative ⟨g, d⟩ gives NaN: skipped.
    root = {'root': jnp.sqrt(_inner(updates, d))}
    _, polyak_state = polyak.update(root, state.polyak, params, **extra_args)
    applied = polyak_state.count != state.polyak.count
    step = polyak_state.step_size
    if isinstance(direction, _Diagonal):
      # The state and d once more, masked by `applied` rather than selected: XLA then
      # computes each param-sized result in the one pass that writes it, where it would
      # keep the first ones in temporaries (it does not duplicate work into two users).
      direction_state = direction.commit(updates, state.direction, applied)
      d = direction.divide(updates, direction_state)
    else:
      direction_state = optax.tree.where(applied, direction_state, state.direction)
    scale = lambda g, x: jnp.where(applied, wide(x) * step, 0).astype(g.dtype)
    return (jax.tree.map(scale, updates, d),
            PreconditionedPolyakState(direction_state, polyak_state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_preconditioned_polyak(
    direction: optax.GradientTransformation,
    c: Any = 0.5,
    max_learning_rate: Any = 1.0,
    f_min: Any = 0.0,
    *,
    momentum: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the preconditioned direction by the capped Polyak step (PSPS, PSPS with momentum).

  .. math::
    d_t = D_t^{-1} g_t,\quad
    γ_t = (1 − β) \min\{ (f_t − f^*) / (c ⟨g_t, d_t⟩),\ γ_b \},\quad
    \text{update} = γ_t d_t

  Args:
    direction: any optax transform mapping the gradient ``g_t`` to ``d_t = D_t⁻¹ g_t`` for
      a positive definite ``D_t``, e.g. :func:`scale_by_adam_preconditioner`,
      :func:`scale_by_hutchinson` or ``optax.scale_by_rms()``. ``optax.identity()`` gives
      :func:`optaxplus.scale_by_sps`. Its extra arguments are passed on to it.
    c: Polyak constant, > 0.
    max_learning_rate: the cap ``γ_b`` on the step, > 0; ``inf`` for no cap.
    f_min: a lower bound ``f^*`` of the loss, finite.
    momentum: the ``β`` of the heavy ball this step feeds, in [0, 1); the step is
      multiplied by ``1 − β``.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=`` (and
    what ``direction`` needs).

  Examples:
    >>> import jax.numpy as jnp, optax, optaxplus
    >>> tx = optaxplus.scale_by_preconditioned_polyak(optax.scale(0.5), c=1.0)
    >>> g = jnp.array([3.0, 4.0])  # d = g / 2, ⟨g, d⟩ = 12.5
    >>> step, state = tx.update(g, tx.init(g), value=5.0)
    >>> print(optax.tree_utils.tree_get(state, 'step_size'), step)  # 5 / 12.5
    0.4 [0.6 0.8]
  """
  return _preconditioned(direction, scale_by_sps(c, max_learning_rate, f_min,
                                                 momentum=momentum))


def scale_by_sania(
    direction: optax.GradientTransformation, f_min: Any = 0.0, *, momentum: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the preconditioned direction by SANIA's step (and its momentum version).

  The step projects ``x_t``, in the ``D_t``-norm, onto the zero set of the quadratic
  model ``f_t − f^* + ⟨g_t, x − x_t⟩ + ½ ‖x − x_t‖²_{D_t}``, or goes to the model's
  minimiser when the model stays above zero:

  .. math::
    r_t = \frac{f_t − f^*}{⟨g_t, d_t⟩},\quad
    λ_t = \begin{cases} 1 − \sqrt{1 − 2 r_t} & r_t ≤ ½ \\ 1 & r_t > ½ \end{cases},\quad
    \text{update} = (1 − β) λ_t d_t

  ``λ_t`` lies between the Polyak step ``r_t`` and ``2 r_t`` and never exceeds 1.

  Args:
    direction: the transform mapping ``g_t`` to ``d_t = D_t⁻¹ g_t``, e.g.
      :func:`scale_by_adam_sqr` or :func:`scale_by_adagrad_sqr`.
    f_min: a lower bound ``f^*`` of the loss, finite.
    momentum: the heavy ball's ``β`` in [0, 1); the step is multiplied by ``1 − β``.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=``.

  Examples:
    >>> import jax.numpy as jnp, optax, optaxplus
    >>> tx = optaxplus.scale_by_sania(optax.identity())
    >>> g = jnp.array([3.0, 4.0])  # r = 4 / 25, λ = 1 − √(1 − 0.32)
    >>> _, state = tx.update(g, tx.init(g), value=4.0)
    >>> print(f"{optax.tree_utils.tree_get(state, 'step_size'):.6f}")
    0.175379
  """

  def rule(state, gap, norm, gap_sum, h):
    del state, gap_sum, h
    ratio = _polyak(gap, 1, norm)
    # 1 − √(1 − 2r) written as 2r / (1 + √(1 − 2r)): no cancellation for small r.
    root = jnp.sqrt(jnp.maximum(1 - 2 * ratio, 0))
    return jnp.where(ratio < 0.5, 2 * ratio / (1 + root), 1)

  return _preconditioned(direction, _polyak_step(rule, f_min=f_min, momentum=momentum))


def _real_zeros(params):
  return jax.tree.map(lambda p: jnp.zeros_like(p, jnp.finfo(p.dtype).dtype), params)


def _init(params) -> DiagonalPreconditionerState:
  return DiagonalPreconditionerState(jnp.zeros([], jnp.int32), _real_zeros(params))


class _Diagonal(optax.GradientTransformationExtraArgs):
  """A diagonal preconditioner ``d = divide(g, state)`` with a masked state update.

  ``commit(g, state, applied)`` is the updated state where ``applied``, ``state`` itself
  elsewhere, computed elementwise (``update`` commits unconditionally).
  """

  commit: Callable[[optax.Updates, DiagonalPreconditionerState, Any],
                   DiagonalPreconditionerState]
  divide: Callable[[optax.Updates, DiagonalPreconditionerState], optax.Updates]


def _squared_gradients(b2: Any, eps: Any, *, square_root: bool) -> _Diagonal:
  """``d = g / D`` with ``v`` an average (``b2`` a number) or a sum (``b2`` None) of ``|g|²``.

  ``D = √v̂ + ε`` with ``square_root``, ``D = max(v̂, ε)`` otherwise; ``v̂ = v / (1 − b2^t)``.
  """
  _check(eps=eps, **({} if b2 is None else {'b2': b2}))

  def commit(updates, state, applied=None):
    # In the compute dtype, so that (1 − b2) and 1 − b2^t round alike. A skipped update
    # takes decay 1 and a zero gradient: exactly the old state. (applied=None: commit.)
    dtype = tree_wide_dtype(updates)
    mask = (lambda x, other: x) if applied is None else (
        lambda x, other: jnp.where(applied, x, other))
    decay = None if b2 is None else mask(jnp.asarray(b2, dtype), 1)

    def accumulate(v, g):
      g = mask(wide(g), 0)
      square = jnp.real(g * jnp.conj(g))
      new = wide(v) + square if b2 is None else decay * wide(v) + (1 - decay) * square
      return new.astype(v.dtype)

    count = mask(optax.safe_increment(state.count), state.count)
    return DiagonalPreconditionerState(count, jax.tree.map(accumulate, state.estimate, updates))

  def divide(updates, state):
    dtype = tree_wide_dtype(updates)
    if b2 is not None:
      # (A state that never committed divides by nothing: its d is not applied.)
      t = jnp.maximum(state.count, 1).astype(dtype)
      correction = 1 / (1 - jnp.asarray(b2, dtype) ** t)

    def one(g, v):
      v = wide(v) if b2 is None else wide(v) * correction
      denominator = jnp.sqrt(v) + eps if square_root else jnp.maximum(v, eps)
      return (wide(g) / denominator).astype(g.dtype)

    return jax.tree.map(one, updates, state.estimate)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    new_state = commit(updates, state)
    return divide(updates, new_state), new_state

  preconditioner = _Diagonal(_init, update_fn)
  preconditioner.commit, preconditioner.divide = commit, divide
  return preconditioner


def scale_by_adam_preconditioner(
    b2: Any = 0.999, eps: Any = 1e-8
) -> optax.GradientTransformationExtraArgs:
  r"""Divides the gradient by PSPS's Adam-type preconditioner (Adam without first moment).

  .. math::
    v_t = b_2 v_{t−1} + (1 − b_2) |g_t|²,\quad
    D_t = \sqrt{v_t / (1 − b_2^t)} + ε,\quad d_t = g_t / D_t

  Args:
    b2: the decay of the average of squared gradients, in [0, 1).
    eps: ``ε`` added to the root, > 0.

  Returns:
    A ``GradientTransformationExtraArgs`` returning ``d_t``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_adam_preconditioner(eps=0.0001)
    >>> d, _ = tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))
    >>> print(f'{d[0]:.5f} {d[1]:.5f}')  # g / (|g| + ε) on the first step
    0.99995 -0.99980
  """
  return _squared_gradients(b2, eps, square_root=True)


def scale_by_adagrad_preconditioner(eps: Any = 1e-8) -> optax.GradientTransformationExtraArgs:
  r"""Divides the gradient by PSPS's AdaGrad-type preconditioner.

  .. math::
    D_t = \sqrt{\textstyle\sum_{s \le t} |g_s|²} + ε,\quad d_t = g_t / D_t

  Args:
    eps: ``ε`` added to the root, > 0.

  Returns:
    A ``GradientTransformationExtraArgs`` returning ``d_t``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_adagrad_preconditioner()
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.array([3.0]), state)
    >>> d, _ = tx.update(jnp.array([4.0]), state)
    >>> print(d)  # 4 / √(9 + 16)
    [0.8]
  """
  return _squared_gradients(None, eps, square_root=True)


def scale_by_adam_sqr(b2: Any = 0.999, eps: Any = 0.1) -> optax.GradientTransformationExtraArgs:
  r"""Divides the gradient by the square-root-free Adam preconditioner, Adam-SQR (SANIA).

  .. math::
    v_t = b_2 v_{t−1} + (1 − b_2) |g_t|²,\quad
    D_t = \max\{ v_t / (1 − b_2^t),\ ε \},\quad d_t = g_t / D_t

  Without the root, training on ``S x`` for a fixed positive diagonal ``S`` maps ``d_t`` to
  ``S d_t`` and leaves ``⟨g_t, d_t⟩`` unchanged (as long as ``ε`` does not bind).

  Args:
    b2: the decay of the average of squared gradients, in [0, 1) (reference 0.999).
    eps: the floor ``ε`` of ``D_t``, > 0 (reference 0.1).

  Returns:
    A ``GradientTransformationExtraArgs`` returning ``d_t``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_adam_sqr()
    >>> d, _ = tx.update(jnp.array([2.0, 0.25]), tx.init(jnp.zeros(2)))
    >>> print(d.round(5))  # g / max(g², 0.1) on the first step
    [0.5 2.5]
  """
  return _squared_gradients(b2, eps, square_root=False)


def scale_by_adagrad_sqr(eps: Any = 0.1) -> optax.GradientTransformationExtraArgs:
  r"""Divides the gradient by the square-root-free AdaGrad preconditioner, AdaGrad-SQR (SANIA).

  .. math::
    D_t = \max\{ \textstyle\sum_{s \le t} |g_s|²,\ ε \},\quad d_t = g_t / D_t

  Args:
    eps: the floor ``ε`` of ``D_t``, > 0 (reference 0.1).

  Returns:
    A ``GradientTransformationExtraArgs`` returning ``d_t``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_adagrad_sqr()
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.array([3.0]), state)
    >>> d, _ = tx.update(jnp.array([4.0]), state)
    >>> print(d)  # 4 / (9 + 16)
    [0.16]
  """
  return _squared_gradients(None, eps, square_root=False)


def _hutchinson_probe(key, like, hvp_fn):
  """``z ⊙ H z`` for a Rademacher ``z`` shaped as ``like``, in float32 or wider."""
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, max(len(leaves), 1))[:len(leaves)]
  z = jax.tree.unflatten(treedef, [
      jax.random.rademacher(k, g.shape, jnp.int8).astype(g.dtype) for k, g in zip(keys, leaves)])
  return jax.tree.map(lambda a, b: jnp.real(wide(a) * wide(b)), z, hvp_fn(z))


def scale_by_hutchinson(
    b2: Any = 0.999, eps: Any = 0.1, *, seed: Any = 0, init_samples: Any = 100
) -> optax.GradientTransformationExtraArgs:
  r"""Divides the gradient by Hutchinson's estimate of the Hessian diagonal (PSPS).

  .. math::
    D_0 = \tfrac{1}{n} \textstyle\sum_{k=1}^{n} z_k ⊙ H_0 z_k,\quad
    D_t = b_2 D_{t−1} + (1 − b_2)\, z ⊙ H_t z,\quad
    \hat D_t = \max\{|D_t|, ε\},\quad d_t = g_t / \hat D_t

  with Rademacher vectors ``z`` (entries ±1) and ``H_t`` the Hessian of the mini-batch
  loss at the current parameters. ``D_0`` is estimated at the first update from
  ``init_samples`` probes (``n``), as in the paper.

  The update takes ``hvp_fn=``: ``hvp_fn(v)`` returns ``H_t v`` for a tree ``v`` shaped as
  the params, e.g. ``lambda v: jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]``. The
  probes are drawn from ``seed`` and the count of updates, so the state holds no key.

  Args:
    b2: the decay of the average of the estimates, in [0, 1) (reference 0.999).
    eps: the floor ``ε`` (the paper's ``α``) of ``|D_t|``, > 0 (reference 0.1).
    seed: the random seed of the probes, a whole number ≥ 0.
    init_samples: ``n``, the probes averaged into ``D_0``, a whole number ≥ 1
      (reference 100).

  Returns:
    A ``GradientTransformationExtraArgs`` returning ``d_t``; its update needs ``hvp_fn=``.

  Examples:
    >>> import jax, jax.numpy as jnp, optaxplus
    >>> loss_fn = lambda w: jnp.sum(jnp.array([4.0, 0.01]) * w ** 2)  # H = diag(8, 0.02)
    >>> w = jnp.ones(2)
    >>> tx = optaxplus.scale_by_hutchinson()
    >>> hvp_fn = lambda v: jax.jvp(jax.grad(loss_fn), (w,), (v,))[1]
    >>> d, _ = tx.update(jax.grad(loss_fn)(w), tx.init(w), hvp_fn=hvp_fn)
    >>> print(f'{d[0]:.5f} {d[1]:.5f}')  # g / max(|diag H|, 0.1): exact for a diagonal H
    1.00000 0.20000
  """
  _check(b2=b2, eps=eps, seed=seed, init_samples=init_samples)

  def update_fn(updates, state, params=None, *, hvp_fn=None, **extra_args):
    del params, extra_args
    if hvp_fn is None:
      raise TypeError(_MISSING_HVP)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), state.count), 2)
    estimate = jax.tree.map(wide, state.estimate)

    def add_probe(k, total):
      probe = _hutchinson_probe(jax.random.fold_in(keys[1], k), updates, hvp_fn)
      return jax.tree.map(jnp.add, total, probe)

    # D_0 from init_samples probes at the first update; no probe (a loop of 0) afterwards.
    first = state.count == 0
    total = jax.lax.fori_loop(0, jnp.where(first, init_samples, 0), add_probe,
                              jax.tree.map(jnp.zeros_like, estimate))
    previous = jax.tree.map(lambda t, e: jnp.where(first, t / init_samples, e), total, estimate)
    probe = _hutchinson_probe(keys[0], updates, hvp_fn)
    decay = jnp.asarray(b2, tree_wide_dtype(updates))
    estimate = jax.tree.map(lambda e, z: decay * e + (1 - decay) * z, previous, probe)
    direction = lambda g, e: (wide(g) / jnp.maximum(jnp.abs(e), eps)).astype(g.dtype)
    new_state = DiagonalPreconditionerState(
        optax.safe_increment(state.count),
        jax.tree.map(lambda e, old: e.astype(old.dtype), estimate, state.estimate))
    return jax.tree.map(direction, updates, estimate), new_state

  return optax.GradientTransformationExtraArgs(_init, update_fn)


_PSPS_DIRECTIONS: dict[str, Callable[..., optax.GradientTransformation]] = {
    'adam': lambda b2, eps, seed, init_samples: scale_by_adam_preconditioner(b2, eps),
    'adagrad': lambda b2, eps, seed, init_samples: scale_by_adagrad_preconditioner(eps),
    'hutchinson': lambda b2, eps, seed, init_samples: scale_by_hutchinson(
        b2, eps, seed=seed, init_samples=init_samples),
}
_PSPS_EPS = {'adam': 1e-8, 'adagrad': 1e-8, 'hutchinson': 0.1}
_SANIA_DIRECTIONS = {
    'adam_sqr': lambda b2, eps: scale_by_adam_sqr(b2, eps),
    'adagrad_sqr': lambda b2, eps: scale_by_adagrad_sqr(eps),
}


def _choice(name: str, value: Any, choices: dict) -> None:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f'{name} must be one of {sorted(choices)}, got {value!r}.')


def psps(
    preconditioner: str = 'adam',
    c: Any = 1.0,
    max_learning_rate: Any = 1.0,
    f_min: Any = 0.0,
    momentum: Any = 0.0,
    *,
    b2: Any = 0.999,
    eps: Any = None,
    seed: Any = 0,
    init_samples: Any = 100,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD (or heavy ball) with the preconditioned Polyak step PSPS (Abdukhakimov et al. 2024).

  .. math::
    d_t = D_t^{-1} g_t,\quad γ_t = (1 − β) \min\{ (f_t − f^*) / (c ⟨g_t, d_t⟩),\ γ_b \},\quad
    x_{t+1} = x_t − γ_t d_t + β (x_t − x_{t−1})

  The defaults need no tuning and are the paper's: ``c = 1``, ``f^* = 0``, ``β = 0``;
  Adam-type ``D_t`` with ``b_2 = 0.999``, ``ε = 10⁻⁸``; Hutchinson with ``b_2 = 0.999``,
  ``α = 0.1`` and 100 probes for ``D_0``. The paper has no cap; ours, ``γ_b = 1`` (a full
  Newton step with Hutchinson's ``D``, an Adam learning rate of 1 with Adam's), binds only
  on wild steps: pass ``max_learning_rate=float('inf')`` for the paper's exact rule.

  Args:
    preconditioner: ``'adam'`` (:func:`scale_by_adam_preconditioner`), ``'adagrad'``
      (:func:`scale_by_adagrad_preconditioner`) or ``'hutchinson'``
      (:func:`scale_by_hutchinson`, whose update needs ``hvp_fn=``).
    c: Polyak constant, > 0.
    max_learning_rate: the cap ``γ_b``, > 0; ``inf`` for no cap.
    f_min: a lower bound ``f^*`` of the loss, finite.
    momentum: ``β`` in [0, 1); 0 gives PSPS.
    b2: the preconditioner's decay, in [0, 1) (unused by ``'adagrad'``).
    eps: the preconditioner's ``ε``, > 0; None for its default (1e-8 for ``'adam'`` and
      ``'adagrad'``, 0.1 for ``'hutchinson'``).
    seed: the Hutchinson probes' seed, a whole number ≥ 0 (``'hutchinson'`` only).
    init_samples: the probes averaged into ``D_0`` (``'hutchinson'`` only).

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, optaxplus
    >>> scales = jnp.array([1000.0, 1.0, 0.001])  # badly scaled coordinates
    >>> loss_fn = lambda w: jnp.sum((scales * (w - 1.0)) ** 2)
    >>> w = jnp.zeros(3)
    >>> tx = optaxplus.psps('adam')
    >>> state, update = tx.init(w), jax.jit(tx.update)
    >>> for _ in range(100):
    ...   loss, grads = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = update(grads, state, w, value=loss)
    ...   w = optax.apply_updates(w, updates)
    >>> print(loss_fn(w) < 1e-6)
    True
  """
  _choice('preconditioner', preconditioner, _PSPS_DIRECTIONS)
  _check(b2=b2, seed=seed, init_samples=init_samples)  # also where this preconditioner ignores them
  eps = _PSPS_EPS[preconditioner] if eps is None else eps
  direction = _PSPS_DIRECTIONS[preconditioner](b2, eps, seed, init_samples)
  step = scale_by_preconditioned_polyak(direction, c, max_learning_rate, f_min,
                                        momentum=momentum)
  return _descend_with_heavy_ball(step, momentum)


def sania(
    preconditioner: str = 'adam_sqr',
    f_min: Any = 0.0,
    momentum: Any = 0.0,
    *,
    b2: Any = 0.999,
    eps: Any = 0.1,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD (or heavy ball) with SANIA's step and a square-root-free preconditioner.

  .. math::
    d_t = D_t^{-1} g_t,\quad r_t = \frac{f_t − f^*}{⟨g_t, d_t⟩},\quad
    λ_t = \begin{cases} 1 − \sqrt{1 − 2 r_t} & r_t ≤ ½ \\ 1 & r_t > ½ \end{cases},\quad
    x_{t+1} = x_t − (1 − β) λ_t d_t + β (x_t − x_{t−1})

  with ``D_t = max{v̂_t, ε}`` (Adam-SQR, :func:`scale_by_adam_sqr`) or
  ``max{Σ_s |g_s|², ε}`` (AdaGrad-SQR, :func:`scale_by_adagrad_sqr`); see
  :func:`scale_by_sania`. Where ``ε`` does not bind, training on ``S x`` for a fixed
  positive diagonal ``S`` gives the iterates ``S x_t``. The defaults are the authors'
  reference values (no tuning): ``f^* = 0``, ``β = 0``, ``b_2 = 0.999``, ``ε = 0.1``.

  Args:
    preconditioner: ``'adam_sqr'`` or ``'adagrad_sqr'``.
    f_min: a lower bound ``f^*`` of the loss, finite.
    momentum: ``β`` in [0, 1); 0 gives SANIA.
    b2: Adam-SQR's decay, in [0, 1) (unused by ``'adagrad_sqr'``).
    eps: the floor ``ε`` of ``D_t``, > 0.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.sania('adagrad_sqr')
    >>> g = jnp.array([2.0, -1.0])  # d = g / g² = [0.5, −1], ⟨g, d⟩ = 2
    >>> updates, state = tx.update(g, tx.init(g), value=3.0)  # r = 1.5 > ½: λ = 1
    >>> print(updates)
    [-0.5  1. ]
  """
  _choice('preconditioner', preconditioner, _SANIA_DIRECTIONS)
  _check(b2=b2)
  direction = _SANIA_DIRECTIONS[preconditioner](b2, eps)
  return _descend_with_heavy_ball(scale_by_sania(direction, f_min, momentum=momentum),
                                  momentum)
