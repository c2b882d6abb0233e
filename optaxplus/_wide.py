"""Arithmetic in float32 or wider, for norms and scalar step maths over any param tree.

Norms and the scalar maths of a step (loss gap, ‖g‖², step size, SAM radius) are computed in
float32, or in float64 when the params are float64: a bf16 sum of squares keeps 3
significant digits and stalls once it passes 256 × an entry, and a float32 step on float64
params throws away the precision the user asked for.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def wide_dtype(*arrays) -> jnp.dtype:
  """The real dtype to compute in: float32, or float64 if an input is (complex) float64.

  Examples:
    >>> import jax.numpy as jnp
    >>> wide_dtype(jnp.ones(2, jnp.bfloat16))
    dtype('float32')
  """
  dtypes = [a.dtype if hasattr(a, 'dtype') else jnp.asarray(a).dtype for a in arrays]
  return jnp.finfo(jnp.result_type(jnp.float32, *dtypes)).dtype


def tree_wide_dtype(tree) -> jnp.dtype:
  """:func:`wide_dtype` over every leaf of ``tree`` (float32 for an empty tree)."""
  return wide_dtype(*jax.tree.leaves(tree))


def wide(x: jax.Array) -> jax.Array:
  """``x`` cast to float32 or wider; complex stays complex, at the matching width."""
  x = jnp.asarray(x)
  return x.astype(jnp.result_type(jnp.float32, x.dtype))


def narrow(x: jax.Array, dtype) -> jax.Array:
  """``x.astype(dtype)``, bit for bit; float32 to bfloat16 in integer operations.

  XLA:CPU never computes a float32 -> bfloat16 conversion twice, so a rounded value read
  by two fusions (Adam's two moments, E's average and output) gets a param-sized buffer
  of its own and one more pass. Rounding to nearest even with ``reduce_precision`` and
  keeping the upper 16 bits is the same conversion in operations XLA does repeat in each
  reader. NaNs are made quiet first: the upper half of a NaN whose payload sits in its
  low bits would read as infinity.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(narrow(jnp.array([1.0, 1.00390625, 1.01171875]), jnp.bfloat16))  # ties to even
    [1 1 1.01562]
  """
  if x.dtype != jnp.float32 or jnp.dtype(dtype) != jnp.bfloat16:
    return x.astype(dtype)
  rounded = jax.lax.reduce_precision(jnp.where(jnp.isnan(x), jnp.nan, x),
                                     exponent_bits=8, mantissa_bits=7)
  upper = jax.lax.bitcast_convert_type(rounded, jnp.uint32) >> 16
  return jax.lax.bitcast_convert_type(upper.astype(jnp.uint16), jnp.bfloat16)


def _squares(x: jax.Array, dtype, scale: jax.Array, clip: bool = False) -> jax.Array:
  """``|x·scale|²`` elementwise in ``dtype`` (re² + im² for complex ``x``).

  With ``clip``, parts are first clipped to [−1, 1]: the sum is then only used when every
  part is below 1 anyway, and no intermediate becomes inf (``jax_debug_infs`` stays quiet).
  """
  x = wide(x)
  parts = (x.real, x.imag) if jnp.iscomplexobj(x) else (x,)
  parts = [part.astype(dtype) for part in parts]
  if clip:
    parts = [jnp.clip(part, -1, 1) for part in parts]
  return sum(jnp.square(part * scale) for part in parts)


def _sums_of_squares(leaves, dtype, up, down) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``Σ|x|²``, ``Σ|clip(x)·up|²``, ``Σ|x·down|²`` in ONE read of the leaves (variadic reduce)."""
  zeros = (jnp.zeros((), dtype),) * 3
  totals = zeros
  for x in leaves:
    squares = (_squares(x, dtype, 1), _squares(x, dtype, up, clip=True),
               _squares(x, dtype, down))
    totals = _add(totals, jax.lax.reduce(squares, zeros, _add, tuple(range(jnp.ndim(x)))))
  return totals


def _add(a: tuple, b: tuple) -> tuple:
  """Elementwise sum of two tuples; one module-level function, so eager reduces hit the cache."""
  return tuple(ai + bi for ai, bi in zip(a, b))


