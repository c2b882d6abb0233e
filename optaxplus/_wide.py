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


def _squares(x: jax.Array, dtype, scale: float) -> jax.Array:
  """``|x·scale|²`` elementwise in ``dtype`` (re² + im² for complex ``x``)."""
  x = wide(x)
  if jnp.iscomplexobj(x):
    return jnp.square(x.real.astype(dtype) * scale) + jnp.square(x.imag.astype(dtype) * scale)
  return jnp.square(x.astype(dtype) * scale)


def _sums_of_squares(leaves, dtype, scales) -> tuple[jax.Array, ...]:
  """``Σ|x·s|²`` for each ``s`` in ``scales``, in ONE read of the leaves (a variadic reduce)."""
  zeros = tuple(jnp.zeros((), dtype) for _ in scales)
  add = lambda a, b: tuple(ai + bi for ai, bi in zip(a, b))
  totals = zeros
  for x in leaves:
    flat = jnp.ravel(x)
    sums = jax.lax.reduce(tuple(_squares(flat, dtype, s) for s in scales), zeros, add, (0,))
    totals = add(totals, sums)
  return totals


def global_norm(tree, *, squared: bool = False) -> jax.Array:
  """One L2 norm ``sqrt(Σ|x|²)`` over every leaf, in float32 or wider, without under/overflow.

  Three sums of squares are taken in one pass over ``tree``: of ``x``, of ``x·2^k`` and of
  ``x·2^−k`` (``k`` = 63 for float32, 511 for float64; powers of two scale exactly). The scaled-up sum is used below 1, the scaled-down one when the plain sum
  overflows (‖x‖ above ~1e19 in float32), the plain one otherwise, so tiny and huge trees
  get their exact norm at the cost of one read. Complex leaves count
  ``|x|² = re² + im²``. A non-finite entry gives a non-finite norm.

  Args:
    tree: a pytree of arrays (any float or complex dtype).
    squared: return ``‖x‖²`` (which can itself under/overflow the dtype) instead of ``‖x‖``.

  Returns:
    A scalar of dtype float32, or float64 for float64 leaves.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(global_norm({'a': jnp.full(65536, 1, jnp.bfloat16)}, squared=True))
    65536.0
    >>> print(global_norm({'a': jnp.array([3e-20, 4e-20]), 'b': jnp.array([0.0])}))
    5e-20
    >>> print(global_norm({'a': jnp.array([3e30, 4e30])}))
    5e+30
  """
  norm, sum_of_squares = _norm_and_sum_of_squares(jax.tree.leaves(tree))
  return sum_of_squares if squared else norm


@jax.custom_jvp
def _norm_and_sum_of_squares(leaves) -> tuple[jax.Array, jax.Array]:
  dtype = wide_dtype(*leaves)
  # 2^k with k just under half the largest exponent, so that XLA's algebraic simplifier,
  # which may rewrite (x·s)² as x²·s², still sees a finite s²; the barrier (on a scalar,
  # free) keeps it from folding s² into a constant.
  exponent = jnp.finfo(dtype).maxexp // 2 - 1
  up, down = jax.lax.optimization_barrier(
      (jnp.asarray(2.0 ** exponent, dtype), jnp.asarray(2.0 ** -exponent, dtype)))
  plain, tiny, huge = _sums_of_squares(leaves, dtype, (1.0, up, down))
  # Below 1 the scaled-up sum cannot overflow and keeps terms that are subnormal in `plain`.
  small = plain < 1
  norm = jnp.where(small, jnp.sqrt(tiny) * down,
                   jnp.where(plain == jnp.inf, jnp.sqrt(huge) * up, jnp.sqrt(plain)))
  return norm, jnp.where(small, tiny * down * down, plain)


@_norm_and_sum_of_squares.defjvp
def _norm_and_sum_of_squares_jvp(primals, tangents):
  # d‖x‖ = Re⟨x, dx⟩ / ‖x‖ (0 at x = 0), d‖x‖² = 2 Re⟨x, dx⟩: the scaled sums' own
  # derivatives overflow, so the rule is written out.
  (leaves,), (leaf_tangents,) = primals, tangents
  norm, plain = _norm_and_sum_of_squares(leaves)
  inner = sum((jnp.sum(jnp.real(jnp.conj(wide(x)) * wide(t))).astype(norm.dtype)
               for x, t in zip(leaves, leaf_tangents)), jnp.zeros((), norm.dtype))
  safe_norm = jnp.where(norm > 0, norm, 1)
  return (norm, plain), (jnp.where(norm > 0, inner / safe_norm, 0), 2 * inner)
