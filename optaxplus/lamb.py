r"""LAMB's building blocks with float32-or-wider norms, as optax transformations.

:func:`clip_by_global_norm` and :func:`scale_by_trust_ratio` compute what their optax
namesakes compute, with every norm exact for tiny and huge tensors and in float32 for
low-precision params; :func:`scale_by_lamb` is LAMB's direction (Adam, decoupled weight
decay, trust ratio) without the learning rate, moving fewer bytes than the chain it
equals. :func:`optaxplus.alto` is E inside :func:`scale_by_lamb`. The clip and the trust
ratio keep optax's names, so this module is not imported into the package namespace:
``from optaxplus import lamb`` then ``lamb.clip_by_global_norm(1.0)``.

References:
  You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
  <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
"""

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import optax

from optaxplus._checks import check_adam
from optaxplus._checks import check_mask
from optaxplus._checks import check_range
from optaxplus._wide import global_norm
from optaxplus._wide import global_norm_of
from optaxplus._wide import narrow
from optaxplus._wide import wide

_Scalar = Union[float, jax.Array]
_Mask = Optional[Union[Any, Callable[[optax.Params], Any]]]


def clip_by_global_norm(max_norm: _Scalar) -> optax.GradientTransformationExtraArgs:
  r"""Clips updates to a global L2 norm, with the norm computed in float32 or wider.

  .. math::
    u \leftarrow u \cdot \min\left(1, \frac{c}{\lVert u \rVert}\right).

  Same maths as ``optax.clip_by_global_norm``, whose squares and sums stay in the
  leaf dtype (3 significant digits for bfloat16). The norm and the scale are
  float32, or float64 for float64 updates, and the norm is exact for tiny (1e-20)
  and huge (1e30) updates. The reference ALTO uses
  ``torch.nn.utils.clip_grad_norm_``, which adds 1e-6 to the norm (a 1e-6
  relative difference, omitted). A non-finite norm makes every entry non-finite,
  so in :func:`alto` one NaN anywhere makes :func:`explore` zero the whole step's
  gradient, not only the bad leaf's.

  Args:
    max_norm: the largest global norm ``c`` let through; > 0.

  Returns:
    A stateless :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    TypeError: for a ``max_norm`` that is not a real scalar.
    ValueError: for ``max_norm <= 0``, NaN or infinity (tracers are not checked).

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.lamb import clip_by_global_norm
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
    limit = jnp.asarray(max_norm, norm.dtype)
    # `norm <= limit` is False for a NaN norm, so NaN spreads to every leaf.
    scale = jnp.where(norm <= limit, 1, limit / norm)
    clipped = jax.tree.map(lambda u: narrow(wide(u) * scale, u.dtype), updates)
    return clipped, state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def scale_by_trust_ratio() -> optax.GradientTransformationExtraArgs:
  r"""Scales each tensor's update by the LAMB trust ratio, norms in float32 or wider.

  .. math::
    u \leftarrow \frac{\lVert w \rVert}{\lVert u \rVert}\, u
    \quad (\text{ratio } 1 \text{ if either norm is } 0).

  Same maths as ``optax.scale_by_trust_ratio()`` with its defaults, computing
  each norm once (optax's ``safe_norm`` reads the tensor twice), in float32 for
  low-precision params and float64 for float64 params, exact for tiny (1e-20)
  and huge (1e30) tensors. Wrap it in ``optax.masked`` to adapt only some
  tensors, as :func:`alto` does.

  Returns:
    A stateless :class:`optax.GradientTransformationExtraArgs`; ``update``
    requires ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from optaxplus.lamb import scale_by_trust_ratio
    >>> tr = scale_by_trust_ratio()
    >>> tr.update({"w": jnp.array([0.0, 2.0])}, (), {"w": jnp.array([3.0, 4.0])})[0]
    {'w': Array([0., 5.], dtype=float32)}

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
  """

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    return jax.tree.map(_trust_ratio_scaled, updates, params), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def _trust_ratio_scaled(u: jax.Array, w: jax.Array, u_norm: Optional[jax.Array] = None
                        ) -> jax.Array:
  """``u ‖w‖ / ‖u‖`` (1 if a norm is 0); ``‖u‖`` is ``u_norm`` if given."""
  u_norm, w_norm = global_norm(u) if u_norm is None else u_norm, global_norm(w)
  both = (w_norm > 0) & (u_norm > 0)
  ratio = jnp.where(both, w_norm / jnp.where(both, u_norm, 1), 1)
  return narrow(wide(u) * ratio, u.dtype)


def _decayed_adam_direction(mu, nu, w, correction_mu, correction_nu, eps, weight_decay):
  """``r + λw`` as ``scale_by_adam`` (eps_root 0) then ``add_decayed_weights`` compute it."""
  mu_hat = mu / correction_mu.astype(mu.dtype)
  nu_hat = nu / correction_nu.astype(nu.dtype)
  return mu_hat / (jnp.sqrt(nu_hat + 0.0) + eps) + weight_decay * w


def scale_by_lamb(b1: _Scalar = 0.9, b2: _Scalar = 0.999, eps: _Scalar = 1e-6,
                  weight_decay: _Scalar = 0.0, mask: _Mask = None
                  ) -> optax.GradientTransformationExtraArgs:
  r"""LAMB's direction without the learning rate: Adam, decoupled decay, trust ratio.

  .. math::
    r = \frac{\hat\mu}{\sqrt{\hat\nu} + \epsilon}, \qquad
    u = r + \lambda w, \qquad
    u \leftarrow \frac{\lVert w \rVert}{\lVert u \rVert}\, u
    \ \text{(per tensor; ratio 1 if either norm is 0)}

  on the tensors ``mask`` selects; the others get :math:`r` alone. The same maths and
  state as ``chain(optax.scale_by_adam(b1, b2, eps), optax.add_decayed_weights(
  weight_decay, mask), optax.masked(scale_by_trust_ratio(), mask))``, in fewer passes
  over memory: the trust ratio reads :math:`u` twice, for :math:`\lVert u \rVert` and to
  scale it, and XLA, which does not compute Adam's divide and square root twice, would
  keep :math:`u` in a buffer of its own; here :math:`\lVert u \rVert` is a
  :func:`optaxplus._wide.global_norm_of` Adam's new moments and :math:`w`, which
  recomputes :math:`u` instead. Chain ``optax.scale_by_learning_rate`` after it, as
  ``optax.lamb`` does.

  Args:
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: Adam's denominator constant; > 0.
    weight_decay: decoupled decay :math:`\lambda` on the masked tensors; >= 0.
    mask: pytree of bools like params (a single bool for all tensors), or a callable
      returning one, selecting the tensors that decay and get a trust ratio. None
      (unlike ``optax.lamb``): tensors with ``ndim >= 2``, not biases and norm scales.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs`; ``update`` requires ``params``.

  Raises:
    TypeError: a hyperparameter of the wrong type, a mask with a leaf that is not a bool.
    ValueError: a hyperparameter out of its range, NaN or infinite.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from optaxplus.lamb import scale_by_lamb
    >>> tx = scale_by_lamb()
    >>> params = {'w': jnp.array([[3.0, 4.0]]), 'b': jnp.array([1.0])}
    >>> grads = {'w': jnp.array([[1.0, 0.0]]), 'b': jnp.array([2.0])}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> print(updates['w'].round(4), updates['b'].round(4))  # ‖w‖/‖u‖ = 5 on w; Adam on b
    [[5. 0.]] [1.]

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes <https://arxiv.org/abs/1904.00962>`_, ICLR 2020.
  """
  check_adam(b1, b2, eps)
  check_range("weight_decay", weight_decay, 0.0)
  check_mask(mask)
  if mask is None:
    mask = _matrices
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  decay = optax.add_decayed_weights(weight_decay, mask)

  def ratio_update(updates, state, params=None, *, u_norms, **extra_args):
    del extra_args
    return jax.tree.map(_trust_ratio_scaled, updates, params, u_norms), state

  # mask_compatible_extra_args: u_norms, like params, is masked as the updates are.
  ratio = optax.masked(
      optax.GradientTransformationExtraArgs(optax.init_empty_state, ratio_update), mask,
      mask_compatible_extra_args=True)

  def init_fn(params):
    return adam.init(params), decay.init(params), ratio.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    adam_state, decay_state, ratio_state = state
    r, adam_state = adam.update(updates, adam_state)
    u, decay_state = decay.update(r, decay_state, params)

    # As scale_by_adam's bias correction; a number enters `fn` in the params' dtype, as
    # it does in `number * array`.
    corrections = (1 - b1 ** adam_state.count, 1 - b2 ** adam_state.count)
    as_leaf = lambda x, leaf: jnp.asarray(x, leaf.dtype) if isinstance(x, (int, float)) else x
    # The ratio reads the norms of the masked tensors only; XLA drops the others.
    u_norms = jax.tree.map(
        lambda mu, nu, w: global_norm_of(
            _decayed_adam_direction, (mu, nu, w),
            (*corrections, as_leaf(eps, w), as_leaf(weight_decay, w))),
        adam_state.mu, adam_state.nu, params)
    u, ratio_state = ratio.update(u, ratio_state, params, u_norms=u_norms)
    return u, (adam_state, decay_state, ratio_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _matrices(params: optax.Params) -> Any:
  """Default decay mask: tensors with 2 or more dimensions (not biases, scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
