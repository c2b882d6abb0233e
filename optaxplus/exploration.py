r"""The exploration adaptor E and ALTO (E inside LAMB), as optax transformations.

E rewrites the gradient with a moving average of gradient differences so that the
optimizer it feeds keeps moving along low-loss valleys; ALTO is E inside LAMB, for
large-batch training.

Names. Arguments follow optax: E's decay is ``explore_b1`` in every alias (``esgd``,
``eadam``, ``eadamw``, ``alto``), so that it never collides with the base optimizer's
``b1``; :func:`explore` alone, which has no other decay, calls it ``b1``. ALTO's Adam
decays are ``b1``, ``b2``, as in ``optax.lamb``. Against the paper and the authors'
reference code (github.com/zhaotong94/E: ``E.py`` and ``ALTO.py``):

=======================  =====  =====================  ================================
optaxplus                paper  ``E(base, ...)``       ``create_ALTO_optimizer(...)``
=======================  =====  =====================  ================================
``alpha``                α      ``alpha``              ``alpha`` (``alp`` in ``ALTO``)
``explore_b1`` (``b1``)  β1     ``beta``               ``betas[0]`` (``beta1``)
``b1`` of ``alto``       β2     —                      ``betas[1]`` (``beta2``)
``b2`` of ``alto``       β3     —                      ``betas[2]`` (``beta3``)
``eps`` of ``alto``      ε      —                      ``eps``
``weight_decay``         λ      the base optimizer's   ``weight_decay``
``learning_rate``        η      the base optimizer's   ``lr``
``clip_norm``            —      —                      ``max_norm=1.0``, fixed
``mask``                 —      —                      ``exclude_layers`` (inverted)
=======================  =====  =====================  ================================

Defaults. Every factory defaults to the paper's large-batch preset ``alpha=-5,
explore_b1=0.99`` (batches of 1K and more; the reference ALTO factory's default). The
authors' small-batch preset (batches under 1K) is ``alpha=0.5, explore_b1=0.01``.
``alpha=0`` gives the base optimizer.

References:
  Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along Valleys
  <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025 (reference code
  github.com/zhaotong94/E).

  You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
  <https://arxiv.org/abs/1904.00962>`_, ICLR 2020 (LAMB).
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optaxplus._checks import check_adam
from optaxplus._checks import check_bool
from optaxplus._checks import check_mask
from optaxplus._checks import check_range
from optaxplus._checks import is_tracer
from optaxplus._wide import narrow
from optaxplus._wide import tree_wide_dtype
from optaxplus._wide import wide
from optaxplus.lamb import clip_by_global_norm
from optaxplus.lamb import scale_by_lamb

_Scalar = Union[float, jax.Array]
_Mask = Optional[Union[Any, Callable[[optax.Params], Any]]]

# The paper's large-batch preset, the default of every factory here.
_ALPHA = -5.0
_EXPLORE_B1 = 0.99


def _checked_explore(alpha: Any, b1: Any, b1_name: str) -> tuple[Any, Any]:
  """Checks E's hyperparameters; returns them as Python floats (tracers unchanged)."""
  check_range(b1_name, b1, 0.0, 1.0, high_open=True)
  if is_tracer(b1):
    check_range("alpha", alpha)
  else:
    b1 = float(b1)
    # Beyond 1/(1 - b1) the current gradient's weight 1 + alpha (1 - b1) is <= 0
    # (alpha < 0), or the previous average enters with weight <= -1 (alpha > 0).
    # 12 significant digits: 1/(1 - 0.99) prints as 100.0, not 99.99999999999991.
    bound = float(f"{1 / (1 - b1):.12g}")
    check_range(f"alpha (with {b1_name}={b1:.12g})", alpha, -bound, bound,
                low_open=True, high_open=True)
  return (alpha if is_tracer(alpha) else float(alpha)), b1


def _check_learning_rate(learning_rate: Any) -> None:
  check_range("learning_rate", learning_rate, 0.0, low_open=True, allow_schedule=True)


