"""Tests of optaxplus.sharpness against the float64 NumPy transcription in tests/references/sharpness.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxplus import polyak
from optaxplus.sharpness import asam, sam, sam_perturbation, unified_sam, usam
from tests.references import sharpness as reference

SIZES = (4, 8, 8, 2)
STEPS = 20
BATCH = 16
LR = 0.1


def _problem():
  rng = np.random.default_rng(0)
  flat = reference.mlp_init(rng, SIZES)
  xs = rng.normal(size=(STEPS, BATCH, SIZES[0])).astype(np.float32)
  ys = rng.normal(size=(STEPS, BATCH, SIZES[-1])).astype(np.float32)
  return {n: v.astype(np.float32) for n, v in flat.items()}, xs, ys


FLAT_PARAMS, XS, YS = _problem()


def nested(flat, dtype=jnp.float32):
  """Flat reference dict -> the library's pytree, with an empty subtree."""
  layers = {f'layer{i}': {'w': jnp.asarray(flat[f'w{i}'], dtype),
                          'b': jnp.asarray(flat[f'b{i}'], dtype)}
            for i in range(1, len(SIZES))}
  return {**layers, 'frozen': {}}


def flatten(tree):
  return {f'{k}{i}': np.asarray(tree[f'layer{i}'][k], np.float64)
          for i in range(1, len(SIZES)) for k in ('w', 'b')}


def loss_fn(params, x, y):
  h = x
  for i in range(1, len(SIZES)):
    layer = params[f'layer{i}']
    z = h @ layer['w'].astype(jnp.float32) + layer['b'].astype(jnp.float32)
    h = jnp.tanh(z) if i < len(SIZES) - 1 else z
  return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, axis=-1))


def reference_grad_fn(params, step, shard=0):
  del shard
  return reference.mlp_loss_and_grad(params, XS[step].astype(np.float64),
                                     YS[step].astype(np.float64))


def train(tx, steps=STEPS, *, params=None, dtype=jnp.float32, jit=True, value=False,
          state=None, first_step=0):
  """Runs ``steps`` updates of ``tx`` on the MLP; returns (params, state)."""
  params = nested(FLAT_PARAMS, dtype) if params is None else params
  state = tx.init(params) if state is None else state

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, x, y).astype(dtype))(params)
    extra = {'value': loss} if value else {}
    updates, state = tx.update(
        grads, state, params, grad_fn=lambda p: jax.grad(loss_fn)(p, x, y), **extra)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  for i in range(first_step, first_step + steps):
    params, state = step(params, state, XS[i], YS[i])
  return params, state


def assert_close_to_reference(params, expected, rtol=2e-4, atol=2e-5):
  chex.assert_trees_all_close(flatten(params), expected, rtol=rtol, atol=atol)


# The float64 reference, 20 steps ------------------------------------------------------

LAMS = [0.0, 0.5, 1.0, '1/t', '1-1/t']


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('lam', LAMS)
def test_matches_reference_with_sgd_momentum(lam, adaptive):
  rho = 0.5 if adaptive else 0.1
  params, _ = train(unified_sam(optax.sgd(LR, momentum=0.9), rho, lam, adaptive=adaptive))
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9),
                           STEPS, rho=rho, lam=lam, adaptive=adaptive)
  assert_close_to_reference(params, expected)


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('lam', LAMS)
def test_matches_reference_with_adam(lam, adaptive):
  rho = 0.5 if adaptive else 0.1
  params, _ = train(unified_sam(optax.adam(1e-2), rho, lam, adaptive=adaptive))
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.Adam(1e-2), STEPS,
                           rho=rho, lam=lam, adaptive=adaptive)
  assert_close_to_reference(params, expected)


def test_reference_runs_are_distinguishable():
  # Guards the tests above: the λ values must give visibly different trajectories.
  base = lambda: reference.SGDMomentum(LR, 0.9)
  runs = [reference.run(FLAT_PARAMS, reference_grad_fn, base(), STEPS, rho=0.1, lam=lam)
          for lam in LAMS]
  for i in range(len(runs)):
    for j in range(i):
      assert max(np.max(np.abs(runs[i][n] - runs[j][n])) for n in runs[i]) > 1e-3


