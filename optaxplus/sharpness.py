"""Unified SAM: sharpness-aware minimization from USAM to SAM, as optax transformations.

Implements the Unified SAM of Oikonomou & Loizou, *Sharpness-Aware Minimization: General
Analysis and Improved Rates*, ICLR 2025 (https://arxiv.org/abs/2503.02225), which joins
SAM (Foret et al., ICLR 2021) and unnormalized SAM (USAM; Andriushchenko & Flammarion,
ICML 2022) through one parameter ``lam``, plus the adaptive scaling of ASAM (Kwon et al.,
ICML 2021).

Two building blocks:

- :func:`sam_perturbation` maps a gradient to the ascent vector ``e`` (to be added to the
  parameters); it holds only a step count.
- :func:`unified_sam` wraps any base optimizer: it asks the caller's ``grad_fn`` for the
  gradient at ``params + e`` on the same batch and gives that gradient to the base
  optimizer at ``params``. :func:`sam`, :func:`usam` and :func:`asam` are named cases.
"""

from collections.abc import Callable
import numbers
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_range
from optaxplus._wide import wide

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
LamLike = Union[float, jax.Array, str, Callable[[jax.Array], jax.Array]]

_LAM_SCHEDULES = {
    # t counts SAM steps from 1 (METHODS.md §3); `count` counts them from 0.
    '1/t': lambda count: 1.0 / (count + 1.0),
    '1-1/t': lambda count: 1.0 - 1.0 / (count + 1.0),
}


class SAMPerturbationState(NamedTuple):
  """State of :func:`sam_perturbation`."""

  count: jax.Array  # shape=(), dtype=int32: perturbations computed so far.


class UnifiedSAMState(NamedTuple):
  """State of :func:`unified_sam`."""

  count: jax.Array  # shape=(), dtype=int32: update calls so far (SAM or not).
  base_state: optax.OptState


def _check_hyperparameters(rho, lam, eta, eps) -> None:
  # Python numbers only: under optax.inject_hyperparams the values are (traced) arrays.
  check_range('rho', rho, 0.0)
  if isinstance(lam, str) and lam not in _LAM_SCHEDULES:
    raise ValueError(
        f'lam must be a number in [0, 1], one of {sorted(_LAM_SCHEDULES)} or a callable '
        f'of the step count, got the string {lam!r}.'
    )
  if not isinstance(lam, str):
    check_range('lam', lam, 0.0, 1.0)
  check_range('eta', eta, 0.0)
  # ε > 0 keeps a zero gradient from giving 0/0.
  check_range('eps', eps, 0.0, low_open=True)


def _value_at(hyperparameter, count: jax.Array) -> jax.Array:
  if isinstance(hyperparameter, str):
    hyperparameter = _LAM_SCHEDULES[hyperparameter]
  if callable(hyperparameter):
    hyperparameter = hyperparameter(count)
  return jnp.asarray(hyperparameter, jnp.float32)


def _ascent_vector(grads, params, rho, lam, adaptive, eta, eps):
  """Returns e = ρ(1 − λ + λ/(‖T g‖ + ε)) T² g, with T = I unless adaptive."""
  if adaptive:
    # ASAM (Kwon et al. 2021): T = |w| + η on weight tensors, T = I on biases. The ASAM
    # code also scales PyTorch's norm scales (named "weight"); by ndim they are not.
    weight_scale = lambda w: jnp.abs(wide(w)) + eta if jnp.ndim(w) >= 2 else jnp.float32(1)
    scaling = jax.tree.map(weight_scale, params)
  else:
    scaling = jax.tree.map(lambda g: jnp.float32(1), grads)
  scaled = jax.tree.map(lambda t, g: t * wide(g), scaling, grads)
  norm = optax.tree.norm(scaled)
  coefficient = rho * (1.0 - lam + lam / (norm + eps))
  # A non-finite gradient (or one whose float32 norm overflows) gives e = 0, so the
  # second pass runs at params and never at a NaN point. The coefficient is checked too:
  # an ε that underflowed (float16 hyperparameters under inject_hyperparams) makes it
  # inf for a zero gradient, whose perturbation is 0.
  finite = jnp.isfinite(norm) & jnp.isfinite(coefficient)

  def leaf(t, g, scaled_g):
    return jnp.where(finite, coefficient * t * scaled_g, 0.0).astype(g.dtype)

  return jax.tree.map(leaf, scaling, grads, scaled)


