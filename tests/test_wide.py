"""Tests of optaxplus._wide.global_norm against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optaxplus import _wide
from optaxplus._wide import global_norm


def numpy_norm(tree) -> float:
  """‖x‖ in float64 NumPy, scaled by hand so that it cannot under/overflow."""
  leaves = [np.asarray(x).astype(np.complex128).ravel() for x in jax.tree.leaves(tree)]
  flat = np.concatenate(leaves) if leaves else np.zeros(0)
  scale = np.max(np.abs(flat), initial=0.0)
  return 0.0 if scale == 0 else float(scale * np.sqrt(np.sum(np.abs(flat / scale) ** 2)))


def tree_at(magnitude: float, dtype=jnp.float32):
  rng = np.random.RandomState(0)
  return {'w': jnp.asarray(rng.randn(5, 3) * magnitude, dtype),
          'inner': {'b': jnp.asarray(rng.randn(3) * magnitude, dtype), 'empty': {}},
          'scalar': jnp.asarray(magnitude, dtype)}


@pytest.mark.parametrize('magnitude', [1e-30, 1e-20, 1e-3, 1.0, 1e3, 1e20, 1e30])
@pytest.mark.parametrize('use_jit', [False, True])
def test_exact_over_the_float32_range(magnitude, use_jit):
  tree = tree_at(magnitude)
  norm_fn = jax.jit(global_norm) if use_jit else global_norm
  norm = norm_fn(tree)
  assert norm.dtype == jnp.float32
  np.testing.assert_allclose(float(norm), numpy_norm(tree), rtol=1e-6)


@pytest.mark.parametrize('magnitude', [1e-18, 1.0, 1e18])
def test_squared(magnitude):
  tree = tree_at(magnitude)
  np.testing.assert_allclose(float(global_norm(tree, squared=True)), numpy_norm(tree) ** 2,
                             rtol=1e-6)


def test_low_precision_leaves_sum_in_float32():
  # A bf16 sum of 65536 ones stalls at 256; float32 is exact.
  tree = {'a': jnp.ones(65536, jnp.bfloat16), 'b': jnp.ones(3, jnp.float16)}
  assert float(global_norm(tree, squared=True)) == 65539.0
  assert global_norm(tree).dtype == jnp.float32


def test_complex_leaves_count_modulus():
  tree = {'z': jnp.array([1 + 1j, 2 - 1j, -3j], jnp.complex64), 'x': jnp.array([2.0])}
  np.testing.assert_allclose(float(global_norm(tree, squared=True)), 2 + 5 + 9 + 4, rtol=1e-7)


def test_float64_params_give_float64_norm():
  with jax.enable_x64(True):
    for magnitude in (1e-200, 1.0, 1e200):
      tree = tree_at(magnitude, jnp.float64)
      norm = global_norm(tree)
      assert norm.dtype == jnp.float64
      np.testing.assert_allclose(float(norm), numpy_norm(tree), rtol=1e-14)


def test_zero_empty_and_non_finite():
  assert float(global_norm({'a': jnp.zeros(3)})) == 0.0
  assert float(global_norm({})) == 0.0
  assert np.isnan(float(global_norm({'a': jnp.array([1.0, jnp.nan])})))
  assert not np.isfinite(float(global_norm({'a': jnp.array([1.0, jnp.inf])})))


def test_gradient_is_x_over_norm_also_for_tiny_trees():
  for x in (jnp.array([3.0, 4.0]), jnp.array([3e-30, 4e-30])):
    np.testing.assert_allclose(jax.grad(lambda v: global_norm({'a': v}))(x), [0.6, 0.8],
                               rtol=1e-6)
  assert np.all(jax.grad(lambda v: global_norm({'a': v}))(jnp.zeros(2)) == 0)


@pytest.mark.parametrize('magnitude', [1e-30, 1e-20, 1e-3, 1.0, 1e20, 1e30])
def test_the_one_pass_sums_are_exact_at_every_scale(magnitude):
  """``_one_pass`` (the norm on GPU and TPU; on CPU only outside the plain sum's range)."""
  tree = tree_at(magnitude)
  norm, squared = jax.jit(_wide._one_pass)(jax.tree.leaves(tree))
  np.testing.assert_allclose(float(norm), numpy_norm(tree), rtol=1e-6)
  if 1e-18 < magnitude < 1e18:
    np.testing.assert_allclose(float(squared), numpy_norm(tree) ** 2, rtol=1e-6)


def _passes(fn, tree) -> float:
  tree_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  cost = jax.jit(fn).lower(tree).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return cost['bytes accessed'] / tree_bytes


def test_one_read_of_the_tree_plus_the_cpu_fallback_branch():
  """One pass computes the three sums; on CPU the plain sum reads once and the compiled
  program also counts the fallback branch's read (which runs only out of range)."""
  tree = {'a': jnp.ones((512, 512)), 'b': jnp.ones((256, 1024), jnp.bfloat16)}
  assert _passes(lambda t: _wide._one_pass(jax.tree.leaves(t)), tree) < 1.01
  assert _passes(global_norm, tree) < 2.01


def test_near_the_float32_maximum():
  tree = {'a': jnp.array([3e38, 1e38])}
  np.testing.assert_allclose(float(global_norm(tree)), numpy_norm(tree), rtol=1e-6)


def test_no_intermediate_infinity_for_ordinary_trees():
  """``jax_debug_infs`` raises on any inf, also in the unused scaled sums."""
  with jax.debug_infs(True):
    for tree in (tree_at(1.0), tree_at(1e3), {'a': jnp.full((100, 100), 10.0)}):
      np.testing.assert_allclose(float(jax.jit(global_norm)(tree)), numpy_norm(tree), rtol=1e-6)


def test_abstract_leaves_give_the_dtype():
  from optaxplus._wide import tree_wide_dtype
  assert tree_wide_dtype({'a': jax.ShapeDtypeStruct((2,), jnp.bfloat16)}) == jnp.float32
  assert jax.eval_shape(global_norm, tree_at(1.0)).dtype == jnp.float32


def test_eager_calls_compile_once_per_tree_shape():
  jitted = _wide._norm_and_sum_of_squares.fun
  before = jitted._cache_size()
  for value in (1.0, 2.0, 1e-30):
    global_norm({'a': jnp.full(3, value), 'b': jnp.full((2, 2), value)})
  assert jitted._cache_size() == before + 1


def _scaled_difference(a, b, s):
  return s * (a - b)


@pytest.mark.parametrize('magnitude', [1e-30, 1e-20, 1.0, 1e20, 1e30])
def test_norm_of_computed_values_is_exact_at_every_scale(magnitude):
  """``global_norm_of`` = ``global_norm`` of the materialised map, also where the plain sum
  under/overflows (its fallback recomputes the values from the operands)."""
  x, y = tree_at(magnitude), tree_at(-2 * magnitude)
  scale = jnp.float32(0.5)
  want = numpy_norm(jax.tree.map(lambda a, b: 0.5 * (np.asarray(a, np.float64) - b), x, y))
  got = _wide.global_norm_of(_scaled_difference, (x, y), (scale,))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  np.testing.assert_allclose(float(jax.jit(lambda x, y: _wide.global_norm_of(
      _scaled_difference, (x, y), (scale,)))(x, y)), want, rtol=1e-6)


def test_norm_of_computed_values_holds_no_buffer_of_them():
  """The values (here a - b) are recomputed in the sum and in the fallback: the compiled
  program reads a and b in the plain sum and again in the fallback branch, and keeps no
  temporary of their size."""
  a, b = jnp.ones((512, 512)), jnp.full((512, 512), 3.0)
  compiled = jax.jit(lambda a, b: _wide.global_norm_of(
      _scaled_difference, (a, b), (jnp.float32(1.0),))).lower(a, b).compile()
  tree_bytes = a.nbytes
  assert compiled.cost_analysis()['bytes accessed'] / tree_bytes < 4.01
  assert compiled.memory_analysis().temp_size_in_bytes < tree_bytes / 100


def test_norm_of_computed_values_compiles_once_per_function_and_shapes():
  before = _wide._norms_of_mapped._cache_size()
  for value in (1.0, 2.0, 1e-30):
    _wide.global_norm_of(_scaled_difference, ({'a': jnp.full(3, value)},
                                               {'a': jnp.zeros(3)}), (jnp.float32(value),))
  assert _wide._norms_of_mapped._cache_size() == before + 1
