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
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from optaxplus._axes import axis_names, cast_varying, varying_axes
from optaxplus._checks import check_bool, check_range, is_tracer
from optaxplus._wide import global_norm_of, tree_wide_dtype, wide

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
LamLike = Union[float, jax.Array, str, Callable[[jax.Array], jax.Array]]
AxisName = Union[str, tuple[str, ...], None]

_LAM_SCHEDULES = {
    # λ_t = 1/t and 1 − 1/t with t = 1, 2, ... counting SAM steps (Oikonomou & Loizou,
    # 2025); `count` counts them from 0.
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


def _check_lam(lam) -> None:
  strings = ' or '.join(repr(name) for name in _LAM_SCHEDULES)
  if isinstance(lam, str):
    if lam not in _LAM_SCHEDULES:
      raise ValueError(
          f'lam must be a number in [0, 1], a callable of the step, {strings}, got the '
          f'string {lam!r}.'
      )
    return
  try:
    check_range('lam', lam, 0.0, 1.0, allow_schedule=True)
  except (TypeError, ValueError) as error:
    raise type(error)(f'{error} lam may also be {strings}.') from None


def _check_hyperparameters(rho, lam, adaptive, eta, eps) -> None:
  check_range('rho', rho, 0.0, allow_schedule=True)
  _check_lam(lam)
  check_bool('adaptive', adaptive)
  check_range('eta', eta, 0.0)
  check_range('eps', eps, 0.0)


def _value_at(hyperparameter, count: jax.Array, dtype) -> jax.Array:
  if isinstance(hyperparameter, str):
    hyperparameter = _LAM_SCHEDULES[hyperparameter]
  if callable(hyperparameter):
    hyperparameter = hyperparameter(count)
  return jnp.asarray(hyperparameter, dtype)


def _asam_scale(w: jax.Array, eta: jax.Array) -> Any:
  """ASAM's T (Kwon et al. 2021): ``|w| + η`` on weight tensors, 1 on biases. The ASAM
  code also scales PyTorch's norm scales (named "weight"); by ndim they are not."""
  return jnp.abs(wide(w)).astype(eta.dtype) + eta if jnp.ndim(w) >= 2 else 1


def _asam_direction(g, w, k, eta):
  """``d = T·g·k`` (module level: one compiled norm of it when called eagerly)."""
  return _asam_scale(w, eta) * (wide(g) * k)


def _sam_direction(g, w, k, eta):
  """``d = g·k`` (T = I)."""
  del w, eta
  return wide(g) * k


def _ascent_vector(grads, params, rho, lam, adaptive, eta, eps, dtype):
  """Returns e = ρ(1 − λ + λ/(‖T g‖ + ε)) T² g, with T = I unless adaptive.

  Computed as ``e = c·T·d`` with ``d = T·g·k`` and ``c = ρ(1 − λ)/k + ρλ/(‖d‖ + ε·k)``,
  where ``k = 2^−n`` for ``max|g| = m·2^n`` (``m`` in [0.5, 1)): multiplying by a power of
  two is exact and ``|g·k| < 1``, so neither ``d`` nor ``‖d‖`` under- or overflows
  however tiny or huge the gradient is. Dividing by ``max|g|`` instead would not do: XLA
  multiplies by its reciprocal, which is flushed to 0 above ``2^126`` in float32; for the
  same reason ``k`` is kept at or above the smallest normal number.
  """
  direction = _asam_direction if adaptive else _sam_direction
  largest = optax.tree.norm(grads, ord='inf').astype(dtype)  # exact in any dtype
  _, exponent = jnp.frexp(largest)
  k = jnp.ldexp(jnp.ones((), dtype), -jnp.minimum(exponent, jnp.finfo(dtype).maxexp - 2))
  eta = jnp.asarray(eta, dtype)
  weights = params if adaptive else grads  # T reads no params unless adaptive
  direction_norm = global_norm_of(direction, (grads, weights), (k, eta)).astype(dtype)
  coefficient = rho * (1 - lam) / k + rho * lam / (direction_norm + eps * k)
  # A zero or non-finite gradient (or T g = 0) gives e = 0, so the second pass runs at
  # params and never at a NaN point.
  usable = (
      jnp.isfinite(largest)
      & (largest > 0)
      & jnp.isfinite(direction_norm)
      & (direction_norm > 0)
      & jnp.isfinite(coefficient)
  )

  def leaf(g, w):
    t = _asam_scale(w, eta) if adaptive else 1
    return jnp.where(usable, coefficient * t * direction(g, w, k, eta), 0).astype(g.dtype)

  return jax.tree.map(leaf, grads, weights)


def sam_perturbation(
    rho: ScalarOrSchedule,
    lam: LamLike = 1.0,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    eps: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""The Unified SAM ascent vector: maps a gradient ``g`` to ``e`` with ``x + e`` perturbed.

  .. math::

    e_t = \rho_t \Big(1 - \lambda_t + \frac{\lambda_t}{\|T g_t\| + \varepsilon}\Big) T^2 g_t

  with one global L2 norm over the tree. ``T = I`` by default; with ``adaptive=True``
  (ASAM), ``T = |w| + \eta`` elementwise on every leaf of ``params`` with ``ndim >= 2``
  (weight matrices, kernels) and ``T = I`` on the others (biases, and also norm scales,
  which the ASAM code scales as PyTorch "weight"s). ``λ = 1`` gives SAM ``ρ g/‖g‖``
  (ASAM ``ρ T²g/‖Tg‖``), ``λ = 0`` gives USAM ``ρ g`` (adaptive: ``ρ T²g``, our
  λ-unified choice), ``ρ = 0`` gives ``e = 0``.

  Numerics: ``ρ``, ``λ`` and the norms are computed in float32, or in float64 when the
  gradients or the params are float64. The gradient is scaled by a
  power of two near its largest entry before any norm is taken, so the radius is exact
  (to rounding) for every finite gradient, tiny (``‖g‖ = 1e-20``) or huge (``1e30``).
  A zero gradient gives ``e = 0``; so does a gradient with a NaN or inf entry. Leaves
  keep their dtype.

  Args:
    rho: the radius ``ρ >= 0``, a finite number or an optax schedule of the count.
    lam: ``λ`` in ``[0, 1]``: a number, ``"1/t"`` or ``"1-1/t"`` (``t`` counts
      perturbations from 1, so ``"1/t"`` starts at SAM and ``"1-1/t"`` at USAM), or a
      callable of the count. Callables (``rho`` and ``lam``) receive the number of
      perturbations computed before this one, starting at 0, as optax schedules do:
      ``lam="1/t"`` is ``lam=lambda count: 1 / (count + 1)``.
    adaptive: ASAM scaling; needs ``params`` in ``update``.
    eta: the ASAM offset ``η >= 0``.
    eps: ``ε >= 0`` added to ``‖T g‖``. The default ``0`` is the papers' formula (a zero
      gradient needs no ``ε``: it gives ``e = 0``); ``1e-12`` reproduces the authors'
      PyTorch code, whose ``ε`` shrinks the radius of gradients with ``‖g‖ ≲ ε``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` whose ``update(grads, state,
    params)`` returns ``e`` (``optax.apply_updates(params, e)`` is the perturbed point).
    The state is :class:`SAMPerturbationState`, one int32 scalar.

  Raises:
    TypeError: a hyperparameter that is not a real number (a bool, None, a list, a
      non-scalar array), or ``adaptive`` not a bool.
    ValueError: a number out of range, NaN or inf, or an unknown ``lam`` string.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.sharpness import sam_perturbation
    >>> grads = {'w': jnp.array([3.0, 4.0])}  # ‖g‖ = 5
    >>> tx = sam_perturbation(rho=0.1, lam=1.0)
    >>> e, state = tx.update(grads, tx.init(grads))
    >>> print(jnp.round(e['w'], 6))  # 0.1 * g / 5
    [0.06 0.08]
    >>> tx = sam_perturbation(rho=0.1, lam=0.0)
    >>> print(jnp.round(tx.update(grads, tx.init(grads))[0]['w'], 6))  # 0.1 * g
    [0.3 0.4]

  References:
    Oikonomou & Loizou, `Sharpness-Aware Minimization: General Analysis and Improved
    Rates <https://arxiv.org/abs/2503.02225>`_, ICLR 2025.

    Kwon, Kim, Park & Choi, `ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  _check_hyperparameters(rho, lam, adaptive, eta, eps)

  def init_fn(params):
    del params
    return SAMPerturbationState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if adaptive and params is None:
      raise ValueError('sam_perturbation(adaptive=True) needs params: T = |w| + eta.')
    dtype = tree_wide_dtype((updates, params))
    value_at = lambda hyperparameter: _value_at(hyperparameter, state.count, dtype)
    e = _ascent_vector(
        updates,
        params,
        value_at(rho),
        value_at(lam),
        adaptive,
        value_at(eta),
        value_at(eps),
        dtype,
    )
    return e, SAMPerturbationState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_axis_name(axis_name, argument: str = 'axis_name') -> None:
  if axis_name is None:
    return
  names = axis_names(axis_name)
  if not names or not all(isinstance(name, str) for name in names):
    raise TypeError(
        f'{argument} must be a mapped axis name (a str), a non-empty tuple of them, or '
        f'None, got {type(axis_name).__name__} {axis_name!r}.'
    )


def _check_perturbation_axis_name(perturbation_axis_name, axis_name) -> None:
  if perturbation_axis_name is None:
    return
  _check_axis_name(perturbation_axis_name, 'perturbation_axis_name')
  outside = set(axis_names(perturbation_axis_name)) - set(
      () if axis_name is None else axis_names(axis_name))
  if outside:
    raise ValueError(
        f'perturbation_axis_name must be None or axes among axis_name={axis_name!r} '
        f'(the axes the SAM gradient is averaged over), got {perturbation_axis_name!r}: '
        f'{sorted(outside)} are not among them.')


def _check_local(grads, axis_name: AxisName) -> None:
  """Raises if shard_map's type checking shows ``grads`` are not per-device gradients."""
  for name in _tracked_axes(axis_name):
    if not all(name in varying_axes(g) for g in jax.tree.leaves(grads)):
      raise ValueError(
          f'unified_sam(axis_name={axis_name!r}) needs the LOCAL gradient of each '
          f'device, but these gradients are the same on all devices along {name!r}. '
          f'Under shard_map, the gradient with respect to replicated params is already '
          f'summed over {name!r}; take it at jax.lax.pcast(params, {name!r}, '
          f'to="varying") instead, or build the shard_map with check_vma=False.'
      )


def _tracked_axes(axis_name: AxisName) -> tuple[str, ...]:
  """The axes of ``axis_name`` whose varying values shard_map's type checking tracks."""
  # Under shard_map(check_vma=True) the device index varies over the axis; under pmap,
  # vmap or check_vma=False no type varies.
  return tuple(name for name in axis_names(axis_name)
               if name in varying_axes(jax.lax.axis_index(name)))


def _device_varying(tree, axis_name: AxisName):
  """``tree`` typed as varying over the tracked axes of ``axis_name``.

  A point shared by the devices of a group is invariant over the group's axes, and
  under shard_map's type checking the gradient with respect to it would be summed over
  them; at the same point typed as varying it is each device's own gradient.
  """
  return cast_varying(tree, _tracked_axes(axis_name))


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
    eps: float = 0.0,
    axis_name: AxisName = None,
    perturbation_axis_name: AxisName = None,
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

  ``update(grads, state, params, *, grad_fn, sam_step=None, **extra_args)``:

  - ``grad_fn(p)`` returns the gradient of the SAME batch at ``p`` (keep the same dropout
    key); it may return ``(grads, aux)``, and ``aux`` is discarded. Models with BatchNorm
    keep the statistics of the first, clean pass at ``params`` (the pass that gave
    ``grads``): ``grad_fn`` should not update them.
  - every other keyword, e.g. ``value=``, reaches the base optimizer unchanged, so a
    Polyak step (``optaxplus.polyak.momsps``) uses the loss at ``params`` with the SAM
    gradient.
  - ``every_k > 1``: only calls with ``count % every_k == 0`` are SAM steps (the first
    call is one); the others hand ``grads`` to the base and do not run ``grad_fn``
    (``lax.cond``). ``λ`` and ``ρ`` schedules count SAM steps only (``count //
    every_k``). ``optax.inject_hyperparams`` injects ``every_k`` too, which then always
    takes the ``lax.cond``; keep it static with ``static_args='every_k'``.
  - ``sam_step`` (a Python bool, or None): whether this call is a SAM step, fixed when
    the step is traced, with no ``lax.cond``: a loop in Python alternates two compiled
    steps, ``jax.jit(step, static_argnames='sam_step')`` called with ``sam_step=(i %
    every_k == 0)`` at its ``i``-th call (``optaxplus.training.make_train_step`` passes
    it on). It must follow the ``every_k`` schedule, which still numbers the SAM steps
    for ``ρ`` and ``λ``. On XLA:CPU, convolutions inside a ``lax.cond`` branch run many
    times slower (``benchmarks/RESULTS.md``), so there ``sam_step`` is what makes
    ``every_k`` pay; ``None`` (the default) decides from ``count``, inside any jitted
    loop.
  - ``axis_name`` (inside ``shard_map``, ``pmap`` or ``vmap``; a tuple of names for
    several axes): ``grads`` is the device's LOCAL gradient, each device perturbs with
    its own gradient (m-sharpness with ``m`` = the per-device batch) and the gradient
    given to the base is ``lax.pmean``-ed over ``axis_name`` (on SAM and non-SAM
    steps). Under ``jax.shard_map`` (``check_vma=True`` by default) the gradient with
    respect to replicated params is already summed over the axis: take the local one at
    ``jax.lax.pcast(params, axis_name, to='varying')`` (a ``ValueError`` says so
    otherwise), or use ``check_vma=False``. Extra args are not averaged: pass values
    equal on all devices (e.g. a ``pmean``-ed ``value``). With ``axis_name=None`` there
    are no collectives; under ``jit`` with sharded inputs (global view) the perturbation
    is global, ``m`` = the global batch.
  - ``perturbation_axis_name`` (axes among ``axis_name``): grouped m-sharpness. The
    ascent gradient is ``lax.pmean``-ed over these axes before the perturbation, so the
    devices along them share one ``e``, computed from their joint batch; each device
    then takes its gradient at ``params + e`` and the SAM gradient is averaged over
    ``axis_name`` as above. On a mesh ``('replica', 'group')``, ``axis_name=('replica',
    'group'), perturbation_axis_name='group'`` gives ``m`` = the batch of one group
    (google-research/sam's ``inner_group_size``); ``perturbation_axis_name ==
    axis_name`` is the global perturbation of ``jit``. ``None`` (the default): per
    device.

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
    eps: ``ε >= 0`` added to the gradient norm (see :func:`sam_perturbation`).
    axis_name: the mapped axis (a str, or a tuple of them) for per-device
      perturbations, or ``None``.
    perturbation_axis_name: axes among ``axis_name`` (a str or a tuple) over which the
      devices share one perturbation, or ``None`` (each device its own).
    every_k: a SAM step every ``every_k`` calls, a whole number ``>= 1``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with state
    :class:`UnifiedSAMState`.

  Raises:
    TypeError: ``base_optimizer`` is not an ``optax.GradientTransformation``; a
      hyperparameter is not a real number (a bool, None, a list, a non-scalar array),
      ``every_k`` is not whole, ``adaptive`` not a bool or ``axis_name`` or
      ``perturbation_axis_name`` not a str, tuple of str or None; from ``update``,
      ``sam_step`` not a Python bool or None.
    ValueError: a number out of range, NaN or inf, an unknown ``lam`` string, or
      ``perturbation_axis_name`` naming an axis not in ``axis_name``.

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
    Improving Generalization <https://arxiv.org/abs/2010.01412>`_, ICLR 2021 (m-sharpness,
    Section 4.1).
  """
  if not isinstance(base_optimizer, optax.GradientTransformation):
    raise TypeError(
        f'base_optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)), '
        f'got {type(base_optimizer).__name__} {base_optimizer!r}.'
    )
  _check_axis_name(axis_name)
  _check_perturbation_axis_name(perturbation_axis_name, axis_name)
  check_range('every_k', every_k, 1.0, integer=True)
  # Under optax.inject_hyperparams (in jit) every_k is a tracer: SAM steps are then chosen
  # by lax.cond, as for every_k > 1.
  every_k = jnp.asarray(every_k).astype(jnp.int32) if is_tracer(every_k) else int(every_k)
  perturbation = sam_perturbation(rho, lam, adaptive=adaptive, eta=eta, eps=eps)
  base_optimizer = optax.with_extra_args_support(base_optimizer)

  def init_fn(params):
    return UnifiedSAMState(
        count=jnp.zeros([], jnp.int32), base_state=base_optimizer.init(params)
    )

  def update_fn(updates, state, params=None, *, grad_fn=None, sam_step=None,
                **extra_args):
    if sam_step is not None and not isinstance(sam_step, bool):
      raise TypeError(
          'sam_step must be True, False or None: a Python bool fixed when the step is '
          f'traced (jax.jit(..., static_argnames="sam_step")), got {sam_step!r}.')
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
      ascent = (updates if perturbation_axis_name is None
                else jax.lax.pmean(updates, perturbation_axis_name))
      e, _ = perturbation.update(ascent, SAMPerturbationState(count=sam_count), params)
      point = optax.apply_updates(params, e)
      if perturbation_axis_name is not None:
        point = _device_varying(point, axis_name)
      return _gradient_from(grad_fn, point, updates)

    if sam_step is not None:
      grads = sam_gradient() if sam_step else updates
    elif isinstance(every_k, int) and every_k == 1:
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
    base_optimizer: optax.GradientTransformation,
    rho: ScalarOrSchedule = 0.05,
    *,
    eps: float = 0.0,
    axis_name: AxisName = None,
    perturbation_axis_name: AxisName = None,
    every_k: int = 1,
) -> optax.GradientTransformationExtraArgs:
  """SAM: :func:`unified_sam` with ``lam=1``, ``e = ρ g/(‖g‖ + ε)``.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the radius ``ρ >= 0``, a number or an optax schedule of the SAM-step count.
    eps: ``ε >= 0`` added to ``‖g‖`` (see :func:`sam_perturbation`).
    axis_name: the mapped axis for per-device perturbations, or ``None``.
    perturbation_axis_name: axes among ``axis_name`` sharing one perturbation (grouped
      m-sharpness, see :func:`unified_sam`), or ``None``.
    every_k: a SAM step every ``every_k`` calls, a whole number ``>= 1``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with state
    :class:`UnifiedSAMState`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import sam
    >>> tx = sam(optax.sgd(0.1, momentum=0.9), rho=0.05)

  References:
    Foret, Kleiner, Mobahi & Neyshabur, `Sharpness-Aware Minimization for Efficiently
    Improving Generalization <https://arxiv.org/abs/2010.01412>`_, ICLR 2021.
  """
  return unified_sam(
      base_optimizer, rho, lam=1.0, eps=eps, axis_name=axis_name,
      perturbation_axis_name=perturbation_axis_name, every_k=every_k
  )


def usam(
    base_optimizer: optax.GradientTransformation,
    rho: ScalarOrSchedule = 0.05,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    axis_name: AxisName = None,
    perturbation_axis_name: AxisName = None,
    every_k: int = 1,
) -> optax.GradientTransformationExtraArgs:
  """USAM: :func:`unified_sam` with ``lam=0``, the unnormalized ``e = ρ g``.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the step ``ρ >= 0``, a number or an optax schedule of the SAM-step count.
    adaptive: ``e = ρ T²g`` with the ASAM scaling ``T`` (see :func:`sam_perturbation`).
    eta: the ASAM offset ``η >= 0``.
    axis_name: the mapped axis for per-device perturbations, or ``None``.
    perturbation_axis_name: axes among ``axis_name`` sharing one perturbation (grouped
      m-sharpness, see :func:`unified_sam`), or ``None``.
    every_k: a SAM step every ``every_k`` calls, a whole number ``>= 1``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with state
    :class:`UnifiedSAMState`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import usam
    >>> tx = usam(optax.sgd(0.1, momentum=0.9), rho=0.05)

  References:
    Andriushchenko & Flammarion, `Towards Understanding Sharpness-Aware Minimization
    <https://arxiv.org/abs/2206.06232>`_, ICML 2022.
  """
  return unified_sam(
      base_optimizer,
      rho,
      lam=0.0,
      adaptive=adaptive,
      eta=eta,
      axis_name=axis_name,
      perturbation_axis_name=perturbation_axis_name,
      every_k=every_k,
  )


def asam(
    base_optimizer: optax.GradientTransformation,
    rho: ScalarOrSchedule = 0.5,
    eta: float = 0.01,
    *,
    eps: float = 0.0,
    axis_name: AxisName = None,
    perturbation_axis_name: AxisName = None,
    every_k: int = 1,
) -> optax.GradientTransformationExtraArgs:
  """ASAM: :func:`unified_sam` with ``lam=1, adaptive=True``, ``e = ρ T²g/(‖Tg‖ + ε)``.

  ``T = |w| + η`` on leaves with ``ndim >= 2``, ``T = I`` on the others.

  Args:
    base_optimizer: the optimizer that receives the SAM gradient.
    rho: the radius ``ρ >= 0``; ASAM's is larger than SAM's.
    eta: the offset ``η >= 0``.
    eps: ``ε >= 0`` added to ``‖Tg‖`` (see :func:`sam_perturbation`).
    axis_name: the mapped axis for per-device perturbations, or ``None``.
    perturbation_axis_name: axes among ``axis_name`` sharing one perturbation (grouped
      m-sharpness, see :func:`unified_sam`), or ``None``.
    every_k: a SAM step every ``every_k`` calls, a whole number ``>= 1``.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` with state
    :class:`UnifiedSAMState`.

  Examples:
    >>> import optax
    >>> from optaxplus.sharpness import asam
    >>> tx = asam(optax.sgd(0.1, momentum=0.9), rho=0.5, eta=0.01)

  References:
    Kwon, Kim, Park & Choi, `ASAM: Adaptive Sharpness-Aware Minimization for
    Scale-Invariant Learning of Deep Neural Networks <https://arxiv.org/abs/2102.11600>`_,
    ICML 2021.
  """
  return unified_sam(
      base_optimizer,
      rho,
      lam=1.0,
      adaptive=True,
      eta=eta,
      eps=eps,
      axis_name=axis_name,
      perturbation_axis_name=perturbation_axis_name,
      every_k=every_k,
  )
