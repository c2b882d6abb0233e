r"""Stochastic Polyak step-sizes (SPS) and their heavy-ball versions (MomSPS).

The step size comes from the loss of the mini-batch instead of a tuned learning rate:
``γ_t = (f_t − f*) / (c ‖g_t‖²)``, capped by a rule (a constant, a slowly growing
previous step, or a decreasing sequence). MomSPS puts that rule on the step of the
iterate-moving-average form of the heavy ball, which makes every variant ``(1 − β) ×``
an SPS-type step followed by heavy-ball momentum.

Each ``scale_by_*`` transform multiplies the gradient by the step ``γ_t`` it computes from
the raw gradient and the keyword argument ``value`` (the mini-batch's mean loss at the
current parameters). Scale factors chained after it act multiplicatively:
``optax.chain(scale_by_sps(), optax.scale(-0.5))`` takes half the SPS step (unlike
``optax.polyak_sgd(scaling=...)``, whose scaling divides the Polyak step).

Heavy ball: ``u_t = −γ_t g_t + β u_{t−1}`` (``optax.trace``) applied unchanged equals
``x_{t+1} = x_t − γ_t g_t + β (x_t − x_{t−1})``. Transforms chained after the momentum
(clipping, weight decay) break that identity; chain them before the Polyak step instead.

Reading the step actually taken: ``optax.tree_utils.tree_get(state, 'step_size')``.

Numerics: the scalar maths (loss gap, ‖g_t‖, γ_t) runs in float64 for float64 params, in
float32 otherwise (bf16/f16 updates keep their dtype). The gap is divided by ``‖g_t‖`` twice,
never by ``‖g_t‖²``, so norms of 1e-20 or 1e30 get their exact step where float32 holds it.
Complex params take ``‖g‖² = Σ|g|²`` and ``−γ_t g_t``, as ``optax.polyak_sgd`` does. Every
hyperparameter may be traced (``optax.inject_hyperparams``) and is read at each update.

Skipped updates: when the loss or the gradient is not finite, the gradient is zero, the
loss is at or below ``f_min``, or the step under/overflows float32, the Polyak step returns
a zero update and leaves its state unchanged (the momentum buffer keeps coasting).
Parameters never become NaN through it.

References:
  Loizou, Vaswani, Laradji, Lacoste-Julien, *Stochastic Polyak Step-size for SGD: An
  Adaptive Learning Rate for Fast Convergence*, AISTATS 2021, arXiv:2002.10542.
  Orvieto, Lacoste-Julien, Loizou, *Dynamics of SGD with Stochastic Polyak Stepsizes:
  Truly Adaptive Variants and Convergence to Exact Solution*, NeurIPS 2022, arXiv:2205.04583.
  Jiang, Stich, *Adaptive SGD with Polyak stepsize and Line-search: Robust Convergence and
  Variance Reduction*, NeurIPS 2023, arXiv:2308.06058.
  Oikonomou, Loizou, *Stochastic Polyak Step-sizes and Momentum: Convergence Guarantees and
  Practical Performance*, ICLR 2025, arXiv:2406.04142.
"""

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_range
from optaxplus._wide import global_norm
from optaxplus._wide import tree_wide_dtype
from optaxplus._wide import wide

_MISSING_VALUE = (
    'This Polyak step needs the mini-batch loss at the current parameters: call '
    '`optimizer.update(grads, state, params, value=loss)`, e.g. with '
    '`loss, grads = jax.value_and_grad(loss_fn)(params, batch)`. Flax Linen users: '
    '`optaxplus.training.TrainState.apply_gradients(grads=grads, value=loss)` forwards it '
    '(flax.training.train_state.TrainState drops it).'
)


class PolyakStepState(NamedTuple):
  """State of a Polyak step: applied updates, the last step taken, the summed loss gap."""

  count: jax.Array  # shape=(), dtype=int32; applied (not skipped) updates.
  # shape=(), dtype=float32 (float64 for float64 params), 0 before the first update:
  step_size: jax.Array  # γ_t, the step of the last applied update.
  base_step_size: jax.Array  # η_t = γ_t / (1 − β), the step the Polyak rule caps.
  loss_gap_sum: jax.Array  # Σ_s (f_s − f_min) over applied updates, for AdaSPS.


# (state, f_t − f_min > 0, ‖g_t‖ > 0, Σ_{s≤t} gaps, hyperparameters in the compute dtype)
# ↦ η_t, the step before the heavy ball's factor (1 − β).
_StepRule = Callable[[PolyakStepState, jax.Array, jax.Array, jax.Array, dict], jax.Array]