def global_norm(tree, *, squared: bool = False) -> jax.Array:
  """One L2 norm ``sqrt(Σ|x|²)`` over every leaf, in float32 or wider, without under/overflow.

  Three sums of squares are taken in one pass over ``tree``: of ``x``, of ``x·2^47`` and of
  ``x·2^−80`` (float32; 2^495 and 2^−528 for float64; powers of two scale exactly). The
  scaled-up sum is used when the plain one is below 1, the scaled-down one when the plain
  one overflows (‖x‖ above ~1e19 in float32), the plain one otherwise, so trees from ~1e-33
  to the float maximum get their exact norm at the cost of one read. Complex leaves count
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
@jax.jit  # one compiled program per tree shape when called eagerly
def _norm_and_sum_of_squares(leaves) -> tuple[jax.Array, jax.Array]:
  return _norms_of_mapped(_itself, (leaves,), ())


def _itself(x: jax.Array) -> jax.Array:
  return x


def global_norm_of(fn: Callable[..., jax.Array], trees: tuple, scalars: tuple = ()
                   ) -> jax.Array:
  """:func:`global_norm` of ``jax.tree.map(lambda *x: fn(*x, *scalars), *trees)``, never
  holding ``fn``'s values.

  ``fn`` computes one array elementwise from the corresponding leaves of ``trees`` and
  the ``scalars``. Each path that needs the values computes them again, so the norm of a
  computed tree, e.g. LAMB's ``‖r + λw‖`` from Adam's moments, costs no buffer of its
  size. Pass every array ``fn`` reads as a leaf or a scalar rather than closing over
  it: they sit behind a barrier that keeps XLA from sharing the computation with the
  caller's own, which would put it back into a buffer. A bfloat16 value is summed as XLA
  computes it, in float32, and may differ from the stored array by its rounding.
  Differentiate :func:`global_norm` instead: this one has no custom derivative. Called
  eagerly, it compiles once per ``fn`` and shapes: pass a module-level function, not a
  new closure each call.

  Examples:
    >>> import jax.numpy as jnp
    >>> x, y = {'a': jnp.array([4.0, 1.0])}, {'a': jnp.array([1.0, 5.0])}
    >>> print(global_norm_of(lambda a, b, s: s * (a - b), (x, y), (jnp.float32(2.0),)))
    10.0
  """
  return _norms_of_mapped(fn, tuple(jax.tree.leaves(tree) for tree in trees),
                          tuple(scalars))[0]


@functools.partial(jax.jit, static_argnums=0)  # eager calls: one program per fn and shapes
def _norms_of_mapped(fn, leaves: tuple, scalars: tuple) -> tuple[jax.Array, jax.Array]:
  """``(‖x‖, ‖x‖²)`` for ``x = fn(*corresponding leaves, *scalars)``, exact over the range.

  XLA:CPU compiles a multi-output (variadic) reduce to a scalar loop, 5-8x slower than a
  one-output sum; there the plain sum is taken, and :func:`_one_pass` runs in a
  ``lax.cond`` branch only when that sum is outside its exact range. Elsewhere the one
  pass runs alone (memory-bound as it is). Both paths compute ``x`` from the operands,
  which XLA then needs in no buffer of its own. The barrier keeps XLA from sharing that
  computation (a float32 widening of bf16 leaves, a LAMB update) with the caller's own,
  which would put it back into a buffer.
  """
  operands = jax.lax.optimization_barrier((leaves, scalars))
  values_of = lambda operands: [fn(*corresponding, *operands[1])
                                for corresponding in zip(*operands[0])]
  exact = lambda operands: _one_pass(values_of(operands))
  return jax.lax.platform_dependent(
      operands, cpu=lambda operands: _checked_plain_sum(values_of, exact, operands),
      default=exact)


def rescaling_powers(dtype) -> tuple[jax.Array, jax.Array]:
  """``(2^(h−17), 2^−(h+16))`` for ``h = maxexp / 2`` of ``dtype``: the scales of the
  scaled-up and scaled-down sums. Scaled squares stay below 2^(maxexp − 32), so a sum
  over up to 2^32 entries cannot overflow. The barrier (on two scalars, free) keeps XLA
  from folding them into constants and reassociating (x·s)² into x²·s², which would
  under/overflow."""
  half = jnp.finfo(dtype).maxexp // 2
  return jax.lax.optimization_barrier(
      (jnp.asarray(2.0 ** (half - 17), dtype), jnp.asarray(2.0 ** -(half + 16), dtype)))


def _one_pass(leaves) -> tuple[jax.Array, jax.Array]:
  """``(‖x‖, ‖x‖²)`` from the three sums of squares, in one read of ``leaves``."""
  dtype = wide_dtype(*leaves)
  up, down = rescaling_powers(dtype)
  plain, tiny, huge = _sums_of_squares(leaves, dtype, up, down)
  # Below 1 the scaled-up sum cannot overflow and keeps terms that are subnormal in `plain`.
  small = plain < 1
  norm = jnp.where(small, jnp.sqrt(tiny) / up,
                   jnp.where(plain == jnp.inf, jnp.sqrt(huge) / down, jnp.sqrt(plain)))
  return norm, jnp.where(small, tiny / up / up, plain)


def _checked_plain_sum(values_of, exact, operands) -> tuple[jax.Array, jax.Array]:
  """``(‖x‖, ‖x‖²)`` from the plain ``Σ|x|²`` where it is exact, else ``exact(operands)``.

  A square below the smallest normal number loses at most that much, so with ``n``
  entries the plain sum is exact to half an ulp when it is at least ``n · tiny / eps``.
  """
  values = values_of(operands)
  dtype = wide_dtype(*values)
  finfo = jnp.finfo(dtype)
  plain = sum((jnp.sum(_squares(x, dtype, 1)) for x in values), jnp.zeros((), dtype))
  count = sum(x.size for x in values)
  fine = (plain >= count * float(finfo.tiny / finfo.eps)) & (plain < jnp.inf)
  return jax.lax.cond(fine | jnp.isnan(plain), lambda _: (jnp.sqrt(plain), plain), exact,
                      operands)


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