def sam_perturbation(
    rho: ScalarOrSchedule,
    lam: LamLike = 1.0,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  r"""The Unified SAM ascent vector: maps a gradient ``g`` to ``e`` with ``x + e`` perturbed.

  .. math::

    e_t = \rho_t \Big(1 - \lambda_t + \frac{\lambda_t}{\|T g_t\| + \varepsilon}\Big) T^2 g_t

  with one global L2 norm over the tree, computed in float32 or wider. ``T = I`` by
  default; with ``adaptive=True`` (ASAM), ``T = |w| + \eta`` elementwise on every leaf of
  ``params`` with ``ndim >= 2`` (weight matrices, kernels) and ``T = I`` on the others
  (biases, and also norm scales, which the ASAM code scales as PyTorch "weight"s). ``λ = 1``
  gives SAM ``ρ g/‖g‖`` (ASAM ``ρ T²g/‖Tg‖``), ``λ = 0`` gives USAM ``ρ g`` (adaptive:
  ``ρ T²g``, our λ-unified choice), ``ρ = 0`` gives ``e = 0``.

  A zero gradient gives ``e = 0``; a gradient whose norm is not finite (NaN, inf, or a
  float32 overflow) also gives ``e = 0``. Leaves keep their dtype.

  Args:
    rho: the radius ``ρ >= 0``, a number or an optax schedule of the count.
    lam: ``λ`` in ``[0, 1]``: a number, ``"1/t"`` or ``"1-1/t"`` (``t`` counts
      perturbations from 1, so ``"1/t"`` starts at SAM and ``"1-1/t"`` at USAM), or a
      callable of the count. Callables (``rho`` and ``lam``) receive the number of
      perturbations computed before this one, starting at 0, as optax schedules do:
      ``lam="1/t"`` is ``lam=lambda count: 1 / (count + 1)``.
    adaptive: ASAM scaling; needs ``params`` in ``update``.
    eta: the ASAM offset ``η >= 0``.
    eps: ``ε > 0`` added to the norm.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` whose ``update(grads, state,
    params)`` returns ``e`` (``optax.apply_updates(params, e)`` is the perturbed point).
    The state is :class:`SAMPerturbationState`, one int32 scalar.

  Raises:
    ValueError: a Python number out of range or an unknown ``lam`` string.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.sharpness import sam_perturbation
    >>> grads = {'w': jnp.array([3.0, 4.0])}  # ‖g‖ = 5
    >>> tx = sam_perturbation(rho=0.1, lam=1.0)
    >>> e, state = tx.update(grads, tx.init(grads))
    >>> print(jnp.round(e['w'], 6))  # 0.1 * g / 5
    [0.06 0.08]
    >>> tx = sam_perturbation(rho=0.1, lam=0.0)
    >>> print(tx.update(grads, tx.init(grads))[0]['w'])  # 0.1 * g
    [0.3 0.4]

  References:
    Oikonomou & Loizou, `Sharpness-Aware Minimization: General Analysis and Improved
    Rates <https://arxiv.org/abs/2503.02225>`_, ICLR 2025.

    Kwon, Kim, Park & Choi, `ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  _check_hyperparameters(rho, lam, eta, eps)

  def init_fn(params):
    del params
    return SAMPerturbationState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if adaptive and params is None:
      raise ValueError('sam_perturbation(adaptive=True) needs params: T = |w| + eta.')
    e = _ascent_vector(
        updates,
        params,
        _value_at(rho, state.count),
        _value_at(lam, state.count),
        adaptive,
        eta,
        eps,
    )
    return e, SAMPerturbationState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _varying_axes(x) -> frozenset:
  """The mesh axes over which ``x`` may differ, as shard_map's type checking tracks them."""
  aval = jax.typeof(x)
  manual_axis_type = getattr(aval, 'manual_axis_type', None)  # JAX >= 0.9
  if manual_axis_type is not None:
    return frozenset(manual_axis_type.varying)
  return frozenset(getattr(aval, 'vma', ()))


def _check_local(grads, axis_name: str) -> None:
  """Raises if shard_map's type checking shows ``grads`` are not per-device gradients."""
  # Under shard_map(check_vma=True) the device index varies over the axis; under pmap or
  # check_vma=False no type varies and there is nothing to check.
  if axis_name not in _varying_axes(jax.lax.axis_index(axis_name)):
    return
  if not all(axis_name in _varying_axes(g) for g in jax.tree.leaves(grads)):
    raise ValueError(
        f'unified_sam(axis_name={axis_name!r}) needs the LOCAL gradient of each device, '
        f'but these gradients are the same on all devices. Under shard_map, the gradient '
        f'with respect to replicated params is already summed over {axis_name!r}; take '
        f'it at jax.lax.pcast(params, {axis_name!r}, to="varying") instead, or build the '
        f'shard_map with check_vma=False.'
    )


def _gradient_from(grad_fn, point, like):
  """Calls grad_fn(point); accepts grads or (grads, aux); checks it matches `like`."""
  result = grad_fn(point)
  expected = jax.tree.structure(like)
  if jax.tree.structure(result) != expected:
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and jax.tree.structure(result[0]) == expected
    ):
      result = result[0]  # (grads, aux): aux is the caller's business, see unified_sam.
    else:
      raise ValueError(
          'grad_fn must return gradients with the structure of the incoming gradients, '
          f'or a pair (gradients, aux). Expected {expected}, got '
          f'{jax.tree.structure(result)}.'
      )
  for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(like)):
    if jnp.shape(got) != jnp.shape(want):
      raise ValueError(
          f'grad_fn returned a leaf of shape {jnp.shape(got)} where the gradient has '
          f'shape {jnp.shape(want)}.'
      )
  return optax.tree.cast_like(result, like)