def _polyak(gap: jax.Array, c: Any, norm: jax.Array) -> jax.Array:
  """``gap / (c ‖g‖²)``, dividing by ``‖g‖`` twice: ``‖g‖²`` under/overflows much sooner."""
  # One division at a time: XLA folds (a / b) / d into a / (b · d), which forms ‖g‖² again.
  for divisor in (c, norm, norm):
    gap = jax.lax.optimization_barrier(gap / divisor)
  return gap


# The accepted range of every hyperparameter, checked when an optimizer is built.
_RANGES = {
    'c': dict(low=0.0, low_open=True),
    'max_learning_rate': dict(low=0.0, low_open=True, allow_inf=True),  # inf: no cap
    'f_min': {},
    'momentum': dict(low=0.0, high=1.0, high_open=True),
    'batches_per_epoch': dict(low=1.0, integer=True),
    'tau': dict(low=1.0),
    'init_step': dict(low=0.0, low_open=True),
}


def _polyak_step(rule: _StepRule, **hyperparams: Any) -> optax.GradientTransformationExtraArgs:
  """Multiplies the gradient by ``(1 − β) η_t``; skips non-informative updates.

  ``hyperparams`` holds ``f_min``, ``momentum`` and what ``rule`` reads. They are checked
  here and cast to the compute dtype at each update, so that traced values
  (``optax.inject_hyperparams``) take effect.
  """
  for name, value in hyperparams.items():
    check_range(name, value, **_RANGES[name])

  def init_fn(params):
    dtype = tree_wide_dtype(params)  # one array per field, so the state can be donated
    return PolyakStepState(jnp.zeros([], jnp.int32), *(jnp.zeros([], dtype) for _ in range(3)))

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del params, extra_args
    if value is None:
      raise TypeError(_MISSING_VALUE)
    if jnp.ndim(value) != 0:
      raise ValueError(
          f'value must be the scalar mean loss of the mini-batch, got shape '
          f'{jnp.shape(value)}. Reduce it (e.g. jnp.mean) before passing it.'
      )
    dtype = state.step_size.dtype
    h = {name: jnp.asarray(v, dtype) for name, v in hyperparams.items()}
    norm = global_norm(updates).astype(dtype)
    gap = jnp.asarray(value, dtype) - h['f_min']
    informative = jnp.isfinite(gap) & (gap > 0) & jnp.isfinite(norm) & (norm > 0)
    # Placeholders on skipped updates, so that their NaN or inf never reaches the rule.
    gap = jnp.where(informative, gap, 1)
    norm = jnp.where(informative, norm, 1)
    gap_sum = state.loss_gap_sum + gap
    base_step = rule(state, gap, norm, gap_sum, h).astype(dtype)
    step = (1 - h['momentum']) * base_step
    # A step that underflowed to 0 is skipped too: it would freeze the capped recursions.
    applied = informative & jnp.isfinite(step) & (step > 0)
    new_state = optax.tree.where(
        applied,
        PolyakStepState(optax.safe_increment(state.count), step, base_step, gap_sum),
        state,
    )
    scale = lambda g: jnp.where(applied, wide(g) * step, 0).astype(g.dtype)
    return jax.tree.map(scale, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sps(
    c: Any = 0.5, max_learning_rate: Any = 1.0, f_min: Any = 0.0, *, momentum: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the gradient by the capped stochastic Polyak step (SPS_max, MomSPS_max).

  .. math::
    γ_t = (1 − β) \min\{ (f_t − f^*) / (c ‖g_t‖²),\ γ_b \}

  Args:
    c: Polyak constant, > 0 (0.5 in the SPS paper, 1 in the MomSPS reference code).
    max_learning_rate: the cap ``γ_b`` on the Polyak step, > 0; ``inf`` for no cap.
    f_min: a lower bound ``f^*`` of the loss (0 for non-negative losses), finite.
    momentum: the ``β`` of the heavy ball this step feeds, in [0, 1); the step is
      multiplied by ``1 − β`` (MomSPS). 0 gives SPS_max.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_sps(c=1.0, max_learning_rate=10.0)
    >>> g = jnp.array([3.0, 4.0])  # ‖g‖² = 25
    >>> step, state = tx.update(g, tx.init(g), value=5.0)
    >>> print(state.step_size)  # 5 / (1 · 25)
    0.2
  """

  def rule(state, gap, norm, gap_sum, h):
    del state, gap_sum
    return jnp.minimum(_polyak(gap, h['c'], norm), h['max_learning_rate'])

  return _polyak_step(rule, c=c, max_learning_rate=max_learning_rate, f_min=f_min,
                      momentum=momentum)


def scale_by_sps_smooth(
    c: Any = 0.2,
    *,
    batches_per_epoch: Any,
    tau: Any = 2.0,
    init_step: Any = 1.0,
    f_min: Any = 0.0,
    momentum: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the gradient by the Polyak step capped by a slowly growing previous step.

  The reference code's deep-learning mode (SPS "smooth", MomSPS_smooth):

  .. math::
    γ_t = \min\{ (1 − β)(f_t − f^*) / (c ‖g_t‖²),\ τ^{1/N} γ_{t−1} \},\quad γ_{−1} = \text{init\_step}

  The cap multiplies the previous step actually taken, which already holds ``1 − β``.

  Args:
    c: Polyak constant, > 0.
    batches_per_epoch: ``N``, the number of mini-batches in one epoch, a whole number ≥ 1.
    tau: the cap's growth per epoch, ≥ 1.
    init_step: ``γ_{−1}``, > 0 (read at the first applied update).
    f_min: a lower bound of the loss, finite.
    momentum: the heavy ball's ``β`` in [0, 1); 0 gives SPS smooth.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_sps_smooth(c=1.0, batches_per_epoch=1, tau=2.0)
    >>> g = jnp.array([3.0, 4.0])
    >>> _, state = tx.update(g, tx.init(g), value=100.0)  # Polyak 4, cap 2 · 1
    >>> print(state.step_size)
    2.0
  """

  def rule(state, gap, norm, gap_sum, h):
    del gap_sum
    previous = jnp.where(state.count == 0, h['init_step'], state.step_size)
    # The cap bounds γ_t = (1 − β) η_t, the step actually taken.
    cap = h['tau'] ** (1 / h['batches_per_epoch']) * previous / (1 - h['momentum'])
    return jnp.minimum(_polyak(gap, h['c'], norm), cap)

  return _polyak_step(rule, c=c, batches_per_epoch=batches_per_epoch, tau=tau,
                      init_step=init_step, f_min=f_min, momentum=momentum)


def scale_by_decsps(
    c: Any = 1.0, max_learning_rate: Any = 10.0, f_min: Any = 0.0, *, momentum: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the gradient by the decreasing Polyak step (DecSPS, MomDecSPS).

  .. math::
    c_t = c \sqrt{t + 1},\quad
    η_t = \frac{1}{c_t} \min\{ (f_t − f^*) / ‖g_t‖²,\ c_{t−1} η_{t−1} \},\quad
    γ_t = (1 − β) η_t

  with ``c_{−1} = c`` and ``η_{−1} = γ_b``; ``t`` counts applied updates from 0.

  Args:
    c: ``c_0``, > 0.
    max_learning_rate: ``γ_b``, the first cap, > 0 (read at the first applied update);
      ``inf`` for no cap on the first step.
    f_min: a lower bound of the loss, finite.
    momentum: the heavy ball's ``β`` in [0, 1); 0 gives DecSPS.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_decsps(c=1.0, max_learning_rate=10.0)
    >>> g = jnp.array([3.0, 4.0])
    >>> _, state = tx.update(g, tx.init(g), value=5.0)  # t = 0: min(5/25, 10) / 1
    >>> _, state = tx.update(g, state, value=5.0)  # t = 1: min(0.2, 1 · 0.2) / √2
    >>> print(f'{state.step_size:.4f}')
    0.1414
  """

  def rule(state, gap, norm, gap_sum, h):
    del gap_sum
    t = state.count.astype(gap.dtype)
    first = state.count == 0
    # c_{t−1} η_{t−1}, with c_{−1} η_{−1} = c_0 γ_b.
    cap = h['c'] * jnp.where(first, h['max_learning_rate'], jnp.sqrt(t) * state.base_step_size)
    return jnp.minimum(_polyak(gap, 1, norm), cap) / (h['c'] * jnp.sqrt(t + 1))

  return _polyak_step(rule, c=c, max_learning_rate=max_learning_rate, f_min=f_min,
                      momentum=momentum)


def scale_by_adasps(
    c: Any = 1.0, f_min: Any = 0.0, *, momentum: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the gradient by the adaptive Polyak step (AdaSPS, MomAdaSPS).

  .. math::
    η_t = \min\Big\{ \frac{f_t − f^*}{c ‖g_t‖² \sqrt{\sum_{s \le t} (f_s − f^*)}},\ η_{t−1} \Big\},
    \quad γ_t = (1 − β) η_t,\quad η_{−1} = +∞

  ``η_{−1} = +∞`` is not stored: the first applied update is simply not capped.

  Args:
    c: ``c_p``, > 0.
    f_min: a lower bound of the loss, finite.
    momentum: the heavy ball's ``β`` in [0, 1); 0 gives AdaSPS.

  Returns:
    A ``GradientTransformationExtraArgs`` whose update takes the loss as ``value=``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.scale_by_adasps(c=1.0)
    >>> g = jnp.array([3.0, 4.0])
    >>> _, state = tx.update(g, tx.init(g), value=4.0)  # 4 / (25 · √4)
    >>> print(state.step_size)
    0.08
  """

  def rule(state, gap, norm, gap_sum, h):
    polyak = _polyak(gap, h['c'], norm) / jnp.sqrt(gap_sum)
    return jnp.where(state.count == 0, polyak, jnp.minimum(polyak, state.base_step_size))

  return _polyak_step(rule, c=c, f_min=f_min, momentum=momentum)


def _descend_with_heavy_ball(
    step: optax.GradientTransformationExtraArgs, momentum: Any
) -> optax.GradientTransformationExtraArgs:
  """``u_t = −γ_t g_t + β u_{t−1}``; no momentum buffer at all when ``β`` is the number 0."""
  if isinstance(momentum, numbers.Real) and momentum == 0:
    return optax.chain(step, optax.scale(-1.0))
  return optax.chain(step, optax.trace(decay=momentum), optax.scale(-1.0))


def sps(
    c: Any = 0.5, max_learning_rate: Any = 1.0, f_min: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  """SGD with the capped stochastic Polyak step, SPS_max (Loizou et al., AISTATS 2021).

  ``x_{t+1} = x_t − γ_t g_t`` with ``γ_t`` from :func:`scale_by_sps`.

  Args:
    c: Polyak constant, > 0.
    max_learning_rate: the cap ``γ_b``, > 0; ``inf`` for no cap.
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, optaxplus
    >>> loss_fn = lambda w: jnp.sum((w - 1.0) ** 2)
    >>> w = jnp.zeros(3)
    >>> tx = optaxplus.sps(c=1.0)
    >>> state, update = tx.init(w), jax.jit(tx.update)
    >>> for _ in range(30):
    ...   loss, grads = jax.value_and_grad(loss_fn)(w)
    ...   updates, state = update(grads, state, w, value=loss)
    ...   w = optax.apply_updates(w, updates)
    >>> step = optax.tree_utils.tree_get(state, 'step_size')  # the step last taken
    >>> print(loss_fn(w) < 1e-12, f'{step:.6f}')  # Polyak: f / ‖2(w − 1)‖² = 1/4
    True 0.250000
  """
  return _descend_with_heavy_ball(scale_by_sps(c, max_learning_rate, f_min), 0)


def momsps(
    c: Any = 1.0, max_learning_rate: Any = 10.0, momentum: Any = 0.9, f_min: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  r"""Heavy ball with the MomSPS_max step (Oikonomou & Loizou, ICLR 2025).

  .. math::
    γ_t = (1 − β) \min\{ (f_t − f^*) / (c ‖g_t‖²),\ γ_b \},\quad
    x_{t+1} = x_t − γ_t g_t + β (x_t − x_{t−1})

  ``momentum=0`` is exactly :func:`sps`. The step taken is
  ``optax.tree_utils.tree_get(state, 'step_size')``.

  Args:
    c: Polyak constant, > 0 (reference default 1).
    max_learning_rate: the cap ``γ_b``, > 0, ``inf`` for no cap (reference default 10).
    momentum: ``β`` in [0, 1) (reference default 0.9).
    f_min: a lower bound of the loss, finite (reference default 0).

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.momsps(max_learning_rate=1.0, momentum=0.75)
    >>> g = jnp.array([3.0, 4.0])
    >>> updates, state = tx.update(g, tx.init(g), value=5.0)
    >>> print(updates)  # −(1 − 0.75) · min(5/25, 1) · g
    [-0.15 -0.2 ]
  """
  step = scale_by_sps(c, max_learning_rate, f_min, momentum=momentum)
  return _descend_with_heavy_ball(step, momentum)


def momsps_smooth(
    c: Any = 1.0,
    momentum: Any = 0.9,
    *,
    batches_per_epoch: int,
    tau: Any = 2.0,
    init_step: Any = 1.0,
    f_min: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Heavy ball with the MomSPS_smooth step, the MomSPS paper's deep-learning choice.

  .. math::
    γ_t = \min\{ (1 − β)(f_t − f^*) / (c ‖g_t‖²),\ τ^{1/N} γ_{t−1} \},\quad
    x_{t+1} = x_t − γ_t g_t + β (x_t − x_{t−1})

  The paper's deep-learning runs use ``c = 0.4``. ``momentum=0`` gives SPS smooth.

  Args:
    c: Polyak constant, > 0.
    momentum: ``β`` in [0, 1).
    batches_per_epoch: ``N``, mini-batches per epoch, a whole number ≥ 1.
    tau: the cap's growth per epoch, ≥ 1.
    init_step: ``γ_{−1}``, > 0 (read at the first applied update).
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.momsps_smooth(c=0.4, batches_per_epoch=100)
    >>> w = {'kernel': jnp.ones((2, 2)), 'bias': jnp.zeros(2)}
    >>> grads = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
    >>> updates, state = tx.update(grads, tx.init(w), w, value=0.3)
    >>> print(updates['bias'])  # −(1 − 0.9) · 0.3 / (0.4 · 6)
    [-0.0125 -0.0125]
  """
  step = scale_by_sps_smooth(c, batches_per_epoch=batches_per_epoch, tau=tau,
                             init_step=init_step, f_min=f_min, momentum=momentum)
  return _descend_with_heavy_ball(step, momentum)


def momdecsps(
    c: Any = 1.0, max_learning_rate: Any = 10.0, momentum: Any = 0.9, f_min: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  """Heavy ball with the MomDecSPS step: ``(1 − β)`` × the DecSPS step of :func:`scale_by_decsps`.

  Unlike the capped step, the decreasing step converges to the exact minimiser when the
  model does not interpolate the data (at the price of slower progress early on).

  Args:
    c: ``c_0``, > 0.
    max_learning_rate: ``γ_b``, the first cap, > 0; ``inf`` for none.
    momentum: ``β`` in [0, 1); 0 gives :func:`decsps`.
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.momdecsps(momentum=0.5)
    >>> g = jnp.array([3.0, 4.0])
    >>> updates, state = tx.update(g, tx.init(g), value=5.0)
    >>> print(updates)  # −(1 − 0.5) · min(5/25, 10) · g
    [-0.3 -0.4]
  """
  step = scale_by_decsps(c, max_learning_rate, f_min, momentum=momentum)
  return _descend_with_heavy_ball(step, momentum)


def momadasps(
    c: Any = 1.0, momentum: Any = 0.9, f_min: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  """Heavy ball with the MomAdaSPS step: ``(1 − β)`` × the AdaSPS step of :func:`scale_by_adasps`.

  Args:
    c: ``c_p``, > 0.
    momentum: ``β`` in [0, 1); 0 gives :func:`adasps`.
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.momadasps(momentum=0.5)
    >>> g = jnp.array([3.0, 4.0])
    >>> updates, state = tx.update(g, tx.init(g), value=4.0)
    >>> print(updates)  # −(1 − 0.5) · 4 / (25 · √4) · g
    [-0.12 -0.16]
  """
  step = scale_by_adasps(c, f_min, momentum=momentum)
  return _descend_with_heavy_ball(step, momentum)


def decsps(
    c: Any = 1.0, max_learning_rate: Any = 10.0, f_min: Any = 0.0
) -> optax.GradientTransformationExtraArgs:
  """SGD with the decreasing Polyak step DecSPS (Orvieto et al., NeurIPS 2022).

  Args:
    c: ``c_0``, > 0.
    max_learning_rate: ``γ_b``, the first cap, > 0; ``inf`` for none.
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.decsps()
    >>> g = jnp.array([3.0, 4.0])
    >>> updates, _ = tx.update(g, tx.init(g), value=5.0)
    >>> print(updates)  # −min(5/25, 10) · g
    [-0.6 -0.8]
  """
  return momdecsps(c, max_learning_rate, momentum=0, f_min=f_min)


def adasps(c: Any = 1.0, f_min: Any = 0.0) -> optax.GradientTransformationExtraArgs:
  """SGD with the adaptive Polyak step AdaSPS (Jiang & Stich, NeurIPS 2023).

  Args:
    c: ``c_p``, > 0.
    f_min: a lower bound of the loss, finite.

  Returns:
    A ``GradientTransformationExtraArgs``; pass the loss as ``update(..., value=loss)``.

  Examples:
    >>> import jax.numpy as jnp, optaxplus
    >>> tx = optaxplus.adasps()
    >>> g = jnp.array([3.0, 4.0])
    >>> updates, _ = tx.update(g, tx.init(g), value=4.0)
    >>> print(updates)  # −4 / (25 · √4) · g
    [-0.24 -0.32]
  """
  return momadasps(c, momentum=0, f_min=f_min)