# Special cases ------------------------------------------------------------------------

@pytest.mark.parametrize('base', [optax.sgd(LR, momentum=0.9), optax.adam(1e-2)],
                         ids=['sgd_momentum', 'adam'])
@pytest.mark.parametrize('adaptive', [False, True])
def test_rho_zero_is_the_base_optimizer_exactly(base, adaptive):
  params, state = train(unified_sam(base, rho=0.0, lam=0.5, adaptive=adaptive))
  expected_params, expected_state = train(base)
  chex.assert_trees_all_equal(params, expected_params)
  chex.assert_trees_all_equal(state.base_state, expected_state)


@pytest.mark.parametrize('name', ['sam', 'usam', 'asam'])
def test_named_cases_match_the_textbook_perturbations(name):
  rho, eta = (0.5, 0.01) if name == 'asam' else (0.1, None)
  tx = {'sam': lambda: sam(optax.sgd(LR), rho),
        'usam': lambda: usam(optax.sgd(LR), rho),
        'asam': lambda: asam(optax.sgd(LR), rho, eta)}[name]()
  params, _ = train(tx, steps=1)
  start = reference.as_float64(FLAT_PARAMS)
  _, g = reference_grad_fn(start, 0)
  e = {'sam': lambda: reference.textbook_sam(g, rho),
       'usam': lambda: reference.textbook_usam(g, rho),
       'asam': lambda: reference.textbook_asam(g, start, rho, eta)}[name]()
  _, g_sam = reference_grad_fn({n: start[n] + e[n] for n in start}, 0)
  expected = {n: start[n] - LR * g_sam[n] for n in start}
  chex.assert_trees_all_close(flatten(params), expected, rtol=1e-6, atol=1e-6)


def test_lam_schedules_and_callables_count_sam_steps_from_one():
  grads = {'w': jnp.array([3.0, 4.0])}  # ‖g‖ = 5
  expected_lams = {'1/t': [1.0, 1 / 2, 1 / 3], '1-1/t': [0.0, 1 / 2, 2 / 3]}
  for lam, lams in expected_lams.items():
    tx = sam_perturbation(rho=0.1, lam=lam)
    state = tx.init(grads)
    for expected_lam in lams:
      e, state = tx.update(grads, state)
      coefficient = 0.1 * (1 - expected_lam + expected_lam / 5)
      chex.assert_trees_all_close(e, {'w': coefficient * grads['w']}, rtol=1e-6)
  # Callables see the count from 0, like optax schedules.
  tx = sam_perturbation(rho=optax.piecewise_constant_schedule(0.1, {1: 2.0}),
                            lam=lambda count: jnp.where(count == 0, 1.0, 0.0))
  e1, state = tx.update(grads, tx.init(grads))
  e2, state = tx.update(grads, state)
  chex.assert_trees_all_close(e1['w'], 0.1 * grads['w'] / 5, rtol=1e-6)
  chex.assert_trees_all_close(e2['w'], 0.2 * grads['w'], rtol=1e-6)
  assert int(state.count) == 2


# Composition --------------------------------------------------------------------------

def test_clipping_and_weight_decay_inside_the_base_act_at_params():
  base = optax.chain(optax.clip_by_global_norm(0.3), optax.add_decayed_weights(1e-2),
                     optax.sgd(LR, momentum=0.9))
  params, _ = train(unified_sam(base, 0.1, 0.5))
  expected = reference.run(
      FLAT_PARAMS, reference_grad_fn,
      reference.SGDMomentum(LR, 0.9, weight_decay=1e-2, clip_norm=0.3), STEPS,
      rho=0.1, lam=0.5)
  assert_close_to_reference(params, expected)


def test_chained_after_clipping_perturbs_with_the_clipped_gradient():
  tx = optax.chain(optax.clip_by_global_norm(0.05), usam(optax.sgd(LR), 1.0))
  params, _ = train(tx, steps=1, value=True)  # value= must pass through chain and SAM.
  start = reference.as_float64(FLAT_PARAMS)
  _, g = reference_grad_fn(start, 0)
  clipped = {n: v * 0.05 / reference.global_norm(g) for n, v in g.items()}
  _, g_sam = reference_grad_fn({n: start[n] + clipped[n] for n in start}, 0)
  expected = {n: start[n] - LR * g_sam[n] for n in start}
  chex.assert_trees_all_close(flatten(params), expected, rtol=1e-5, atol=1e-6)


