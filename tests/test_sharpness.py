"""Tests of optaxplus.sharpness against the float64 NumPy transcription in
tests/references/sharpness.py."""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxplus import polyak
from optaxplus.sharpness import asam, sam, sam_perturbation, unified_sam, usam
from tests.jaxprs import primitives_in_conds
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


@functools.lru_cache(maxsize=None)
def training_step(tx, dtype, jit, value):
  """One update of ``tx`` on the MLP, compiled once per (tx, dtype, jit, value)."""

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, x, y).astype(dtype))(params)
    extra = {'value': loss} if value else {}
    updates, state = tx.update(
        grads, state, params, grad_fn=lambda p: jax.grad(loss_fn)(p, x, y), **extra)
    return optax.apply_updates(params, updates), state

  return jax.jit(step) if jit else step


def train(tx, steps=STEPS, *, params=None, dtype=jnp.float32, jit=True, value=False,
          state=None, first_step=0):
  """Runs ``steps`` updates of ``tx`` on the MLP; returns (params, state)."""
  params = nested(FLAT_PARAMS, dtype) if params is None else params
  state = tx.init(params) if state is None else state
  step = training_step(tx, dtype, jit, value)
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


def test_axis_name_tuple_perturbs_per_shard_under_nested_vmap():
  # Four shards on a 2 x 2 grid of vmapped axes: each perturbs with its own gradient, the
  # SAM gradients are averaged over both axes (m-sharpness, m = BATCH / 4).
  tx = unified_sam(optax.sgd(LR, momentum=0.9), 0.1, '1-1/t', axis_name=('outer', 'inner'))

  def shard_step(params, state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params,
                               grad_fn=lambda p: jax.grad(loss_fn)(p, x, y))
    return optax.apply_updates(params, updates), state

  inner = jax.vmap(shard_step, in_axes=(None, None, 0, 0), axis_name='inner')
  step = jax.jit(jax.vmap(inner, in_axes=(None, None, 0, 0), axis_name='outer'))
  params = nested(FLAT_PARAMS)
  state = tx.init(params)
  grid = lambda a: a.reshape(2, 2, BATCH // 4, *a.shape[1:])
  for i in range(3):
    params, state = step(params, state, grid(XS[i]), grid(YS[i]))
    for leaf in jax.tree.leaves(params):  # every shard holds the same parameters
      np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0, 0], leaf.shape))
    params, state = jax.tree.map(lambda x: x[0, 0], (params, state))

  def shard_grad_fn(params, step, shard):
    rows = slice(shard * (BATCH // 4), (shard + 1) * (BATCH // 4))
    return reference.mlp_loss_and_grad(params, XS[step, rows].astype(np.float64),
                                       YS[step, rows].astype(np.float64))

  expected = reference.run(FLAT_PARAMS, shard_grad_fn, reference.SGDMomentum(LR, 0.9), 3,
                           rho=0.1, lam='1-1/t', shards=4)
  assert_close_to_reference(params, expected, rtol=1e-5, atol=1e-6)
  global_ = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9), 3,
                          rho=0.1, lam='1-1/t')
  assert max(np.max(np.abs(expected[n] - global_[n])) for n in expected) > 1e-4


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


def test_static_sam_step_matches_the_cond_schedule_without_a_cond():
  """sam_step fixed at trace time: two compiled steps, neither with a conditional."""
  tx = unified_sam(optax.sgd(LR, momentum=0.9), 0.1, '1/t', every_k=3)

  def step(params, state, x, y, sam_step):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params, sam_step=sam_step,
                               grad_fn=lambda p: jax.grad(loss_fn)(p, x, y))
    return optax.apply_updates(params, updates), state

  params = nested(FLAT_PARAMS)
  state = tx.init(params)
  for sam_step in (True, False):
    jaxpr = jax.make_jaxpr(step, static_argnums=4)(params, state, XS[0], YS[0], sam_step)
    # No gradient inside a conditional (a norm's out-of-range fallback may be one).
    assert 'dot_general' not in primitives_in_conds(jaxpr)
  jitted = jax.jit(step, static_argnames='sam_step')
  for i in range(STEPS):
    params, state = jitted(params, state, XS[i], YS[i], sam_step=i % 3 == 0)
  assert jitted._cache_size() == 2
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9),
                           STEPS, rho=0.1, lam='1/t', every_k=3)
  assert_close_to_reference(params, expected)


@pytest.mark.parametrize('sam_step', [1, np.True_, jnp.array(True), 'yes'])
def test_sam_step_must_be_a_python_bool(sam_step):
  tx = unified_sam(optax.sgd(LR), every_k=2)
  params = nested(FLAT_PARAMS)
  with pytest.raises(TypeError, match='sam_step must be True, False or None'):
    tx.update(params, tx.init(params), params, grad_fn=lambda p: p, sam_step=sam_step)


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


