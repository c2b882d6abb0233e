"""Tests of optaxplus.polyak against the float64 transcription in tests/references/polyak.py."""

import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optaxplus
from tests.references import polyak as ref

STEPS = 25

# (name, optimizer factory, reference rule).
CASES = {
    'sps': (
        lambda: optaxplus.sps(c=0.5, max_learning_rate=1.0),
        lambda: ref.PolyakRule('max', c=0.5, max_learning_rate=1.0),
    ),
    'momsps': (
        lambda: optaxplus.momsps(c=1.0, max_learning_rate=2.0, momentum=0.9),
        lambda: ref.PolyakRule('max', c=1.0, max_learning_rate=2.0, momentum=0.9),
    ),
    'momsps_smooth': (
        lambda: optaxplus.momsps_smooth(c=0.4, momentum=0.9, batches_per_epoch=4),
        lambda: ref.PolyakRule('smooth', c=0.4, momentum=0.9, batches_per_epoch=4),
    ),
    'sps_smooth': (
        lambda: optaxplus.momsps_smooth(c=0.4, momentum=0.0, batches_per_epoch=3, tau=3.0,
                                        init_step=0.5),
        lambda: ref.PolyakRule('smooth', c=0.4, batches_per_epoch=3, tau=3.0, init_step=0.5),
    ),
    'momdecsps': (
        lambda: optaxplus.momdecsps(c=1.0, max_learning_rate=2.0, momentum=0.9),
        lambda: ref.PolyakRule('dec', c=1.0, max_learning_rate=2.0, momentum=0.9),
    ),
    'decsps': (
        lambda: optaxplus.decsps(c=2.0, max_learning_rate=0.5),
        lambda: ref.PolyakRule('dec', c=2.0, max_learning_rate=0.5),
    ),
    'momadasps': (
        lambda: optaxplus.momadasps(c=1.0, momentum=0.8),
        lambda: ref.PolyakRule('ada', c=1.0, momentum=0.8),
    ),
    'adasps': (
        lambda: optaxplus.adasps(c=0.5),
        lambda: ref.PolyakRule('ada', c=0.5),
    ),
}
MOMENTUM = {'momsps': 0.9, 'momsps_smooth': 0.9, 'momdecsps': 0.9, 'momadasps': 0.8}


def tree_template(dtype=jnp.float32):
  """A Flax-like tree: nested dicts, a list, a scalar leaf and an empty subtree."""
  return {
      'dense': {'kernel': jnp.zeros((4, 3), dtype), 'bias': jnp.zeros((3,), dtype)},
      'norm': [jnp.zeros((), dtype), jnp.zeros((2, 2), dtype)],
      'frozen': {},
  }


