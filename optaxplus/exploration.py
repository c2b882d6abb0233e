"""The exploration adaptor E and ALTO (E inside LAMB), as optax transformations.

E rewrites the gradient with a moving average of gradient differences so that the
optimizer it feeds keeps moving along low-loss valleys; ALTO is E inside LAMB, for
large-batch training.

References:
  Zhao, Li, Zhou, Tan, Jia, `Exploring Landscapes for Better Minima along Valleys
  <https://arxiv.org/abs/2510.27153>`_, NeurIPS 2025 (reference code
  github.com/zhaotong94/E).

  You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
  <https://arxiv.org/abs/1904.00962>`_, ICLR 2020 (LAMB).
"""

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_range
from optaxplus._wide import global_norm
from optaxplus._wide import wide_dtype

_Mask = Optional[Union[Any, Callable[[optax.Params], Any]]]


def _check_explore(alpha: Any, b1: Any, b1_name: str) -> None:
  check_range(b1_name, b1, 0.0, 1.0, high_open=True)
  # Beyond 1/(1 - b1) the current gradient's weight 1 + alpha (1 - b1) is <= 0
  # (alpha < 0), or the previous average enters with weight <= -1 (alpha > 0).
  # 12 significant digits: 1/(1 - 0.99) prints as 100.0, not 99.99999999999991.
  bound = float(f"{1 / (1 - b1):.12g}") if isinstance(b1, numbers.Real) else float("inf")
  name = f"alpha (with {b1_name}={b1})" if isinstance(b1, numbers.Real) else "alpha"
  check_range(name, alpha, -bound, bound, low_open=True, high_open=True)


def _check_adam(b1: Any, b2: Any, eps: Any, b1_name: str, b2_name: str) -> None:
  check_range(b1_name, b1, 0.0, 1.0, high_open=True)
  check_range(b2_name, b2, 0.0, 1.0, high_open=True)
  # eps = 0 turns a coordinate whose gradient has always been 0 into 0/0.
  check_range("eps", eps, 0.0, low_open=True)


class ExploreState(NamedTuple):
  """State of `explore`: the moving average of the raw gradients."""

  mu: optax.Updates  # m_{k-1}, one tree like params, in the params' dtype.