def test_inject_hyperparams_changes_rho_midway():
  tx = optax.inject_hyperparams(unified_sam)(
      base_optimizer=optax.sgd(LR, momentum=0.9), rho=0.05, lam='1-1/t', every_k=2)
  params, state = train(tx, steps=10)
  state.hyperparams['rho'] = jnp.asarray(0.3)
  params, state = train(tx, steps=10, params=params, state=state, first_step=10)
  # SAM steps are the even steps: t = 1..5 before the change, 6..10 after it.
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9),
                           STEPS, rho=lambda t: 0.05 if t <= 5 else 0.3, lam='1-1/t',
                           every_k=2)
  assert_close_to_reference(params, expected)


def test_momsps_receives_value_and_the_sam_gradient():
  tx = unified_sam(polyak.momsps(c=0.5, max_learning_rate=1.0, momentum=0.9), 0.1, 0.5)
  params, _ = train(tx, value=True)
  expected = reference.run(FLAT_PARAMS, reference_grad_fn,
                           reference.MomSPSMax(c=0.5, max_learning_rate=1.0, momentum=0.9),
                           STEPS, rho=0.1, lam=0.5)
  assert_close_to_reference(params, expected)


def test_every_k_runs_grad_fn_only_on_sam_steps():
  calls = []
  tx = unified_sam(optax.sgd(LR, momentum=0.9), 0.1, '1/t', every_k=3)
  state = tx.init(nested(FLAT_PARAMS))

  @jax.jit
  def step(params, state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)

    def grad_fn(p):
      jax.debug.callback(lambda: calls.append(1))
      return jax.grad(loss_fn)(p, x, y)

    updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  params = nested(FLAT_PARAMS)
  for i in range(STEPS):
    params, state = step(params, state, XS[i], YS[i])
  jax.effects_barrier()
  assert len(calls) == 7  # steps 0, 3, ..., 18
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9),
                           STEPS, rho=0.1, lam='1/t', every_k=3)
  assert_close_to_reference(params, expected)


class TestJitAndNoJit(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_update_matches_reference(self):
    tx = unified_sam(optax.sgd(LR, momentum=0.9), 0.1, '1-1/t', every_k=2)
    params = nested(FLAT_PARAMS)
    x, y = XS[0], YS[0]

    @self.variant
    def update(params, state):
      grads = jax.grad(loss_fn)(params, x, y)
      return tx.update(grads, state, params, grad_fn=lambda p: jax.grad(loss_fn)(p, x, y))

    state = tx.init(params)
    for _ in range(3):
      updates, state = update(params, state)
      params = optax.apply_updates(params, updates)
    grad_fn = lambda p, step, shard=0: reference_grad_fn(p, 0)
    expected = reference.run(FLAT_PARAMS, grad_fn, reference.SGDMomentum(LR, 0.9), 3,
                             rho=0.1, lam='1-1/t', every_k=2)
    assert_close_to_reference(params, expected, rtol=1e-5, atol=1e-6)


# Dtypes -------------------------------------------------------------------------------

def test_bfloat16_params_keep_their_dtype_and_follow_float32():
  base = optax.sgd(LR, momentum=0.9, accumulator_dtype=jnp.bfloat16)
  tx = unified_sam(base, 0.1, 0.5)
  params, state = train(tx, steps=5, dtype=jnp.bfloat16)
  chex.assert_trees_all_equal_dtypes(params, nested(FLAT_PARAMS, jnp.bfloat16))
  chex.assert_tree_all_finite(params)
  assert state.count.dtype == jnp.int32
  expected, _ = train(tx, steps=5)
  chex.assert_trees_all_close(jax.tree.map(lambda p: p.astype(jnp.float32), params),
                              expected, rtol=5e-2, atol=5e-2)


def test_norm_is_taken_in_float32_for_half_precision():
  # 300² overflows float16 (max 65504); a norm taken in float16 would be inf.
  grads = {'a': jnp.full((4,), 300.0, jnp.float16), 'b': jnp.full((4,), 300.0, jnp.bfloat16)}
  tx = sam_perturbation(rho=1.0)
  e, _ = tx.update(grads, tx.init(grads))
  chex.assert_trees_all_equal_dtypes(e, grads)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x.astype(jnp.float32), e),
                              {'a': jnp.full((4,), 1 / np.sqrt(8)),
                               'b': jnp.full((4,), 1 / np.sqrt(8))}, rtol=1e-2)