def random_problem(seed, dtype=jnp.float32, steps=STEPS, grad_scale=1.0, loss_scale=1.0):
  """Gradient trees whose scale spans 40×, so that caps bind on some steps and not others."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(tree_template(dtype))
  complex_grads = jnp.issubdtype(dtype, jnp.complexfloating)
  grads, losses = [], []
  for _ in range(steps):
    scale = rng.choice([0.03, 0.1, 0.3, 1.2]) * grad_scale
    step = []
    for leaf in leaves:
      g = rng.normal(size=leaf.shape) + (1j * rng.normal(size=leaf.shape) if complex_grads else 0)
      step.append(np.asarray(g * scale, dtype))
    grads.append(step)
    losses.append(rng.uniform(0.05, 2.0) * loss_scale)
  loss_dtype = np.float64 if dtype in (jnp.float64, jnp.complex128) else np.float32
  return treedef, grads, np.asarray(losses, loss_dtype)


def run_optimizer(tx, treedef, grads, losses, update=None):
  update = update or jax.jit(tx.update)
  params = jax.tree.unflatten(treedef, [jnp.zeros_like(g) for g in grads[0]])
  state = tx.init(params)
  all_updates, steps = [], []
  for g, loss in zip(grads, losses):
    updates, state = update(jax.tree.unflatten(treedef, g), state, params, value=loss)
    params = optax.apply_updates(params, updates)
    all_updates.append(jax.tree.leaves(updates))
    steps.append(optax.tree_utils.tree_get(state, 'step_size'))
  return all_updates, np.asarray(steps), state


def assert_matches_reference(name, problem, *, rtol, update_rtol, update_atol=None, jit=True):
  """Runs CASES[name] on ``problem`` and compares its steps and updates to the reference.

  By default the updates are compared per step with an absolute tolerance of
  ``update_rtol`` × the step's largest update: momentum sums entries of both signs, so a
  small entry carries the rounding of the large ones.
  """
  make_tx, make_rule = CASES[name]
  tx = make_tx()
  updates, steps, state = run_optimizer(tx, *problem, jax.jit(tx.update) if jit else tx.update)
  want_updates, want_steps = ref.heavy_ball_updates(make_rule(), problem[1], problem[2])
  np.testing.assert_allclose(steps, want_steps, rtol=rtol, atol=0)
  for got, want in zip(updates, want_updates):
    atol = update_atol if update_atol is not None else (
        update_rtol * max(np.max(np.abs(w)) for w in want))
    chex.assert_trees_all_close(got, want, rtol=update_rtol, atol=atol)
  return updates, state


@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_float64_reference(name):
  assert_matches_reference(name, random_problem(seed=0), rtol=2e-6, update_rtol=2e-5,
                           update_atol=1e-8)


@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_float64_reference_without_jit(name):
  assert_matches_reference(name, random_problem(seed=0, steps=4), rtol=2e-6, update_rtol=2e-5,
                           update_atol=1e-8, jit=False)


def test_reference_problem_exercises_the_caps():
  # A reference comparison proves little if the cap never (or always) binds.
  treedef, grads, losses = random_problem(seed=0)
  del treedef
  polyak = [loss / (0.5 * ref.global_sq_norm(g)) for g, loss in zip(grads, losses)]
  assert 0 < sum(p > 1.0 for p in polyak) < len(polyak)


# --- precision, complex, tiny and huge gradients ------------------------------------------

@pytest.mark.parametrize('name', sorted(CASES))
def test_float64_params_step_in_float64(name):
  with jax.enable_x64(True):
    _, state = assert_matches_reference(name, random_problem(6, jnp.float64), rtol=1e-12,
                                        update_rtol=1e-12)
    assert state[0].step_size.dtype == jnp.float64


def test_float64_loss_gap_keeps_its_precision():
  # f = 1e4 + |x − 1|²: a float32 loss gap loses everything below 1e4 · 2^-24 ≈ 6e-4.
  with jax.enable_x64(True):
    loss_fn = lambda x: 1e4 + jnp.sum((x - 1.0) ** 2)
    tx = optaxplus.sps(c=1.0, f_min=1e4)
    x = jnp.zeros(3, jnp.float64)
    state, update = tx.init(x), jax.jit(tx.update)
    for _ in range(40):
      value, grads = jax.value_and_grad(loss_fn)(x)
      updates, state = update(grads, state, x, value=value)
      x = optax.apply_updates(x, updates)
    gap = float(np.sum((np.asarray(x) - 1.0) ** 2))
  assert x.dtype == jnp.float64
  assert gap < 1e-10, gap  # float32 step maths stall near 1e-4


@pytest.mark.parametrize('name', sorted(CASES))
def test_complex_params_match_the_complex_reference(name):
  updates, _ = assert_matches_reference(
      name, random_problem(7, jnp.complex64, steps=8), rtol=2e-6, update_rtol=2e-5)
  assert all(u.dtype == jnp.complex64 for step in updates for u in step)
  assert np.abs(np.imag(updates[-1][0])).max() > 0


def test_complex_step_equals_optax_polyak_sgd():
  g = jnp.array([1 + 1j, 2 - 1j], jnp.complex64)  # ‖g‖² = Σ|g|² = 7
  want, _ = optax.polyak_sgd(max_learning_rate=1.0).update(
      g, optax.polyak_sgd().init(g), g, value=3.5)
  tx = optaxplus.sps(c=1.0, max_learning_rate=1.0)
  got, _ = tx.update(g, tx.init(g), g, value=3.5)
  np.testing.assert_allclose(got, [-0.5 - 0.5j, -1 + 0.5j], rtol=1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    'name, grad_scale, loss_scale',
    [pytest.param(name, 1e-20, 1e-30, id=f'{name}-tiny') for name in sorted(CASES)]
    # (AdaSPS' huge step gap / (c ‖g‖² √gap) ≈ 1e-46 is below float32 range.)
    + [pytest.param(name, 1e30, 1e28, id=f'{name}-huge') for name in sorted(CASES)
       if 'adasps' not in name],
)
def test_tiny_and_huge_gradients_match_the_reference(name, grad_scale, loss_scale):
  # ‖g‖² ≈ 1e-40 or 1e60 is out of float32 range; the steps and updates are not.
  problem = random_problem(8, steps=3, grad_scale=grad_scale, loss_scale=loss_scale)
  assert_matches_reference(name, problem, rtol=2e-6, update_rtol=2e-5)


@pytest.mark.parametrize('scale, value', [(1e-20, 1e-30), (1e30, 1e25)], ids=['tiny', 'huge'])
def test_exact_polyak_step_for_tiny_and_huge_gradients(scale, value):
  g = {'a': jnp.array([3.0, 0.0]) * scale, 'b': [jnp.array([[4.0]]) * scale]}
  want = value / (0.5 * 25 * scale**2)  # 8e8 for tiny, 8e-37 for huge
  uncapped = optaxplus.scale_by_sps(c=0.5, max_learning_rate=math.inf)
  updates, state = jax.jit(uncapped.update)(g, uncapped.init(g), value=value)
  np.testing.assert_allclose(state.step_size, want, rtol=1e-6)
  np.testing.assert_allclose(updates['a'], [3 * scale * want, 0.0], rtol=1e-6)
  capped = optaxplus.sps(c=0.5, max_learning_rate=1.0)
  updates, state = capped.update(g, capped.init(g), value=value)
  np.testing.assert_allclose(optax.tree_utils.tree_get(state, 'step_size'), min(want, 1.0),
                             rtol=1e-6)
  np.testing.assert_allclose(updates['b'][0], [[-4 * scale * min(want, 1.0)]], rtol=1e-6)


@pytest.mark.parametrize('name', sorted(CASES))
def test_state_is_finite_under_debug_infs(name):
  # AdaSPS' η_{−1} = +∞ is not stored: init and every update compute only finite values.
  treedef, grads, losses = random_problem(9, steps=3)
  with jax.debug_infs(True):
    tx = CASES[name][0]()
    params = jax.tree.unflatten(treedef, [jnp.zeros_like(g) for g in grads[0]])
    state = tx.init(params)
    chex.assert_tree_all_finite(state)
    for g, loss in zip(grads, losses):
      _, state = tx.update(jax.tree.unflatten(treedef, g), state, params, value=loss)
    chex.assert_tree_all_finite(state)
  assert int(optax.tree_utils.tree_get(state, 'count')) == 3


# --- momentum, scaling and injected hyperparameters ---------------------------------------

@pytest.mark.parametrize(
    'with_momentum, without',
    [
        (lambda b: optaxplus.momsps(0.5, 1.0, momentum=b), optaxplus.sps(0.5, 1.0)),
        (lambda b: optaxplus.momdecsps(momentum=b), optaxplus.decsps()),
        (lambda b: optaxplus.momadasps(momentum=b), optaxplus.adasps()),
    ],
)
def test_zero_momentum_is_the_plain_method(with_momentum, without):
  treedef, grads, losses = random_problem(seed=1)
  got, got_steps, _ = run_optimizer(with_momentum(0.0), treedef, grads, losses)
  want, want_steps, _ = run_optimizer(without, treedef, grads, losses)
  np.testing.assert_allclose(got_steps, want_steps, rtol=1e-7)
  chex.assert_trees_all_close(got, want, rtol=1e-7, atol=0)
  # The same through a traced momentum of 0 (a momentum buffer that stays inert).
  traced, _, _ = run_optimizer(with_momentum(jnp.float32(0.0)), treedef, grads, losses)
  chex.assert_trees_all_close(traced, want, rtol=1e-7, atol=0)


def test_scale_after_the_step_is_multiplicative():
  treedef, grads, losses = random_problem(seed=2)
  half = optax.chain(optaxplus.scale_by_sps(0.5, 1.0), optax.scale(-0.5))
  got, _, _ = run_optimizer(half, treedef, grads, losses)
  want, _, _ = run_optimizer(optaxplus.sps(0.5, 1.0), treedef, grads, losses)
  chex.assert_trees_all_close(got, jax.tree.map(lambda u: 0.5 * u, want), rtol=1e-6)


def test_scheduled_c_through_inject_hyperparams():
  treedef, grads, losses = random_problem(seed=3)
  schedule = lambda count: 0.5 + 0.1 * count
  tx = optax.inject_hyperparams(optaxplus.sps)(c=schedule, max_learning_rate=1.0)
  _, steps, _ = run_optimizer(tx, treedef, grads, losses)
  rule = ref.PolyakRule('max', c=None, max_learning_rate=1.0)
  _, want = ref.heavy_ball_updates(rule, grads, losses, cs=[schedule(t) for t in range(STEPS)])
  np.testing.assert_allclose(steps, want, rtol=2e-6)


def test_injected_momentum_equals_fixed_momentum():
  treedef, grads, losses = random_problem(seed=4)
  tx = optax.inject_hyperparams(optaxplus.momsps)(momentum=0.9)
  got, _, _ = run_optimizer(tx, treedef, grads, losses)
  want, _, _ = run_optimizer(optaxplus.momsps(momentum=0.9), treedef, grads, losses)
  # Updates are O(0.1); the momentum sum carries their float32 rounding to small entries.
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)


# Every public factory, with what it needs beyond its defaults.
FACTORIES = {
    factory.__name__: (factory, required)
    for factory, required in [
        (optaxplus.sps, {}), (optaxplus.momsps, {}),
        (optaxplus.momsps_smooth, {'batches_per_epoch': 10}),
        (optaxplus.decsps, {}), (optaxplus.momdecsps, {}),
        (optaxplus.adasps, {}), (optaxplus.momadasps, {}),
        (optaxplus.scale_by_sps, {}),
        (optaxplus.scale_by_sps_smooth, {'batches_per_epoch': 10}),
        (optaxplus.scale_by_decsps, {}), (optaxplus.scale_by_adasps, {}),
    ]
}
# Values chosen so that every cap binds and every hyperparameter moves the step on the
# problem of test_injected_hyperparameter_changes_the_update (‖g‖² = 1, loss 1).
BEFORE = {'c': 1.0, 'max_learning_rate': 0.5, 'momentum': 0.5, 'f_min': 0.0, 'tau': 2.0,
          'init_step': 0.1, 'batches_per_epoch': 2}
AFTER = {'c': 4.0, 'max_learning_rate': 0.25, 'momentum': 0.9, 'f_min': 0.9, 'tau': 4.0,
         'init_step': 0.05, 'batches_per_epoch': 1}


def hyperparameters(name):
  return list(inspect.signature(FACTORIES[name][0]).parameters)


@pytest.mark.parametrize(
    'name, hyperparameter',
    [(name, h) for name in FACTORIES for h in hyperparameters(name)],
)
def test_injected_hyperparameter_changes_the_update(name, hyperparameter):
  factory = FACTORIES[name][0]
  before = {h: BEFORE[h] for h in hyperparameters(name)}
  after = {**before, hyperparameter: AFTER[hyperparameter]}
  injected = optax.inject_hyperparams(factory)(**before)
  update = jax.jit(injected.update)  # hyperparameters arrive as tracers
  g = {'a': jnp.array([0.6, 0.0]), 'b': [jnp.array([[0.8]])]}
  set_after = lambda state: optax.tree_utils.tree_set(
      state, **{hyperparameter: jnp.asarray(AFTER[hyperparameter],
                                            state.hyperparams[hyperparameter].dtype)})
  plain_before, plain_after = factory(**before), factory(**after)
  # γ_{−1} of the smooth cap and DecSPS' first cap γ_b act only on the first applied update.
  first_step_only = hyperparameter == 'init_step' or (
      hyperparameter == 'max_learning_rate' and 'decsps' in name)

  # Changed before the first update, and after one update.
  for steps_before_change in (0, 1):
    state = injected.init(g)
    plain_state = plain_before.init(g)
    for _ in range(steps_before_change):
      _, state = update(g, state, g, value=1.0)
      _, plain_state = plain_before.update(g, plain_state, g, value=1.0)
    got, _ = update(g, set_after(state), g, value=1.0)
    want, _ = plain_after.update(g, plain_state, g, value=1.0)
    unchanged, _ = plain_before.update(g, plain_state, g, value=1.0)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    if steps_before_change == 0 or not first_step_only:
      differs = [not np.allclose(x, y, rtol=1e-3)
                 for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(unchanged))]
      assert any(differs), f'{hyperparameter} had no effect after {steps_before_change} steps'


def test_momsps_smooth_injects_batches_per_epoch_without_static_args():
  tx = optax.inject_hyperparams(optaxplus.momsps_smooth)(batches_per_epoch=10)
  g = jnp.array([3.0, 4.0])
  updates, state = jax.jit(tx.update)(g, tx.init(g), g, value=1000.0)
  # Polyak (1 − 0.9) · 1000 / 25 = 4, capped by 2^{1/10} · 1.
  np.testing.assert_allclose(updates, -(2 ** 0.1) * g, rtol=1e-6)
  assert state.hyperparams['batches_per_epoch'] == 10


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_low_precision_params_keep_their_dtype_and_step_in_float32(name, dtype):
  make_tx, make_rule = CASES[name]
  treedef, grads, losses = random_problem(seed=5, dtype=dtype, steps=6)
  tx = make_tx()
  updates, steps, state = run_optimizer(tx, treedef, grads, losses)
  for leaves in updates:
    assert all(u.dtype == dtype for u in leaves)
  chex.assert_tree_all_finite(state)
  assert state[0].step_size.dtype == jnp.float32
  # The steps see the low-precision gradients exactly (norm accumulated in float32).
  exact = [[np.asarray(g, np.float64) for g in step] for step in grads]
  _, want_steps = ref.heavy_ball_updates(make_rule(), exact, losses)
  np.testing.assert_allclose(steps, want_steps, rtol=1e-5)


def test_bfloat16_norm_does_not_saturate():
  # 65536 ones: a bf16 running sum would stall at 256; the float32 norm is exact.
  grads = jnp.ones((256, 256), jnp.bfloat16)
  tx = optaxplus.scale_by_sps(c=1.0, max_learning_rate=1.0)
  _, state = jax.jit(tx.update)(grads, tx.init(grads), value=1.0)
  np.testing.assert_allclose(state.step_size, 1.0 / 65536, rtol=1e-6)


@pytest.mark.parametrize('name', sorted(CASES))
def test_state_shapes_and_dtypes_are_stable(name):
  tx = CASES[name][0]()
  params = tree_template()
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  _, new_state = jax.jit(tx.update)(grads, state, params, value=jnp.float32(0.7))
  chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
  assert isinstance(optax.tree_utils.tree_get(new_state, 'step_size'), jax.Array)


def test_empty_tree_is_a_no_op():
  tx = optaxplus.momsps()
  updates, state = tx.update({}, tx.init({}), {}, value=1.0)
  assert updates == {}
  assert int(optax.tree_utils.tree_get(state, 'count')) == 0


# --- bad input --------------------------------------------------------------------------

NOT_NUMBERS = [True, False, None, '0.9', [0.9], jnp.ones(2)]
BAD_NUMBERS = [np.float64('nan'), math.inf, jnp.array(-1.0)]
OUT_OF_RANGE = {'c': [0.0, -1.0], 'max_learning_rate': [0.0, -2.0], 'momentum': [1.0, -0.1],
                'f_min': [], 'tau': [0.5], 'init_step': [0], 'batches_per_epoch': [0, 2.5]}
ACCEPTED = {'f_min': -1.0, 'max_learning_rate': math.inf}  # any lower bound; no cap


def _bad_cases():
  for name in FACTORIES:
    for h in hyperparameters(name):
      for value in NOT_NUMBERS:
        yield pytest.param(name, h, value, TypeError, id=f'{name}-{h}-{value!r}')
      for value in BAD_NUMBERS + OUT_OF_RANGE[h]:
        if float(value) == ACCEPTED.get(h):
          continue
        # A finite fraction where a whole number is needed is a TypeError.
        fraction = h == 'batches_per_epoch' and math.isfinite(value) and value % 1 != 0
        yield pytest.param(name, h, value, TypeError if fraction else ValueError,
                           id=f'{name}-{h}-{value!r}')


@pytest.mark.parametrize('name, hyperparameter, value, error', list(_bad_cases()))
def test_invalid_hyperparameters_raise_naming_the_argument(name, hyperparameter, value, error):
  factory, required = FACTORIES[name]
  with pytest.raises(error, match=rf'^{hyperparameter} must be a .*in [\[(]'):
    factory(**{**required, hyperparameter: value})


@pytest.mark.parametrize('name', FACTORIES)
def test_valid_concrete_arrays_are_accepted(name):
  factory, required = FACTORIES[name]
  kwargs = {h: np.float32(BEFORE[h]) if h != 'batches_per_epoch' else jnp.asarray(2)
            for h in hyperparameters(name)}
  tx = factory(**{**required, **kwargs, 'c': jnp.asarray(1.0)})
  p = jnp.ones(3)
  updates, _ = tx.update(p, tx.init(p), p, value=1.0)
  chex.assert_tree_all_finite(updates)


def test_missing_value_explains_how_to_pass_it():
  tx = optaxplus.momsps()
  params = tree_template()
  with pytest.raises(TypeError, match=r'value=loss'):
    tx.update(params, tx.init(params), params)


def test_non_scalar_value_is_rejected():
  tx = optaxplus.sps()
  params = tree_template()
  with pytest.raises(ValueError, match='scalar mean loss'):
    tx.update(params, tx.init(params), params, value=jnp.ones(8))


def test_unknown_extra_args_are_ignored():
  tx = optaxplus.momsps()
  p = jnp.ones(3)
  updates, _ = tx.update(p, tx.init(p), p, value=1.0, grad_fn=None, rng=0)
  chex.assert_tree_all_finite(updates)


# --- edge cases: zero gradient, loss below f_min, NaN and inf ---------------------------

def _first_step_then(tx, grads, value):
  """One ordinary step, then the step under test; returns both updates and states."""
  params = tree_template()
  ones = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  state = tx.init(params)
  first, state = tx.update(ones, state, params, value=1.0)
  second, new_state = jax.jit(tx.update)(grads, state, params, value=value)
  return first, second, state, new_state


NAN_TREE = {
    'dense': {'kernel': jnp.full((4, 3), 0.5).at[1, 2].set(jnp.nan), 'bias': jnp.ones(3)},
    'norm': [jnp.ones(()), jnp.ones((2, 2))],
    'frozen': {},
}
ZERO_TREE = jax.tree.map(jnp.zeros_like, tree_template())
HALF_TREE = jax.tree.map(lambda p: jnp.full_like(p, 0.5), tree_template())


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize(
    'grads, value',
    [
        (ZERO_TREE, 1.0),  # zero gradient: 0/0 must not appear
        (HALF_TREE, -0.5),  # loss below f_min
        (HALF_TREE, 0.0),  # loss at f_min
        (HALF_TREE, jnp.nan),
        (HALF_TREE, jnp.inf),
        (NAN_TREE, 1.0),
        (jax.tree.map(lambda p: jnp.full_like(p, jnp.inf), tree_template()), 1.0),
        (jax.tree.map(lambda p: jnp.full_like(p, 1e30), tree_template()), 1.0),  # ‖g‖² overflows
    ],
    ids=['zero-grad', 'below-f_min', 'at-f_min', 'nan-loss', 'inf-loss', 'nan-grad',
         'inf-grad', 'overflow'],
)
def test_uninformative_steps_are_skipped_without_nan(name, grads, value):
  tx = CASES[name][0]()
  first, second, state, new_state = _first_step_then(tx, grads, value)
  # The Polyak step contributes nothing; the heavy ball coasts: u = β u_prev.
  coast = jax.tree.map(lambda u: MOMENTUM.get(name, 0.0) * u, first)
  chex.assert_tree_all_finite(second)
  chex.assert_trees_all_close(second, coast, rtol=1e-6, atol=0)
  for field in optaxplus.PolyakStepState._fields:
    np.testing.assert_array_equal(
        optax.tree_utils.tree_get(new_state, field), optax.tree_utils.tree_get(state, field)
    )


def test_training_resumes_after_a_nan_batch():
  tx = optaxplus.momsps()
  params = tree_template()
  state = tx.init(params)
  for grads, value in [(HALF_TREE, 1.0), (NAN_TREE, jnp.nan), (HALF_TREE, 1.0)]:
    updates, state = tx.update(grads, state, params, value=value)
    params = optax.apply_updates(params, updates)
  chex.assert_tree_all_finite(params)
  assert int(optax.tree_utils.tree_get(state, 'count')) == 2


# --- convergence ------------------------------------------------------------------------

def _least_squares(seed, n=64, d=8, noise=0.0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = x @ rng.normal(size=d).astype(np.float32) + 0.5 + noise * rng.normal(size=n)
  return jnp.asarray(x), jnp.asarray(y, jnp.float32)


def _train(tx, loss_fn, params, x, y, epochs, batch):
  """Mini-batch training in one jitted scan; returns the full-batch loss after each epoch."""
  n = x.shape[0]
  xb = x.reshape(n // batch, batch, -1)
  yb = y.reshape(n // batch, batch)

  def step(carry, batch_xy):
    params, state = carry
    value, grads = jax.value_and_grad(loss_fn)(params, *batch_xy)
    updates, state = tx.update(grads, state, params, value=value)
    return (optax.apply_updates(params, updates), state), None

  def epoch(carry, _):
    carry, _ = jax.lax.scan(step, carry, (xb, yb))
    return carry, loss_fn(carry[0], x, y)

  _, losses = jax.jit(lambda c: jax.lax.scan(epoch, c, length=epochs))((params, tx.init(params)))
  return np.asarray(losses)


def _squared_loss(params, x, y):
  return 0.5 * jnp.mean((x @ params['w'] + params['b'] - y) ** 2)


@pytest.mark.parametrize(
    'tx', [optaxplus.sps(), optaxplus.momsps()], ids=['sps', 'momsps']
)
def test_interpolated_least_squares_converges_from_defaults(tx):
  x, y = _least_squares(seed=0)
  params = {'w': jnp.zeros(8), 'b': jnp.zeros(())}
  losses = _train(tx, _squared_loss, params, x, y, epochs=150, batch=8)
  assert losses[-1] < 1e-8, losses[-5:]


def _logistic_optimum(x, labels):
  """The exact minimum of the mean logistic loss, by Newton's method in float64."""
  features = np.c_[x, np.ones(len(x))].astype(np.float64)
  w = np.zeros(features.shape[1])
  for _ in range(30):
    p = 1 / (1 + np.exp(-features @ w))
    grad = features.T @ (p - labels) / len(x)
    hessian = (features.T * (p * (1 - p))) @ features / len(x)
    w -= np.linalg.solve(hessian, grad)
  p = 1 / (1 + np.exp(-features @ w))
  return np.mean(-labels * np.log(p) - (1 - labels) * np.log(1 - p))