def explore(
    alpha: Union[float, jax.Array] = -5.0,
    b1: Union[float, jax.Array] = 0.99,
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
  or wider. A bfloat16 state is enough because an error in ``m`` reaches
  :math:`\hat g` multiplied by :math:`|\alpha|(1-\beta_1) < 1`, or by
  :math:`|\alpha|(1-\beta_1)/\beta_1 < 2` for :math:`\beta_1 \ge 0.5`, where
  the code reads :math:`m_k` instead of :math:`m_{k-1}` (0.05 at the
  large-batch preset).

  Non-finite gradients: a NaN or infinite gradient entry leaves its entry of
  ``m`` unchanged and outputs 0 there, so one bad batch neither moves the
  parameters through E nor poisons later steps. Wrap the whole optimizer in
  ``optax.apply_if_finite`` to skip such steps entirely.

  Args:
    alpha: the exploration coefficient; ``|alpha| < 1 / (1 - b1)``.
    b1: decay rate of the gradient-difference average, in ``[0, 1)``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; extra arguments of
    ``update`` (``value=`` etc.) are accepted and ignored.

  Raises:
    ValueError: for ``b1`` outside ``[0, 1)`` or ``|alpha| >= 1 / (1 - b1)``
      (checked for Python numbers; arrays, e.g. from
      ``optax.inject_hyperparams``, are not checked).

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
  _check_explore(alpha, b1, "b1")

  def init_fn(params: optax.Params) -> ExploreState:
    return ExploreState(mu=optax.tree.zeros_like(params))

  # Since g - m_k = b1 (g - m_{k-1}), also ĝ = g + (alpha (1 - b1) / b1)(g - m_k).
  # Reading the new average lets XLA overwrite m in place: when the consumers of ĝ
  # read m_{k-1}, XLA first copies m (one param-sized copy per step, 3x slower
  # E + SGD on CPU). Dividing by b1 amplifies m's rounding by 1/b1, so this form
  # is used for b1 >= 0.5 only, which includes the large-batch preset.
  reads_new_average = isinstance(b1, numbers.Real) and b1 >= 0.5

  def explored(g: jax.Array, m: jax.Array, coefficient) -> jax.Array:
    dtype = wide_dtype(g, m)
    g_c = g.astype(dtype)
    g_hat = g_c + coefficient * (g_c - m.astype(dtype))
    return jnp.where(jnp.isfinite(g_c), g_hat, 0).astype(g.dtype)

  def averaged(g: jax.Array, m: jax.Array) -> jax.Array:
    dtype = wide_dtype(g, m)
    g_c, m_c = g.astype(dtype), m.astype(dtype)
    m_new = m_c + (1 - b1) * (g_c - m_c)
    return jnp.where(jnp.isfinite(g_c), m_new, m_c).astype(m.dtype)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = jax.tree.map(averaged, updates, state.mu)
    if reads_new_average:
      coefficient, average = alpha * (1 - b1) / b1, mu
    else:
      coefficient, average = alpha * (1 - b1), state.mu
    new_updates = jax.tree.map(
        lambda g, m: explored(g, m, coefficient), updates, average)
    return new_updates, ExploreState(mu=mu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def clip_by_global_norm(
    max_norm: Union[float, jax.Array],
) -> optax.GradientTransformationExtraArgs:
  r"""Clips updates to a global L2 norm, with the norm computed in float32 or wider.

  .. math::
    u \leftarrow u \cdot \min\left(1, \frac{c}{\lVert u \rVert}\right).

  Same maths as ``optax.clip_by_global_norm``, whose squares and sums stay in the
  leaf dtype (3 significant digits for bfloat16); the reference ALTO uses
  ``torch.nn.utils.clip_grad_norm_``, which adds 1e-6 to the norm (a 1e-6
  relative difference, omitted). A non-finite norm makes every entry non-finite,
  so in :func:`alto` one NaN anywhere makes :func:`explore` zero the whole step's
  gradient, not only the bad leaf's.

  Args:
    max_norm: the largest global norm ``c`` let through; > 0.

  Returns:
    A stateless :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for ``max_norm <= 0`` (Python numbers only).

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.exploration import clip_by_global_norm
    >>> clip = clip_by_global_norm(1.0)
    >>> clip.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, ())[0]
    {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}

  References:
    Pascanu, Mikolov, Bengio, `On the difficulty of training recurrent neural
    networks <https://arxiv.org/abs/1211.5063>`_, ICML 2013.
  """
  check_range("max_norm", max_norm, 0.0, low_open=True)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    norm = global_norm(updates)
    # `norm <= max_norm` is False for a NaN norm, so NaN spreads to every leaf.
    scale = jnp.where(norm <= max_norm, 1.0, max_norm / norm)
    clipped = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
    return clipped, state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def scale_by_trust_ratio() -> optax.GradientTransformationExtraArgs:
  r"""Scales each tensor's update by the LAMB trust ratio, norms in float32 or wider.

  .. math::
    u \leftarrow \frac{\lVert w \rVert}{\lVert u \rVert}\, u
    \quad (\text{ratio } 1 \text{ if either norm is } 0).

  Same maths as ``optax.scale_by_trust_ratio()`` with its defaults, computing
  each norm once (optax's ``safe_norm`` reads the tensor twice) and in float32
  for low-precision params. Wrap it in ``optax.masked`` to adapt only some
  tensors, as :func:`alto` does.

  Returns:
    A stateless :class:`optax.GradientTransformationExtraArgs`; ``update``
    requires ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.exploration import scale_by_trust_ratio
    >>> tr = scale_by_trust_ratio()
    >>> tr.update({"w": jnp.array([0.0, 2.0])}, (), {"w": jnp.array([3.0, 4.0])})[0]
    {'w': Array([0., 5.], dtype=float32)}

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
  """

  def scaled(u: jax.Array, w: jax.Array) -> jax.Array:
    dtype = wide_dtype(u, w)
    u_c = u.astype(dtype)
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(dtype))))
    u_norm = jnp.sqrt(jnp.sum(jnp.square(u_c)))
    both = (w_norm > 0) & (u_norm > 0)
    ratio = jnp.where(both, w_norm / jnp.where(both, u_norm, 1), 1)
    return (u_c * ratio).astype(u.dtype)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    return jax.tree.map(scaled, updates, params), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def _matrices(params: optax.Params) -> Any:
  """Default decay mask: tensors with 2 or more dimensions (not biases, scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def esgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    alpha: Union[float, jax.Array] = 0.5,
    b1: Union[float, jax.Array] = 0.01,
) -> optax.GradientTransformationExtraArgs:
  r"""SGD (optionally with momentum) on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, b1), optax.sgd(learning_rate, momentum, nesterov))``:
  :math:`w \leftarrow w - \eta\, \hat g_k` without momentum.

  Defaults are the paper's small-batch preset ``alpha=0.5, b1=0.01``; for batches
  of 1K and more use ``alpha=-5, b1=0.99``. ``alpha=0`` is ``optax.sgd``.

  Args:
    learning_rate: step size or schedule; >= 0.
    momentum: heavy-ball decay in ``[0, 1)``, or None for plain SGD.
    nesterov: use Nesterov momentum.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - b1)``.
    b1: E's decay rate, in ``[0, 1)``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for out-of-range Python-number hyperparameters.
    TypeError: for a ``nesterov`` that is not a bool.

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
  check_range("learning_rate", learning_rate, 0.0)
  check_range("momentum", momentum, 0.0, 1.0, high_open=True)
  if not isinstance(nesterov, bool):
    # Catches esgd(lr, momentum, alpha, b1), which would pass alpha as nesterov.
    raise TypeError(f"nesterov must be a bool, got {nesterov!r}; pass alpha "
                    "and b1 by keyword.")
  return optax.chain(
      explore(alpha, b1), optax.sgd(learning_rate, momentum, nesterov)
  )


def eadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: Union[float, jax.Array] = 0.9,
    b2: Union[float, jax.Array] = 0.999,
    eps: Union[float, jax.Array] = 1e-8,
    alpha: Union[float, jax.Array] = -5.0,
    explore_b1: Union[float, jax.Array] = 0.99,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, explore_b1), optax.adam(learning_rate, b1, b2, eps))``:
  Adam's moments average :math:`\hat g_k`, not :math:`g_k`. ``b1, b2`` are
  Adam's, as in ``optax.adam``; ``alpha, explore_b1`` are E's.

  Defaults for E are the paper's large-batch preset ``alpha=-5,
  explore_b1=0.99``; for small batches use ``alpha=0.5, explore_b1=0.01``.
  ``alpha=0`` is ``optax.adam``.

  Args:
    learning_rate: step size or schedule; >= 0.
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: Adam's denominator constant; > 0.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for out-of-range Python-number hyperparameters.

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
  check_range("learning_rate", learning_rate, 0.0)
  _check_adam(b1, b2, eps, "b1", "b2")
  _check_explore(alpha, explore_b1, "explore_b1")
  return optax.chain(
      explore(alpha, explore_b1), optax.adam(learning_rate, b1, b2, eps)
  )


def eadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: Union[float, jax.Array] = 0.9,
    b2: Union[float, jax.Array] = 0.999,
    eps: Union[float, jax.Array] = 1e-8,
    weight_decay: Union[float, jax.Array] = 1e-4,
    mask: _Mask = None,
    alpha: Union[float, jax.Array] = -5.0,
    explore_b1: Union[float, jax.Array] = 0.99,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamW on the explored gradient of :func:`explore`.

  ``chain(explore(alpha, explore_b1), optax.adamw(learning_rate, b1, b2, eps,
  weight_decay=weight_decay, mask=mask))``. The decay is decoupled, so E sees
  the loss gradient only.

  Defaults for E are the large-batch preset ``alpha=-5, explore_b1=0.99``; for
  small batches use ``alpha=0.5, explore_b1=0.01``. ``alpha=0`` is
  ``optax.adamw``.

  Args:
    learning_rate: step size or schedule; >= 0.
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: Adam's denominator constant; > 0.
    weight_decay: decoupled decay coefficient; >= 0.
    mask: which tensors decay, as in ``optax.adamw`` (None: all of them).
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - explore_b1)``.
    explore_b1: E's decay rate, in ``[0, 1)``.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for out-of-range Python-number hyperparameters.

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
  check_range("learning_rate", learning_rate, 0.0)
  _check_adam(b1, b2, eps, "b1", "b2")
  check_range("weight_decay", weight_decay, 0.0)
  _check_explore(alpha, explore_b1, "explore_b1")
  return optax.chain(
      explore(alpha, explore_b1),
      optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay,
                  mask=mask),
  )