# optax.inject_hyperparams ----------------------------------------------------------

INJECTED = {
    'sam': (sam, {'rho', 'eps', 'every_k'}),
    'usam': (usam, {'rho', 'eta', 'every_k'}),
    'asam': (asam, {'rho', 'eta', 'eps', 'every_k'}),
    'unified_sam': (unified_sam, {'rho', 'lam', 'eta', 'eps', 'every_k'}),
}


@pytest.mark.parametrize('name', INJECTED)
def test_inject_hyperparams_injects_every_numeric_hyperparameter(name):
  factory, numeric = INJECTED[name]
  tx = optax.inject_hyperparams(factory)(optax.sgd(LR, momentum=0.9), rho=0.2)
  assert set(tx.init(nested(FLAT_PARAMS)).hyperparams) == numeric
  params, _ = train(tx, steps=2)
  expected, _ = train(factory(optax.sgd(LR, momentum=0.9), rho=0.2), steps=2)
  chex.assert_trees_all_close(params, expected, rtol=1e-6, atol=1e-7)


# (factory, its fixed reference arguments, hyperparameter, value before, value after)
MIDWAY_CHANGES = [
    ('sam', dict(lam=1.0), 'rho', 0.05, 0.3),
    ('usam', dict(lam=0.0), 'rho', 0.05, 0.3),
    ('unified_sam', dict(rho=0.2), 'lam', 0.2, 0.9),
    ('asam', dict(rho=0.5, lam=1.0, adaptive=True), 'eta', 0.01, 0.5),
    ('sam', dict(rho=0.05, lam=1.0), 'eps', 0.0, 0.5),
]
SWITCH = 5  # steps before the change


@pytest.mark.parametrize('name, fixed, hyperparameter, before, after', MIDWAY_CHANGES)
def test_tree_set_of_an_injected_hyperparameter_changes_the_update_midway(
    name, fixed, hyperparameter, before, after):
  factory, _ = INJECTED[name]
  kwargs = {k: v for k, v in fixed.items() if k in ('rho',)}
  tx = optax.inject_hyperparams(factory)(optax.sgd(LR, momentum=0.9),
                                         **{**kwargs, hyperparameter: before})
  params, state = train(tx, steps=SWITCH)
  new_value = jnp.asarray(after, state.hyperparams[hyperparameter].dtype)
  state = optax.tree_utils.tree_set(state, **{hyperparameter: new_value})
  assert optax.tree_utils.tree_get(state, hyperparameter) == new_value
  params, _ = train(tx, steps=SWITCH, params=params, state=state, first_step=SWITCH)

  def reference_run(value):
    arguments = {'rho': 0.05, **fixed, hyperparameter: value}
    return reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9),
                         2 * SWITCH, **arguments)

  expected = reference_run(lambda t: before if t <= SWITCH else after)
  assert_close_to_reference(params, expected)
  # The change is visible: without it the trajectory is another one.
  unchanged = reference_run(before)
  assert max(np.max(np.abs(expected[n] - unchanged[n])) for n in expected) > 1e-4


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


def random_tree(rng, scale=1.0, dtype=np.float64):
  """A flat {'w': matrix, 'b': vector} whose largest entry is ``scale``."""
  tree = {'w': rng.normal(size=(3, 4)), 'b': rng.normal(size=(4,))}
  largest = max(np.max(np.abs(v)) for v in tree.values())
  return {n: (v / largest * scale).astype(dtype) for n, v in tree.items()}


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('lam', [0.3, '1/t'])
def test_float64_params_compute_rho_lam_and_norms_in_float64(lam, adaptive):
  # float32 ρ = 0.1, λ = 0.3 or η = 0.01 are off by ~1e-8 relative; float64 by ~1e-16.
  rng = np.random.default_rng(3)
  grads, params = random_tree(rng), random_tree(rng)
  with jax.enable_x64(True):
    tx = sam_perturbation(rho=0.1, lam=lam, adaptive=adaptive, eta=0.01)
    state = tx.init(params)
    for t in (1, 2, 3):
      e, state = tx.update(jax.tree.map(jnp.asarray, grads), state,
                           jax.tree.map(jnp.asarray, params))
      expected = reference.perturbation(grads, params, rho=0.1,
                                        lam=reference.lam_at(lam, t), adaptive=adaptive)
      chex.assert_trees_all_equal_dtypes(e, grads)
      chex.assert_trees_all_close(e, expected, rtol=1e-13, atol=0)
  assert not jax.config.jax_enable_x64  # the flag does not leak into other tests


