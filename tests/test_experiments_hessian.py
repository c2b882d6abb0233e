"""The flatness probe: power iteration with HVPs against known top eigenvalues."""

import jax
import jax.flatten_util  # pylint: disable=unused-import
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import hessian


def _symmetric(eigenvalues, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
  return (q * np.asarray(eigenvalues)) @ q.T


@pytest.mark.parametrize("eigenvalues", [
    (7.0, 3.0, 1.0, 0.5, -0.2, 0.0),
    (-9.0, 4.0, 2.0, 1.0),  # the largest magnitude is negative: the probe keeps the sign
])
def test_quadratic_with_known_spectrum(eigenvalues):
  a = jnp.asarray(_symmetric(eigenvalues), jnp.float32)
  n = len(eigenvalues)
  # Split the variable over two leaves of a pytree; the Hessian is block-structured by a.
  loss = lambda p, a: 0.5 * jnp.concatenate([p["u"], p["v"]]) @ a @ jnp.concatenate(
      [p["u"], p["v"]])
  params = {"u": jnp.ones(2), "v": jnp.ones(n - 2)}
  value, iterations = hessian.top_hessian_eigenvalue(loss, params, a, num_iterations=300,
                                                     tol=1e-7)
  top = max(eigenvalues, key=abs)
  np.testing.assert_allclose(value, top, rtol=1e-3)
  assert iterations < 300


def test_hvp_matches_the_full_hessian_of_a_small_network():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(16,)), jnp.float32)
  params = {"w1": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  loss = lambda p, x, y: jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  full = np.asarray(jax.hessian(lambda f: loss(unravel(f), x, y))(flat), np.float64)
  v = rng.normal(size=flat.shape)
  hv = hessian.hvp(loss, params, unravel(jnp.asarray(v, jnp.float32)), x, y)
  np.testing.assert_allclose(jax.flatten_util.ravel_pytree(hv)[0], full @ v, rtol=1e-4,
                             atol=1e-5)
  eigenvalues = np.linalg.eigvalsh(full)
  top = eigenvalues[np.argmax(np.abs(eigenvalues))]
  value, _ = hessian.top_hessian_eigenvalue(loss, params, x, y, num_iterations=500,
                                            tol=1e-8)
  np.testing.assert_allclose(value, top, rtol=1e-3)