def alto(
    learning_rate: optax.ScalarOrSchedule,
    alpha: Union[float, jax.Array] = -5.0,
    b1: Union[float, jax.Array] = 0.99,
    b2: Union[float, jax.Array] = 0.9,
    b3: Union[float, jax.Array] = 0.99,
    eps: Union[float, jax.Array] = 1e-6,
    weight_decay: Union[float, jax.Array] = 1e-4,
    mask: _Mask = None,
    clip_norm: Union[float, jax.Array] = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""ALTO: E inside LAMB, in the order of the reference code.

  For a step with gradient :math:`g` (names as in the reference, ``b1`` is E's):

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

  It is ``chain(clip_by_global_norm(clip_norm), explore(alpha, b1),
  optax.scale_by_adam(b2, b3, eps), optax.add_decayed_weights(weight_decay,
  mask), optax.masked(scale_by_trust_ratio(), mask),
  optax.scale_by_learning_rate(learning_rate))``. Defaults are the reference
  factory's, i.e. the large-batch preset ``alpha=-5, b1=0.99``.

  One deliberate difference: the reference couples the trust ratio to a
  nonzero weight decay, so with ``weight_decay=0`` it applies none anywhere.
  Here ``mask`` alone selects the trust-ratio tensors, so a decay schedule that
  reaches 0 does not switch LAMB off. For the reference's ``weight_decay=0``
  behaviour pass ``mask=lambda p: jax.tree.map(lambda _: False, p)``.

  Args:
    learning_rate: step size or schedule; >= 0.
    alpha: E's exploration coefficient; ``|alpha| < 1 / (1 - b1)``.
    b1: E's decay rate, in ``[0, 1)``.
    b2: first-moment decay of the Adam part, in ``[0, 1)``.
    b3: second-moment decay of the Adam part, in ``[0, 1)``.
    eps: denominator constant; > 0.
    weight_decay: decoupled decay on the masked tensors; >= 0.
    mask: pytree of bools like params, or a callable returning one, selecting
      the tensors that decay and get a trust ratio. None: tensors with
      ``ndim >= 2``. Under ``optax.inject_hyperparams`` pass a callable mask in
      ``static_args``.
    clip_norm: the global-norm clipping threshold; > 0.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for out-of-range Python-number hyperparameters.

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
  check_range("learning_rate", learning_rate, 0.0)
  _check_explore(alpha, b1, "b1")
  _check_adam(b2, b3, eps, "b2", "b3")
  check_range("weight_decay", weight_decay, 0.0)
  check_range("clip_norm", clip_norm, 0.0, low_open=True)
  if mask is None:
    mask = _matrices
  return optax.chain(
      clip_by_global_norm(clip_norm),
      explore(alpha, b1),
      optax.scale_by_adam(b1=b2, b2=b3, eps=eps),
      optax.add_decayed_weights(weight_decay, mask),
      optax.masked(scale_by_trust_ratio(), mask),
      optax.scale_by_learning_rate(learning_rate),
  )
