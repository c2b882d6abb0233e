"""Tests of optaxplus.accumulation.multi_steps (pure optax; no Flax needed)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxplus import polyak
from optaxplus.accumulation import multi_steps
from tests.references import polyak as polyak_reference


def test_multi_steps_skips_non_finite_micro_batches_like_a_reference_without_them():
  k, micro_steps, c, cap, beta = 4, 200, 1.0, 10.0, 0.5
  nan_step, inf_value_step = 57, 130
  rng = np.random.default_rng(0)
  targets = {'a': rng.normal(1.0, 1.0, (micro_steps, 3)),
             'b': rng.normal(-1.0, 1.0, (micro_steps, 2, 2))}
  targets['b'][nan_step, 0, 1] = np.nan  # a NaN gradient and a NaN loss
  value_scale = np.ones(micro_steps)
  value_scale[inf_value_step] = np.inf  # a finite gradient, an infinite loss
  size = 7  # entries over both leaves

  def loss_fn(params, target):
    return 0.5 * sum(jnp.sum((params[n] - target[n]) ** 2) for n in params) / size

  tx = multi_steps(polyak.momsps(c=c, max_learning_rate=cap, momentum=beta),
                            every_k_schedule=k)

  @jax.jit
  def run(params, targets, value_scale):
    def body(carry, inputs):
      params, state = carry
      target, scale = inputs
      value, grads = jax.value_and_grad(loss_fn)(params, target)
      updates, state = tx.update(grads, state, params, value=value * scale)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(body, (params, tx.init(params)), (targets, value_scale))[0]

  params = {'a': jnp.zeros(3), 'b': jnp.zeros((2, 2))}
  params, state = run(params, jax.tree.map(jnp.asarray, targets), jnp.asarray(value_scale))

  # Float64 reference: MomSPS_max on the mean gradient and mean loss of each k valid
  # micro-batches, the two bad ones left out.
  good = [i for i in range(micro_steps) if i not in (nan_step, inf_value_step)]
  rule = polyak_reference.PolyakRule('max', c=c, momentum=beta, max_learning_rate=cap)
  x = {n: np.zeros(np.shape(p)) for n, p in params.items()}
  x_prev = dict(x)

  def mean_grad_and_loss(x, batch):
    grads = {n: np.mean([(x[n] - targets[n][i]) / size for i in batch], axis=0) for n in x}
    loss = np.mean([0.5 * sum(np.sum((x[n] - targets[n][i]) ** 2) for n in x) / size
                    for i in batch])
    return grads, loss

  for cycle in range(len(good) // k):
    grads, loss = mean_grad_and_loss(x, good[cycle * k:(cycle + 1) * k])
    gamma = rule(loss, polyak_reference.global_sq_norm(list(grads.values())))
    x, x_prev = {n: x[n] - gamma * grads[n] + beta * (x[n] - x_prev[n]) for n in x}, x
  assert len(good) // k == 49 and len(good) % k == 2
  chex.assert_trees_all_close(params, x, rtol=1e-4, atol=1e-6)
  assert int(state.multi_steps.gradient_step) == 49
  assert int(state.multi_steps.inner_opt_state[0].count) == 49  # the Polyak step's count
  assert int(state.multi_steps.mini_step) == 2
  assert int(state.num_skipped) == 2
  # The two valid micro-batches after the last update are accumulated, nothing else.
  pending_grads, pending_loss = mean_grad_and_loss(x, good[-2:])
  chex.assert_trees_all_close(state.multi_steps.acc_grads, pending_grads, rtol=1e-4,
                              atol=1e-6)
  np.testing.assert_allclose(state.value_mean, pending_loss, rtol=1e-4)


def test_multi_steps_checks_every_k_schedule():
  for bad, error in ((0, ValueError), (-2, ValueError), (jnp.array(0), ValueError),
                     (2.5, TypeError), (True, TypeError), (None, TypeError),
                     ('2', TypeError), ([2], TypeError)):
    with pytest.raises(error, match='every_k_schedule must be a whole number'):
      multi_steps(optax.sgd(0.1), bad)
  params = {'w': jnp.zeros(2)}
  grads = {'w': jnp.ones(2)}
  for every_k in (2, 2.0, np.int32(2), jnp.array(2), lambda step: 2):
    tx = multi_steps(optax.sgd(0.1), every_k)
    state = tx.init(params)
    moved = []
    for _ in range(4):
      updates, state = tx.update(grads, state, params)
      moved.append(float(updates['w'][0]))
    np.testing.assert_allclose(moved, [0.0, -0.1, 0.0, -0.1], rtol=1e-6)


def test_accumulates_complex_and_float64_gradients_at_their_precision():
  """optax.MultiSteps alone accumulates in float32: imaginary parts and f64 digits are lost."""
  tx = multi_steps(optax.sgd(1.0), every_k_schedule=2)
  params = {'z': jnp.zeros(2, jnp.complex64)}
  state = tx.init(params)
  for grads in ({'z': jnp.array([1 + 1j, 1 - 1j])}, {'z': jnp.array([1 + 1j, 1 - 1j])}):
    updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['z'], [-1 - 1j, -1 + 1j])
  with jax.enable_x64(True):
    params = {'x': jnp.zeros(1, jnp.float64)}
    state = tx.init(params)
    for g in (1.0 + 2e-12, 1.0):
      updates, state = tx.update({'x': jnp.array([g], jnp.float64)}, state, params)
    assert updates['x'].dtype == jnp.float64
    np.testing.assert_allclose(float(updates['x'][0]), -(1.0 + 1e-12), rtol=1e-15)


def test_every_k_under_inject_hyperparams():
  tx = optax.inject_hyperparams(multi_steps, static_args=('optimizer',))(
      optimizer=optax.sgd(1.0), every_k_schedule=2)
  params = {'x': jnp.zeros(1)}
  state = tx.init(params)
  emitted = []
  for _ in range(4):
    updates, state = jax.jit(tx.update)({'x': jnp.ones(1)}, state, params)
    emitted.append(float(updates['x'][0]))
  assert emitted == [0.0, -1.0, 0.0, -1.0]
