"""Arithmetic in float32 or wider, for norms and scalar step maths over any param tree.

Norms and the scalar maths of a step (loss gap, ‖g‖², step size, SAM radius) are computed in
float32, or in float64 when the params are float64: a bf16 sum of squares keeps 3
significant digits and stalls once it passes 256 × an entry, and a float32 step on float64
params throws away the precision the user asked for.
"""

import jax
import jax.numpy as jnp
import optax


def wide_dtype(*arrays) -> jnp.dtype:
  """The real dtype to compute in: float32, or float64 if an input is (complex) float64.

  Examples:
    >>> import jax.numpy as jnp
    >>> wide_dtype(jnp.ones(2, jnp.bfloat16))
    dtype('float32')
  """
  dtypes = [jnp.asarray(a).dtype for a in arrays]
  return jnp.finfo(jnp.result_type(jnp.float32, *dtypes)).dtype


def tree_wide_dtype(tree) -> jnp.dtype:
  """:func:`wide_dtype` over every leaf of ``tree`` (float32 for an empty tree)."""
  return wide_dtype(*jax.tree.leaves(tree))


def wide(x: jax.Array) -> jax.Array:
  """``x`` cast to float32 or wider; complex stays complex, at the matching width."""
  x = jnp.asarray(x)
  return x.astype(jnp.result_type(jnp.float32, x.dtype))


def _plain_sum_of_squares(tree, dtype) -> jax.Array:
  return optax.tree.norm(jax.tree.map(wide, tree), squared=True).astype(dtype)


def global_norm(tree, *, squared: bool = False) -> jax.Array:
  """One L2 norm ``sqrt(Σ|x|²)`` over every leaf, in float32 or wider, without under/overflow.

  The sum of squares is taken directly (one read of ``tree``); only when it underflows to a
  subnormal or overflows (‖x‖ below ~1e-19 or above ~1e19 in float32) is it recomputed as
  ``s·sqrt(Σ|x/s|²)`` with ``s = max|x|``, so tiny and huge trees get their exact norm.
  Complex leaves count ``|x|² = re² + im²``. A non-finite entry gives a non-finite norm.

  Args:
    tree: a pytree of arrays (any float or complex dtype).
    squared: return ``‖x‖²`` (which can itself overflow the dtype) instead of ``‖x‖``.

  Returns:
    A scalar of dtype float32, or float64 for float64 leaves.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(global_norm({'a': jnp.full(65536, 1, jnp.bfloat16)}, squared=True))
    65536.0
    >>> print(global_norm({'a': jnp.array([3e-20, 4e-20]), 'b': jnp.array([0.0])}))
    5e-20
  """
  leaves = jax.tree.leaves(tree)
  dtype = tree_wide_dtype(tree)
  if not leaves:
    return jnp.zeros((), dtype)
  sum_of_squares = _plain_sum_of_squares(leaves, dtype)
  tiny = jnp.finfo(dtype).tiny

  def rescaled(leaves):
    scale = optax.tree.norm(jax.tree.map(wide, leaves), ord='inf').astype(dtype)
    safe = jnp.where(scale > 0, scale, 1).astype(dtype)
    scaled = jax.tree.map(lambda x: wide(x) / safe.astype(wide(x).dtype), leaves)
    return scale * jnp.sqrt(_plain_sum_of_squares(scaled, dtype))

  # Rescale only when out of range (also a sum that underflowed to 0, or NaN): the common
  # path reads the tree once.
  in_range = (sum_of_squares >= tiny) & (sum_of_squares < jnp.inf)
  norm = jax.lax.cond(in_range, lambda leaves: jnp.sqrt(sum_of_squares), rescaled, leaves)
  if squared:
    return jnp.where(in_range, sum_of_squares, jnp.square(norm))
  return norm