def _weights(weight_x: Any, weight_y: Any, dtype) -> tuple[Any, jax.Array, jax.Array]:
  """``(s, weight_x / s, weight_y / s)`` in ``dtype`` for :func:`_combine`.

  ``s`` is the smallest power of two >= ``|weight_x| + |weight_y|`` (at least 1): a NumPy
  scalar for numbers, so that XLA drops a multiplication by 1, traced otherwise.
  """
  xp = jnp if is_tracer(weight_x) or is_tracer(weight_y) else np
  weight_x, weight_y = xp.asarray(weight_x, dtype), xp.asarray(weight_y, dtype)
  mantissa, exponent = xp.frexp(xp.maximum(xp.abs(weight_x) + xp.abs(weight_y), 1))
  scale = xp.ldexp(xp.ones_like(mantissa), exponent - (mantissa == 0.5))
  # Opaque to XLA, which would otherwise rewrite w x + w y (b1 = 0.5) as w (x + y).
  return scale, *jax.lax.optimization_barrier(
      (jnp.asarray(weight_x / scale), jnp.asarray(weight_y / scale)))


def _combine(x: jax.Array, y: jax.Array, weights) -> jax.Array:
  """``weight_x x + weight_y y`` in float32 or wider, finite whenever the exact value fits.

  Computed as ``s ((weight_x / s) x + (weight_y / s) y)`` with the ``weights`` of
  :func:`_weights`: neither product nor their sum can overflow, and scaling by a power of
  two is exact, so the result equals the plain formula's except that, e.g., float32
  ``x = y = 2e38`` with weights ``1.5, -0.5`` gives 2e38, not inf.
  """
  scale, weight_x, weight_y = weights
  return scale * (weight_x * wide(x) + weight_y * wide(y))


def _false_after(tree: Any) -> jax.Array:
  """A boolean scalar that is always False, computed from one entry of each float leaf.

  Whatever reads it runs after the computations of those leaves: an ordering that XLA
  keeps through copy insertion, where XLA:CPU drops ``optimization_barrier`` before.
  The test counts the entries' set bits (more than their width is impossible), which no
  compiler pass folds to a constant.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(_false_after({'a': jnp.full(3, jnp.nan), 'n': jnp.int32(7)}))
    False
  """
  counts = []
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and leaf.size:
      entry = jnp.real(jax.lax.slice(leaf.reshape(-1), (0,), (1,)))
      width = 8 * entry.dtype.itemsize
      bits = jax.lax.bitcast_convert_type(entry, jnp.dtype(f'uint{width}'))
      counts.append(jax.lax.population_count(bits).astype(jnp.int32) - width)
  if not counts:
    return jnp.zeros((), bool)
  return jnp.max(jnp.concatenate(counts)) > 0


class ExploreState(NamedTuple):
  """State of `explore`: the moving average of the raw gradients."""

  mu: optax.Updates  # m_{k-1}, one tree like params, in the params' dtype.