def test_decreasing_step_keeps_improving_where_the_capped_step_plateaus():
  # Logistic regression on labels no linear model fits: SGD noise does not vanish at the
  # optimum, so a step bounded away from zero stalls at a noise floor.
  rng = np.random.default_rng(0)
  n, d = 256, 10
  x = rng.normal(size=(n, d)).astype(np.float32)
  labels = (x @ rng.normal(size=d) + 1.5 * rng.normal(size=n) > 0).astype(np.float32)
  f_opt = _logistic_optimum(x, labels)

  def logistic(params, xs, ys):
    logits = xs @ params['w'] + params['b']
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, ys))

  kw = dict(loss_fn=logistic, params={'w': jnp.zeros(d), 'b': jnp.zeros(())},
            x=jnp.asarray(x), y=jnp.asarray(labels), epochs=200, batch=4)
  capped = _train(optaxplus.momsps(), **kw) - f_opt
  decreasing = _train(optaxplus.momdecsps(), **kw) - f_opt
  assert abs(capped[-1] - capped[99]) < 0.1 * capped[-1]  # plateau
  assert decreasing[-1] < 0.7 * decreasing[99]  # still improving in the second half
  assert decreasing[-1] < 0.25 * capped[-1]


def test_flax_frozen_param_tree():
  from flax.core import freeze  # pylint: disable=import-outside-toplevel

  params = freeze({'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.zeros(2)}})
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx = optaxplus.momsps(momentum=0.5)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params, value=0.3)
  # −(1 − 0.5) · 0.3 / (1 · 6 · 0.25) · 0.5 on every entry.
  chex.assert_trees_all_close(updates, jax.tree.map(lambda g: jnp.full_like(g, -0.05), grads),
                              rtol=1e-6)


def test_state_can_be_donated():
  """Each state field is its own buffer: donating the state to a jitted update works."""
  tx = optaxplus.momadasps()
  params = {'w': jnp.ones(3)}
  step = jax.jit(lambda g, s: tx.update(g, s, params, value=jnp.float32(1.0)),
                 donate_argnums=1)
  state = tx.init(params)
  buffers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
  assert len(set(buffers)) == len(buffers)
  _, state = step(params, state)
  chex.assert_tree_all_finite(state)
