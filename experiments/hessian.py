"""Flatness probe: the top Hessian eigenvalue by power iteration with Hessian-vector products.

The Hessian-vector product is forward-over-reverse, ``jax.jvp(jax.grad(f), (x,), (v,))``,
so the Hessian is never formed. Power iteration converges to the eigenvalue of largest
magnitude; we report its Rayleigh quotient ``v^T H v`` (signed), which for trained networks
is the sharpness ``lambda_max`` of the SAM literature.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax


def hvp(loss_fn: Callable[..., jax.Array], params, vector, *args):
  """Hessian of ``loss_fn(params, *args)`` in ``params``, times ``vector`` (same structure)."""
  return jax.jvp(lambda p: jax.grad(loss_fn)(p, *args), (params,), (vector,))[1]


@functools.lru_cache(maxsize=16)
def _power_step(loss_fn):
  """One jitted power-iteration step for ``loss_fn`` (cached: compiled once per loss)."""

  @jax.jit
  def step(v, params, *args):
    v = optax.tree.scale(1.0 / (optax.tree.norm(v) + 1e-12), v)
    hv = hvp(loss_fn, params, jax.tree.map(lambda a, p: a.astype(p.dtype), v, params), *args)
    hv = jax.tree.map(lambda a: a.astype(jnp.float32), hv)
    return hv, optax.tree.vdot(v, hv)

  return step


def top_hessian_eigenvalue(loss_fn: Callable[..., jax.Array], params, *args,
                           num_iterations: int = 50, tol: float = 1e-4,
                           seed: int = 0) -> tuple[float, int]:
  """Largest-magnitude eigenvalue of the Hessian of ``loss_fn`` at ``params``.

  Args:
    loss_fn: ``loss_fn(params, *args)``, a deterministic scalar (a fixed batch, BatchNorm
      in evaluation mode).
    params: the point where the Hessian is taken.
    *args: the other arguments of ``loss_fn`` (e.g. model state and batch); passed as
      jit arguments, not baked in as constants, so the compiled HVP is reused.
    num_iterations: maximum power iterations (one HVP each).
    tol: stop when the Rayleigh quotient changes by less than ``tol`` relative.
    seed: seed of the random start vector.

  Returns:
    ``(eigenvalue, iterations_used)``; the eigenvalue is the Rayleigh quotient
    ``v^T H v`` of the final unit vector ``v``, computed in float32.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  vector = jax.tree.unflatten(treedef, [
      jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves)])

  step = _power_step(loss_fn)
  eigenvalue = None
  for i in range(1, num_iterations + 1):
    vector, new = step(vector, params, *args)
    new = float(new)
    if eigenvalue is not None and abs(new - eigenvalue) <= tol * max(abs(new), 1e-12):
      return new, i
    eigenvalue = new
  return eigenvalue, num_iterations