# Edge cases ---------------------------------------------------------------------------

@pytest.mark.parametrize('lam', LAMS)
@pytest.mark.parametrize('adaptive', [False, True])
def test_zero_gradient_gives_zero_perturbation(lam, adaptive):
  params = nested(FLAT_PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = sam_perturbation(rho=0.1, lam=lam, adaptive=adaptive)
  e, _ = tx.update(zeros, tx.init(params), params)
  chex.assert_trees_all_equal(e, zeros)
  updates, _ = unified_sam(optax.sgd(LR), 0.1, lam, adaptive=adaptive).update(
      zeros, unified_sam(optax.sgd(LR)).init(params), params, grad_fn=lambda p: zeros)
  chex.assert_trees_all_equal(updates, zeros)


def test_zero_gradient_with_float16_hyperparameters_gives_zero_perturbation():
  # inject_hyperparams casts ε = 1e-12 to the params' float16, where it is 0.
  params = {'w': jnp.ones((2, 2), jnp.float16)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = optax.inject_hyperparams(sam_perturbation)(rho=0.1, lam=0.5)
  state = tx.init(params)
  assert state.hyperparams['eps'] == 0
  e, _ = tx.update(zeros, state, params)
  chex.assert_trees_all_equal(e, zeros)


def test_nan_gradient_gives_zero_perturbation_and_the_base_gets_grad_fn_at_params():
  params = nested(FLAT_PARAMS)
  nan_grads = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
  seen = []

  def grad_fn(p):  # the gradient of ½‖p‖²: p itself
    seen.append(p)
    return p

  tx = unified_sam(optax.sgd(LR), rho=0.1)
  updates, _ = tx.update(nan_grads, tx.init(params), params, grad_fn=grad_fn)
  chex.assert_trees_all_equal(seen[0], params)  # the second pass ran at params exactly
  chex.assert_trees_all_close(updates, jax.tree.map(lambda p: -LR * p, params))


def test_apply_if_finite_base_skips_a_nan_sam_gradient():
  params = nested(FLAT_PARAMS)
  grads = jax.tree.map(jnp.ones_like, params)
  nan_grad_fn = lambda p: jax.tree.map(lambda x: x * jnp.nan, p)
  tx = unified_sam(optax.apply_if_finite(optax.sgd(LR), max_consecutive_errors=3), 0.1)
  updates, state = tx.update(grads, tx.init(params), params, grad_fn=nan_grad_fn)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
  assert int(state.base_state.total_notfinite) == 1


def test_state_adds_one_scalar_to_the_base_state():
  params = nested(FLAT_PARAMS)
  base = optax.sgd(LR, momentum=0.9)
  state = unified_sam(base, 0.1).init(params)
  extra = optax.tree.size(state) - optax.tree.size(base.init(params))
  assert extra == 1
  chex.assert_trees_all_equal(state.base_state, base.init(params))
  assert optax.tree.size(sam_perturbation(0.1).init(params)) == 1
  # optax.contrib.sam (transparent mode) keeps a full copy of the params (METHODS.md §5).
  contrib = optax.contrib.sam(base, optax.sgd(0.1))
  assert optax.tree.size(contrib.init(params)) >= 2 * optax.tree.size(params)


def test_empty_subtree_passes_through():
  params, _ = train(asam(optax.adam(1e-2)), steps=2)
  assert params['frozen'] == {}
  chex.assert_tree_all_finite(params)


# Bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, match', [
    (dict(rho=-0.1), 'rho must be in'),
    (dict(lam=1.5), 'lam must be in'),
    (dict(lam=-0.1), 'lam must be in'),
    (dict(lam='1/t^2'), "lam must be a number in .*'1-1/t', '1/t'"),
    (dict(eta=-1.0), 'eta must be in'),
    (dict(eps=0.0), 'eps must be in'),
    (dict(every_k=0), 'every_k must be an integer >= 1'),
    (dict(every_k=2.5), 'every_k must be an integer >= 1'),
])
def test_bad_hyperparameters_raise_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    unified_sam(optax.sgd(LR), **kwargs)


