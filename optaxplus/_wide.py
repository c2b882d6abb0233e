"""Arithmetic in float32 or wider, for norms and reductions over low-precision trees.

METHODS.md asks every norm to be computed in float32 or wider, also for bf16 params:
a bf16 sum of squares keeps 3 significant digits and stalls once it passes 256 × an entry.
"""

import jax
import jax.numpy as jnp
import optax


def wide_dtype(*arrays: jax.Array) -> jnp.dtype:
  """The dtype to compute in: float32, or wider if an input is wider (float64).

  Examples:
    >>> import jax.numpy as jnp
    >>> wide_dtype(jnp.ones(2, jnp.bfloat16))
    dtype('float32')
  """
  return jnp.result_type(jnp.float32, *(jnp.asarray(a).dtype for a in arrays))


def wide(x: jax.Array) -> jax.Array:
  """``x`` cast to :func:`wide_dtype`."""
  return x.astype(wide_dtype(x))


def global_norm(tree, *, squared: bool = False) -> jax.Array:
  """One L2 norm over every leaf of ``tree``, computed in float32 or wider.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(global_norm({'a': jnp.full(65536, 1, jnp.bfloat16)}, squared=True))
    65536.0
  """
  return optax.tree.norm(jax.tree.map(wide, tree), squared=squared)