def _explore(alpha: Any, b1: Any, b1_name: str,
             base: Optional[optax.GradientTransformation] = None
             ) -> optax.GradientTransformationExtraArgs:
  """:func:`explore`, or ``chain(explore, base)`` when ``base`` is given.

  Error messages name E's decay ``b1_name``. With ``base``, the state is the chain's,
  ``(ExploreState, base_state)``, and for ``b1 < 0.5`` the new average is computed only
  after ``base``'s new state (see below).
  """
  alpha, b1 = _checked_explore(alpha, b1, b1_name)
  # Since g - m_k = b1 (g - m_{k-1}), also ĝ = g + (alpha (1 - b1) / b1)(g - m_k).
  # Reading the new average lets XLA overwrite m in place: when the consumers of ĝ
  # read m_{k-1}, XLA copies m first unless each of them provably runs before m_k is
  # written (one param-sized copy per step, 3x slower E + SGD on CPU). Dividing by b1
  # amplifies m's rounding by 1/b1, so this form is used for b1 >= 0.5 only, which
  # includes the large-batch preset; below, m_k waits for base's new state.
  reads_new_average = not is_tracer(b1) and b1 >= 0.5
  if base is not None:
    base = optax.with_extra_args_support(base)

  def init_fn(params: optax.Params):
    state = ExploreState(mu=optax.tree.zeros_like(params))
    return state if base is None else (state, base.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    explore_state, base_state = (state, None) if base is None else state
    dtype = tree_wide_dtype(updates)

    def scalar(value):  # optax.inject_hyperparams traces them in the params' dtype
      return jnp.asarray(value, dtype) if is_tracer(value) else value

    decay = scalar(b1)
    coefficient = scalar(alpha) * (1 - decay)
    average_weights = _weights(decay, 1 - decay, dtype)

    def averaged(g, m, keep_old=False):
      m_new = _combine(m, g, average_weights)
      return jnp.where(jnp.isfinite(g) & ~keep_old, m_new, m).astype(m.dtype)

    mu = explore_state.mu
    if reads_new_average:
      mu = jax.tree.map(averaged, updates, mu)
      coefficient = coefficient / decay
    explore_weights = _weights(1 + coefficient, -coefficient, dtype)

    def explored(g, m):
      g_hat = _combine(g, m, explore_weights)
      return narrow(jnp.where(jnp.isfinite(g), g_hat, 0), g.dtype)

    output = jax.tree.map(explored, updates, mu)
    if base is not None:
      output, base_state = base.update(output, base_state, params, **extra_args)
    if not reads_new_average:
      # m_{k-1} is read by base's new state (moments, momentum); m_k, which XLA writes
      # into m's donated buffer, reads one entry of each new state array, so that it
      # provably comes after those reads and m needs no copy.
      never = _false_after(base_state)
      mu = jax.tree.map(lambda g, m: averaged(g, m, never), updates, mu)
    explore_state = ExploreState(mu=mu)
    return output, (explore_state if base is None else (explore_state, base_state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def explore(alpha: _Scalar = _ALPHA, b1: _Scalar = _EXPLORE_B1
            ) -> optax.GradientTransformationExtraArgs:
  r"""The exploration adaptor E: adds a moving average of gradient differences.

  The reference recursion keeps the previous gradient and an average of
  differences,

  .. math::
    a_k = \beta_1 a_{k-1} + (1 - \beta_1)(g_k - g_{k-1}), \qquad
    \hat g_k = g_k + \alpha a_k, \qquad g_0 = a_0 = 0.

  Since :math:`a_k = m_k - m_{k-1}` for the moving average
  :math:`m_k = \beta_1 m_{k-1} + (1 - \beta_1) g_k`, :math:`m_0 = 0`, this
  transformation keeps ``m`` only (one tree like params, not two) and outputs

  .. math::
    \hat g_k = (1 + \alpha(1 - \beta_1))\, g_k - \alpha(1 - \beta_1)\, m_{k-1},

  so the first step is :math:`\hat g_1 = (1 + \alpha(1 - \beta_1))\, g_1` and
  ``alpha = 0`` returns the gradient unchanged. Chain it before any optimizer;
  inside ``optax.MultiSteps`` it sees one accumulated gradient per step.

  Presets from the paper: large batches (1K and more) ``alpha=-5, b1=0.99``, the
  defaults; small batches ``alpha=0.5, b1=0.01``.

  Precision: the state has the params' dtype and the arithmetic runs in float32
  or wider (float64 for float64 params). A bfloat16 state is enough because an
  error in ``m`` reaches :math:`\hat g` multiplied by
  :math:`|\alpha|(1-\beta_1) < 1`, or by :math:`|\alpha|(1-\beta_1)/\beta_1 < 2`
  for :math:`\beta_1 \ge 0.5`, where the code reads :math:`m_k` instead of
  :math:`m_{k-1}` (0.05 at the large-batch preset).

  Overflow: a finite gradient never becomes infinite unless :math:`\hat g` itself
  is too large for the dtype. The average is the convex combination
  :math:`\beta_1 m + (1 - \beta_1) g`, and :math:`\hat g = a g - c m` is computed
  as :math:`s((a/s) g - (c/s) m)` with :math:`s` the smallest power of two
  :math:`\ge |a| + |c|` (exact scaling), so a float32 gradient of 3e38 gives
  :math:`\hat g_1 = 0.95 \cdot 3\mathrm{e}38` at the defaults.

  Non-finite gradients: a NaN or infinite gradient entry leaves its entry of
  ``m`` unchanged and outputs 0 there, so one bad batch neither moves the
  parameters through E nor poisons later steps. Wrap the whole optimizer in
  ``optax.apply_if_finite`` to skip such steps entirely.

  Args:
    alpha: the exploration coefficient; ``|alpha| < 1 / (1 - b1)``.
    b1: decay rate of the gradient-difference average, in ``[0, 1)`` (the
      aliases call it ``explore_b1``).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; extra arguments of
    ``update`` (``value=`` etc.) are accepted and ignored.

  Raises:
    TypeError: for a hyperparameter that is not a real scalar (a bool, None, a
      string, a sequence, a non-scalar array).
    ValueError: for NaN, infinity, ``b1`` outside ``[0, 1)`` or
      ``|alpha| >= 1 / (1 - b1)``. Python numbers and concrete arrays are
      checked; tracers (``optax.inject_hyperparams`` under ``jit``) are not.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optaxplus.exploration import explore
    >>> opt = optax.chain(explore(alpha=-5.0, b1=0.99), optax.sgd(0.1))
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
    >>> updates["w"]  # -0.1 * (1 - 5 * 0.01) * g_1
    Array([-0.095, -0.095], dtype=float32)

  References:
    Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along
    Valleys <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025.
  """
  return _explore(alpha, b1, "b1")


def esgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: Optional[_Scalar] = None,
    nesterov: bool = False,
    alpha: _Scalar = _ALPHA,
    explore_b1: _Scalar = _EXPLORE_B1,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD (optionally with momentum) on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, explore_b1), optax.sgd(learning_rate, momentum,
  nesterov))``: :math:`w \leftarrow w - \eta\, \hat g_k` without momentum.

  E's defaults are the large-batch preset ``alpha=-5, explore_b1=0.99``; for
  batches under 1K the authors use ``alpha=0.5, explore_b1=0.01``. ``alpha=0``
  is ``optax.sgd``.

  Args:
    learning_rate: step size (> 0) or an optax schedule.
    momentum: heavy-ball decay in ``[0, 1)``, or None for plain SGD.
    nesterov: use Nesterov momentum.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)`` (``beta`` in the reference code).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: for a hyperparameter of the wrong type (e.g. a bool where a
      number is needed, or a ``nesterov`` that is not a bool).
    ValueError: for a hyperparameter out of its range, NaN or infinite.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optaxplus.exploration import esgd
    >>> opt = esgd(0.1, momentum=0.9)
    >>> params = jnp.array([1.0, 2.0])
    >>> state = opt.init(params)
    >>> for _ in range(3):
    ...   grads = jax.grad(lambda p: jnp.sum(p ** 2))(params)
    ...   updates, state = opt.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params.shape
    (2,)

  References:
    Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along
    Valleys <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025.
  """
  _check_learning_rate(learning_rate)
  if momentum is not None:
    check_range("momentum", momentum, 0.0, 1.0, high_open=True)
  # Also catches esgd(lr, momentum, alpha, explore_b1), which would pass alpha as
  # nesterov.
  check_bool("nesterov", nesterov)
  return _explore(alpha, explore_b1, "explore_b1",
                  optax.sgd(learning_rate, momentum, nesterov))


def eadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: _Scalar = 0.9,
    b2: _Scalar = 0.999,
    eps: _Scalar = 1e-8,
    alpha: _Scalar = _ALPHA,
    explore_b1: _Scalar = _EXPLORE_B1,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, explore_b1), optax.adam(learning_rate, b1, b2, eps))``:
  Adam's moments average :math:`\hat g_k`, not :math:`g_k`. ``b1, b2`` are
  Adam's, as in ``optax.adam``; ``alpha, explore_b1`` are E's.

  E's defaults are the large-batch preset ``alpha=-5, explore_b1=0.99``; for
  batches under 1K the authors use ``alpha=0.5, explore_b1=0.01``. ``alpha=0``
  is ``optax.adam``.

  Args:
    learning_rate: step size (> 0) or an optax schedule.
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: Adam's denominator constant; > 0.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)`` (``beta`` in the reference code).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: for a hyperparameter that is not a real scalar.
    ValueError: for a hyperparameter out of its range, NaN or infinite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.exploration import eadam
    >>> opt = eadam(1e-3)
    >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    >>> updates, _ = opt.update(params, opt.init(params), params)
    >>> print(f"{updates['w'][0, 0]:.6f}")  # Adam's first step: -lr * sign(g)
    -0.001000

  References:
    Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along
    Valleys <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025.
  """
  _check_learning_rate(learning_rate)
  check_adam(b1, b2, eps)
  return _explore(alpha, explore_b1, "explore_b1",
                  optax.adam(learning_rate, b1, b2, eps))


def eadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: _Scalar = 0.9,
    b2: _Scalar = 0.999,
    eps: _Scalar = 1e-8,
    weight_decay: _Scalar = 1e-4,
    mask: _Mask = None,
    alpha: _Scalar = _ALPHA,
    explore_b1: _Scalar = _EXPLORE_B1,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, explore_b1), optax.adamw(learning_rate, b1, b2, eps,
  weight_decay=weight_decay, mask=mask))``. The decay is decoupled, so E sees
  the loss gradient only.

  E's defaults are the large-batch preset ``alpha=-5, explore_b1=0.99``; for
  batches under 1K the authors use ``alpha=0.5, explore_b1=0.01``. ``alpha=0``
  is ``optax.adamw``.

  Args:
    learning_rate: step size (> 0) or an optax schedule.
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: Adam's denominator constant; > 0.
    weight_decay: decoupled decay coefficient; >= 0.
    mask: which tensors decay, as in ``optax.adamw``: a pytree of bools like
      params (a single bool for all), a callable returning one, or None (all).
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)`` (``beta`` in the reference code).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: for a hyperparameter of the wrong type (a number that is not a
      real scalar, a mask with a leaf that is not a bool).
    ValueError: for a hyperparameter out of its range, NaN or infinite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.exploration import eadamw
    >>> opt = eadamw(1e-3, weight_decay=0.1)
    >>> params = {"w": jnp.ones((2, 3))}
    >>> updates, _ = opt.update({"w": jnp.zeros((2, 3))}, opt.init(params), params)
    >>> updates["w"][0, 0]  # zero gradient: the decay alone, -lr * wd * w
    Array(-0.0001, dtype=float32)

  References:
    Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along
    Valleys <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025.
  """
  _check_learning_rate(learning_rate)
  check_adam(b1, b2, eps)
  check_range("weight_decay", weight_decay, 0.0)
  check_mask(mask)
  return _explore(alpha, explore_b1, "explore_b1",
                  optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay,
                              mask=mask))


def alto(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: _Scalar = 0.9,
    b2: _Scalar = 0.99,
    eps: _Scalar = 1e-6,
    weight_decay: _Scalar = 1e-4,
    mask: _Mask = None,
    clip_norm: _Scalar = 1.0,
    alpha: _Scalar = _ALPHA,
    explore_b1: _Scalar = _EXPLORE_B1,
) -> optax.GradientTransformationExtraArgs:
  r"""ALTO: E inside LAMB, in the order of the reference code.

  For a step with gradient :math:`g` (:math:`\beta_1` is ``explore_b1``,
  :math:`\beta_2, \beta_3` are ``b1, b2``, the paper's names):

  1. clip to global norm: :math:`g \leftarrow g \min(1, c / \lVert g \rVert)`;
  2. E: :math:`\hat g = (1 + \alpha(1 - \beta_1)) g - \alpha(1 - \beta_1) m`,
     :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`;
  3. Adam moments of :math:`\hat g` with :math:`\beta_2, \beta_3`, bias
     corrected: :math:`r = \hat\mu / (\sqrt{\hat\nu} + \epsilon)`;
  4. decayed tensors (``mask``): :math:`r \leftarrow r + \lambda w`, then
     :math:`w \leftarrow w - \eta \frac{\lVert w \rVert}{\lVert r \rVert} r`
     (ratio 1 if either norm is 0);
  5. other tensors (biases, norm scales): :math:`w \leftarrow w - \eta r`,
     with no trust ratio.

  It is ``chain(clip_by_global_norm(clip_norm), explore(alpha, explore_b1),
  scale_by_lamb(b1, b2, eps, weight_decay, mask),
  optax.scale_by_learning_rate(learning_rate))`` with the blocks of
  :mod:`optaxplus.lamb`, which compute ``optax.scale_by_adam``,
  ``optax.add_decayed_weights`` and the masked trust ratio in fewer passes over
  memory; the state nests as ``(clip, (explore, ((adam, decay, mask), learning
  rate)))``. Defaults are the reference
  factory's (``betas=(0.99, 0.9, 0.99), alpha=-5, eps=1e-6,
  weight_decay=1e-4``), i.e. E's large-batch preset ``alpha=-5,
  explore_b1=0.99``; ``b1, b2`` are named and ordered as in ``optax.lamb``,
  but default to the reference's 0.9, 0.99. Arguments after ``learning_rate``
  are keyword-only.

  One deliberate difference: the reference couples the trust ratio to a
  nonzero weight decay, so with ``weight_decay=0`` it applies none anywhere.
  Here ``mask`` alone selects the trust-ratio tensors, so a decay schedule that
  reaches 0 does not switch LAMB off. For the reference's ``weight_decay=0``
  behaviour pass ``mask=False``.

  Args:
    learning_rate: step size (> 0) or an optax schedule.
    b1: first-moment decay of the Adam part, in ``[0, 1)`` (``betas[1]`` in
      the reference code).
    b2: second-moment decay of the Adam part, in ``[0, 1)`` (``betas[2]``).
    eps: denominator constant; > 0.
    weight_decay: decoupled decay on the masked tensors; >= 0.
    mask: pytree of bools like params (a single bool for all tensors), or a
      callable returning one, selecting the tensors that decay and get a trust
      ratio. None: tensors with ``ndim >= 2``. Under
      ``optax.inject_hyperparams`` pass a callable mask in ``static_args``.
    clip_norm: the global-norm clipping threshold; > 0.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)`` (``betas[0]`` in the reference
      code).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: for a hyperparameter of the wrong type (a number that is not a
      real scalar, a mask with a leaf that is not a bool).
    ValueError: for a hyperparameter out of its range, NaN or infinite.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from optaxplus.exploration import alto
    >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    >>> opt = alto(learning_rate=1e-2)
    >>> state = opt.init(params)
    >>> loss = lambda p: jnp.sum((jnp.ones(3) @ p["kernel"] + p["bias"]) ** 2)
    >>> for _ in range(5):
    ...   updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss(params) < 18.0)
    True

  References:
    Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along
    Valleys <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025.

    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
  """
  _check_learning_rate(learning_rate)
  check_adam(b1, b2, eps)
  check_range("weight_decay", weight_decay, 0.0)
  check_mask(mask)
  check_range("clip_norm", clip_norm, 0.0, low_open=True)
  lamb = optax.chain(scale_by_lamb(b1, b2, eps, weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))
  return optax.chain(clip_by_global_norm(clip_norm),
                     _explore(alpha, explore_b1, "explore_b1", lamb))