def test_missing_grad_fn_explains_the_call():
  params = nested(FLAT_PARAMS)
  tx = unified_sam(optax.sgd(LR))
  with pytest.raises(TypeError, match=r'grad_fn=lambda p: jax.grad\(loss\)\(p, batch\)'):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match='needs params'):
    tx.update(params, tx.init(params), grad_fn=lambda p: p)


def test_grad_fn_with_aux_is_accepted_and_a_wrong_tree_is_rejected():
  params = nested(FLAT_PARAMS)
  tx = unified_sam(optax.sgd(LR))
  state = tx.init(params)
  plain, _ = tx.update(params, state, params, grad_fn=lambda p: p)
  with_aux, _ = tx.update(params, state, params, grad_fn=lambda p: (p, {'stats': 1.0}))
  chex.assert_trees_all_equal(plain, with_aux)
  with pytest.raises(ValueError, match='structure of the incoming gradients'):
    tx.update(params, state, params, grad_fn=lambda p: p['layer1'])
  with pytest.raises(ValueError, match='shape'):
    tx.update(params, state, params, grad_fn=lambda p: jax.tree.map(lambda x: x[None], p))


# optax.contrib.sam's defects (METHODS.md §5), and that ours does not have them ---------

def test_contrib_sam_rejects_value_where_ours_passes_it():
  params = nested(FLAT_PARAMS)
  grads = jax.tree.map(jnp.ones_like, params)
  contrib = optax.contrib.sam(optax.sgd(LR), optax.chain(optax.contrib.normalize(),
                                                         optax.sgd(0.1)), opaque_mode=True)
  with pytest.raises(TypeError):
    contrib.update(grads, contrib.init(params), params, grad_fn=lambda p, _: p, value=1.0)
  tx = sam(polyak.sps(), 0.1)
  updates, _ = tx.update(grads, tx.init(params), params, grad_fn=lambda p: p, value=1.0)
  chex.assert_tree_all_finite(updates)


def test_contrib_sam_turns_a_zero_gradient_into_nan_where_ours_does_not():
  params = nested(FLAT_PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, params)
  contrib = optax.contrib.sam(optax.sgd(LR), optax.chain(optax.contrib.normalize(),
                                                         optax.sgd(0.1)), opaque_mode=True)
  updates, _ = contrib.update(zeros, contrib.init(params), params, grad_fn=lambda p, _: p)
  assert not all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  tx = sam(optax.sgd(LR), 0.1)
  updates, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: p)
  chex.assert_tree_all_finite(updates)


def test_contrib_sam_sync_period_one_is_broken_where_every_k_one_is_plain_sam():
  # Transparent mode, sync_period=1: every call is an outer step, yet each update is
  # measured from the cached first parameters, so updates do not accumulate.
  params0 = {'w': jnp.array([1.0, -2.0])}
  grad_fn = lambda p: p  # gradient of ½‖p‖²
  contrib = optax.contrib.sam(optax.sgd(LR), optax.sgd(0.0), sync_period=1)
  params, state = params0, contrib.init(params0)
  for _ in range(3):
    updates, state = contrib.update(grad_fn(params), state, params)
    params = optax.apply_updates(params, updates)
  plain_sgd = jax.tree.map(lambda p: p * (1 - LR) ** 3, params0)
  assert not np.allclose(params['w'], plain_sgd['w'])
  tx = unified_sam(optax.sgd(LR), rho=0.0, every_k=1)
  params, state = params0, tx.init(params0)
  for _ in range(3):
    updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_close(params, plain_sgd, rtol=1e-6)