@pytest.mark.parametrize('inject', [False, True])
def test_unified_sam_with_float64_params_matches_the_float64_reference(inject):
  factory = optax.inject_hyperparams(unified_sam) if inject else unified_sam
  start = reference.as_float64(FLAT_PARAMS)
  with jax.enable_x64(True):
    tx = factory(optax.sgd(LR, momentum=0.9), rho=0.1, lam=0.3, eta=0.01)
    params = jax.tree.map(jnp.asarray, start)
    state = tx.init(params)
    for step in range(3):
      grad_fn = lambda p, step=step: reference_grad_fn(jax.tree.map(np.asarray, p), step)[1]
      updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
      params = optax.apply_updates(params, updates)
    if inject:
      assert state.hyperparams['rho'].dtype == jnp.float64
  chex.assert_trees_all_equal_dtypes(params, start)
  expected = reference.run(FLAT_PARAMS, reference_grad_fn, reference.SGDMomentum(LR, 0.9), 3,
                           rho=0.1, lam=0.3)
  chex.assert_trees_all_close(params, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('lam', [1.0, 0.5])
@pytest.mark.parametrize('scale', [1e-35, 2e-20, 1e30, 3e38])
def test_radius_is_exact_for_tiny_and_huge_gradients(scale, lam, adaptive, dtype):
  rng = np.random.default_rng(4)
  grads = jax.tree.map(jnp.asarray, random_tree(rng, scale, dtype))
  params = jax.tree.map(jnp.asarray, random_tree(rng, 1.0, dtype))
  tx = sam_perturbation(rho=0.05, lam=lam, adaptive=adaptive)
  e, _ = tx.update({**grads, 'frozen': {}}, tx.init(params), {**params, 'frozen': {}})
  assert e['frozen'] == {}
  e = {n: np.asarray(e[n], np.float64) for n in grads}
  grads64, params64 = (reference.as_float64(jax.tree.map(np.asarray, tree))
                       for tree in (grads, params))
  expected = reference.perturbation(grads64, params64, rho=0.05, lam=lam,
                                    adaptive=adaptive)
  rtol = 1e-6 if dtype == jnp.float32 else 1e-2
  chex.assert_trees_all_close(e, expected, rtol=rtol, atol=0)
  if lam == 1.0:  # the radius itself, ‖T⁻¹ e‖ = ρ
    scaling = {n: np.abs(params64[n]) + 0.01 if adaptive and n == 'w' else 1.0 for n in e}
    radius = reference.global_norm({n: e[n] / scaling[n] for n in e})
    np.testing.assert_allclose(radius, 0.05, rtol=rtol)


def test_eps_shrinks_the_radius_of_gradients_smaller_than_eps():
  # ‖e‖ = ρ‖g‖/(‖g‖ + ε): half the radius at ‖g‖ = ε.
  grads = {'w': jnp.array([3e-12, 4e-12])}
  tx = sam_perturbation(rho=0.05, eps=5e-12)
  e, _ = tx.update(grads, tx.init(grads))
  np.testing.assert_allclose(np.linalg.norm(e['w']), 0.025, rtol=1e-6)


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
  tx = optax.inject_hyperparams(sam_perturbation)(rho=0.1, lam=0.5, eps=1e-12)
  state = tx.init(params)
  assert state.hyperparams['eps'] == 0
  e, _ = tx.update(zeros, state, params)
  chex.assert_trees_all_equal(e, zeros)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('adaptive', [False, True])
def test_non_finite_gradient_gives_zero_perturbation(bad, adaptive):
  rng = np.random.default_rng(5)
  grads, params = random_tree(rng, dtype=np.float32), random_tree(rng, dtype=np.float32)
  grads['b'][1] = bad
  tx = sam_perturbation(rho=0.1, lam=0.5, adaptive=adaptive)
  e, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  chex.assert_trees_all_equal(e, jax.tree.map(np.zeros_like, grads))


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
  # optax.contrib.sam (transparent mode) keeps a full copy of the params.
  contrib = optax.contrib.sam(base, optax.sgd(0.1))
  assert optax.tree.size(contrib.init(params)) >= 2 * optax.tree.size(params)


def test_empty_subtree_passes_through():
  params, _ = train(asam(optax.adam(1e-2)), steps=2)
  assert params['frozen'] == {}
  chex.assert_tree_all_finite(params)


# Bad input ----------------------------------------------------------------------------

SAM_FACTORIES = {f.__name__: f for f in (sam_perturbation, unified_sam, sam, usam, asam)}
REQUIRED = {'base_optimizer': optax.sgd(LR), 'rho': 0.1}

# The exception each bad value gets, by argument (None: the value is valid there).
BAD_VALUES = {'True': True, 'False': False, 'None': None, 'str': '0.05', 'list': [0.05],
              'negative_array': jnp.array(-1.0), 'nan': float('nan'), 'inf': float('inf'),
              'vector': jnp.ones(2)}
T, V = TypeError, ValueError
NUMBER = dict(zip(BAD_VALUES, [T, T, T, T, T, V, V, V, T]))
EXPECTED_ERRORS = {
    'rho': NUMBER,
    'eta': NUMBER,
    'eps': NUMBER,
    'lam': {**NUMBER, 'str': V},  # an unknown lam string
    'every_k': NUMBER,
    'adaptive': {**dict.fromkeys(BAD_VALUES, T), 'True': None, 'False': None},
    'axis_name': {**dict.fromkeys(BAD_VALUES, T), 'None': None, 'str': None},
    'perturbation_axis_name': {**dict.fromkeys(BAD_VALUES, T), 'None': None, 'str': V},
    'base_optimizer': dict.fromkeys(BAD_VALUES, T),
}
BAD_INPUT_CASES = [
    (factory, argument, value)
    for factory in SAM_FACTORIES
    for argument in inspect.signature(SAM_FACTORIES[factory]).parameters
    for value in BAD_VALUES
    if EXPECTED_ERRORS[argument][value] is not None
]


@pytest.mark.parametrize('factory, argument, value', BAD_INPUT_CASES)
def test_bad_input_types_and_values_raise_at_construction_naming_the_argument(
    factory, argument, value):
  kwargs = {name: v for name, v in REQUIRED.items()
            if name in inspect.signature(SAM_FACTORIES[factory]).parameters}
  kwargs[argument] = BAD_VALUES[value]
  with pytest.raises(EXPECTED_ERRORS[argument][value], match=f'^{argument} must be'):
    SAM_FACTORIES[factory](**kwargs)


def test_every_argument_of_every_sam_factory_is_in_the_bad_input_table():
  for factory in SAM_FACTORIES.values():
    assert set(inspect.signature(factory).parameters) <= set(EXPECTED_ERRORS)
  assert len(BAD_INPUT_CASES) > 200


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(rho=-0.1), ValueError, r'rho must be a finite number in \[0.0, inf\)'),
    (dict(lam=1.5), ValueError, r'lam must be a finite number in \[0.0, 1.0\]'),
    (dict(lam=-0.1), ValueError, r'lam must be a finite number in \[0.0, 1.0\]'),
    (dict(lam=None), TypeError, r"got NoneType None\. lam may also be '1/t' or '1-1/t'\."),
    (dict(lam='1/t^2'), ValueError,
     r"lam must be a number in \[0, 1\], a callable of the step, '1/t' or '1-1/t', got the "
     r"string '1/t\^2'\."),
    (dict(eta=-1.0), ValueError, r'eta must be a finite number in \[0.0, inf\)'),
    (dict(eps=-1e-12), ValueError, r'eps must be a finite number in \[0.0, inf\)'),
    (dict(every_k=0), ValueError, r'every_k must be a whole number in \[1.0, inf\)'),
    (dict(every_k=2.5), TypeError, r'every_k must be a whole number in \[1.0, inf\)'),
    (dict(axis_name=()), TypeError, 'axis_name must be a mapped axis name'),
    (dict(axis_name=('data', 1)), TypeError, 'axis_name must be a mapped axis name'),
    (dict(base_optimizer=optax.sgd), TypeError,
     'base_optimizer must be an optax.GradientTransformation'),
    (dict(base_optimizer=tuple(optax.sgd(LR))), TypeError,
     'base_optimizer must be an optax.GradientTransformation'),
])
def test_out_of_range_hyperparameters_raise_at_construction(kwargs, error, match):
  with pytest.raises(error, match=match):
    unified_sam(**{'base_optimizer': optax.sgd(LR), **kwargs})


def test_concrete_arrays_and_numpy_scalars_are_accepted_like_numbers():
  params = nested(FLAT_PARAMS)
  expected, _ = train(unified_sam(optax.sgd(LR), 0.1, 0.5, eta=0.02, every_k=2), steps=3)
  tx = unified_sam(optax.sgd(LR), jnp.asarray(0.1), np.float32(0.5), eta=np.float64(0.02),
                   eps=jnp.asarray(0.0), every_k=np.int64(2), axis_name=None)
  params, _ = train(tx, steps=3, params=params)
  chex.assert_trees_all_close(params, expected, rtol=1e-6)


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


# optax.contrib.sam's defects, and that ours does not have them -------------------------

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