def unified_sam(
    base_optimizer: optax.GradientTransformation,
    rho: ScalarOrSchedule = 0.05,
    lam: LamLike = 1.0,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    eps: float = 1e-12,
    axis_name: Optional[str] = None,
    every_k: int = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""Unified SAM around a base optimizer: the base gets the gradient at ``x + e``.

  .. math::

    e_t = \rho_t \Big(1 - \lambda_t + \frac{\lambda_t}{\|g_t\| + \varepsilon}\Big) g_t,
    \qquad u_t = \mathrm{base}\big(\nabla f_{S_t}(x_t + e_t);\ x_t\big)

  where ``g_t`` is the gradient of the batch ``S_t`` at ``x_t`` (the ``grads`` passed to
  ``update``) and ``e_t`` comes from :func:`sam_perturbation` (ASAM scaling with
  ``adaptive=True``). The base optimizer is called at ``x_t``: its momentum, weight decay
  (``optax.add_decayed_weights`` inside the base) and clipping act at ``x_t`` on the SAM
  gradient; weight decay is not part of the ascent gradient.

  ``update(grads, state, params, *, grad_fn, **extra_args)``:

  - ``grad_fn(p)`` returns the gradient of the SAME batch at ``p`` (keep the same dropout
    key); it may return ``(grads, aux)``, and ``aux`` is discarded. Models with BatchNorm
    keep the statistics of the first, clean pass at ``params`` (the pass that gave
    ``grads``): ``grad_fn`` should not update them.
  - every other keyword, e.g. ``value=``, reaches the base optimizer unchanged, so a
    Polyak step (``optaxplus.polyak.momsps``) uses the loss at ``params`` with the SAM
    gradient.
  - ``every_k > 1``: only calls with ``count % every_k == 0`` are SAM steps (the first
    call is one); the others hand ``grads`` to the base and do not run ``grad_fn``
    (``lax.cond``). ``λ`` and ``ρ`` schedules count SAM steps only. On XLA:CPU,
    convolutions inside a ``lax.cond`` branch run many times slower (see
    ``benchmarks/RESULTS.md``); there, alternate two jitted steps from Python instead.
  - ``axis_name`` (inside ``shard_map`` or ``pmap``): ``grads`` is the device's LOCAL
    gradient, each device perturbs with its own gradient (m-sharpness with ``m`` = the
    per-device batch) and the gradient given to the base is ``lax.pmean``-ed over
    ``axis_name`` (on SAM and non-SAM steps). Under ``jax.shard_map`` (``check_vma=True``
    by default) the gradient with respect to replicated params is already summed over
    the axis: take the local one at ``jax.lax.pcast(params, axis_name, to='varying')``
    (a ``ValueError`` says so otherwise), or use ``check_vma=False``. Extra args are not
    averaged: pass values equal on all devices (e.g. a ``pmean``-ed ``value``). With
    ``axis_name=None`` there are no collectives; under ``jit`` with sharded inputs
    (global view) the perturbation is global, ``m`` = the global batch.

  A non-finite gradient gives ``e = 0``: the second pass runs at ``params`` and the base
  receives ``grad_fn(params)``, the gradient it would have had without SAM. To skip steps
  whose SAM gradient is not finite, wrap the base:
  ``unified_sam(optax.apply_if_finite(base, max_consecutive_errors=...))``.

  The perturbation is transient: the state adds one int32 scalar to the base's state.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: ``ρ >= 0``, a number or an optax schedule of the SAM-step count.
    lam: ``λ`` in ``[0, 1]``, ``"1/t"``, ``"1-1/t"`` or a callable of the SAM-step count
      (see :func:`sam_perturbation`). ``1`` is SAM, ``0`` is USAM.
    adaptive: ASAM scaling (see :func:`sam_perturbation`).
    eta: the ASAM offset ``η >= 0``.
    eps: ``ε > 0`` added to the gradient norm.
    axis_name: the mapped axis for per-device perturbations, or ``None``.
    every_k: a SAM step every ``every_k`` calls, an integer ``>= 1``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with state
    :class:`UnifiedSAMState`.

  Raises:
    ValueError: a Python number out of range or an unknown ``lam`` string.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optaxplus.sharpness import unified_sam
    >>> def loss(params, batch):
    ...   return jnp.mean((batch @ params['w'] - 1.0) ** 2)
    >>> params, batch = {'w': jnp.zeros(3)}, jnp.eye(3)
    >>> tx = unified_sam(optax.sgd(0.1, momentum=0.9), rho=0.05, lam=0.5)
    >>> state = tx.init(params)
    >>> grads = jax.grad(loss)(params, batch)
    >>> updates, state = tx.update(
    ...     grads, state, params, grad_fn=lambda p: jax.grad(loss)(p, batch))
    >>> params = optax.apply_updates(params, updates)
    >>> print(jnp.round(params['w'], 4))  # plain SGD would give 0.0667
    [0.0687 0.0687 0.0687]

  References:
    Oikonomou & Loizou, `Sharpness-Aware Minimization: General Analysis and Improved
    Rates <https://arxiv.org/abs/2503.02225>`_, ICLR 2025.

    Foret, Kleiner, Mobahi & Neyshabur, `Sharpness-Aware Minimization for Efficiently
    Improving Generalization <https://arxiv.org/abs/2010.01412>`_, ICLR 2021.
  """
  if isinstance(every_k, numbers.Real) and not (
      isinstance(every_k, numbers.Integral) and every_k >= 1
  ):
    raise ValueError(f'every_k must be an integer >= 1, got {every_k!r}.')
  perturbation = sam_perturbation(rho, lam, adaptive=adaptive, eta=eta, eps=eps)
  base_optimizer = optax.with_extra_args_support(base_optimizer)

  def init_fn(params):
    return UnifiedSAMState(
        count=jnp.zeros([], jnp.int32), base_state=base_optimizer.init(params)
    )

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    if grad_fn is None:
      raise TypeError(
          'unified_sam needs the gradient function of the current batch: call '
          'tx.update(grads, state, params, grad_fn=lambda p: jax.grad(loss)(p, batch)).'
      )
    if params is None:
      raise ValueError('unified_sam needs params: the SAM gradient is taken at params + e.')
    if axis_name is not None:
      _check_local(updates, axis_name)

    def sam_gradient():
      # SAM steps so far; with every_k = 1 this is state.count.
      sam_count = state.count // every_k
      e, _ = perturbation.update(updates, SAMPerturbationState(count=sam_count), params)
      return _gradient_from(grad_fn, optax.apply_updates(params, e), updates)

    if isinstance(every_k, numbers.Integral) and every_k == 1:
      grads = sam_gradient()
    else:
      grads = jax.lax.cond(state.count % every_k == 0, sam_gradient, lambda: updates)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    base_updates, base_state = base_optimizer.update(
        grads, state.base_state, params, **extra_args
    )
    return base_updates, UnifiedSAMState(
        count=optax.safe_increment(state.count), base_state=base_state
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sam(
    base_optimizer: optax.GradientTransformation, rho: ScalarOrSchedule = 0.05, **kwargs
) -> optax.GradientTransformationExtraArgs:
  """SAM: :func:`unified_sam` with ``lam=1``, ``e = ρ g/(‖g‖ + ε)``.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the radius ``ρ >= 0``.
    **kwargs: further keyword arguments of :func:`unified_sam` (``axis_name``,
      ``every_k``, ``eps``).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import sam
    >>> tx = sam(optax.sgd(0.1, momentum=0.9), rho=0.05)

  References:
    Foret, Kleiner, Mobahi & Neyshabur, `Sharpness-Aware Minimization for Efficiently
    Improving Generalization <https://arxiv.org/abs/2010.01412>`_, ICLR 2021.
  """
  return unified_sam(base_optimizer, rho, lam=1.0, **kwargs)


def usam(
    base_optimizer: optax.GradientTransformation, rho: ScalarOrSchedule = 0.05, **kwargs
) -> optax.GradientTransformationExtraArgs:
  """USAM: :func:`unified_sam` with ``lam=0``, the unnormalized ``e = ρ g``.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the step ``ρ >= 0``.
    **kwargs: further keyword arguments of :func:`unified_sam` (``adaptive``,
      ``axis_name``, ``every_k``).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import usam
    >>> tx = usam(optax.sgd(0.1, momentum=0.9), rho=0.05)

  References:
    Andriushchenko & Flammarion, `Towards Understanding Sharpness-Aware Minimization
    <https://arxiv.org/abs/2206.06232>`_, ICML 2022.
  """
  return unified_sam(base_optimizer, rho, lam=0.0, **kwargs)


def asam(
    base_optimizer: optax.GradientTransformation,
    rho: ScalarOrSchedule = 0.5,
    eta: float = 0.01,
    **kwargs,
) -> optax.GradientTransformationExtraArgs:
  """ASAM: :func:`unified_sam` with ``lam=1, adaptive=True``, ``e = ρ T²g/‖Tg‖``.

  ``T = |w| + η`` on leaves with ``ndim >= 2``, ``T = I`` on the others.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the radius ``ρ >= 0``; ASAM's is larger than SAM's.
    eta: the offset ``η >= 0``.
    **kwargs: further keyword arguments of :func:`unified_sam` (``axis_name``,
      ``every_k``, ``eps``).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import asam
    >>> tx = asam(optax.sgd(0.1, momentum=0.9), rho=0.5, eta=0.01)

  References:
    Kwon, Kim, Park & Choi, `ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  return unified_sam(base_optimizer, rho, lam=1.0, adaptive=True, eta=eta, **kwargs)
