"""Tests of optaxplus.polyak against the float64 transcription in tests/references/polyak.py."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import optaxplus
from tests.references import polyak as ref

STEPS = 25

# (name, optimizer factory, reference rule) — the reference is written from METHODS.md.
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


def tree_template(dtype=jnp.float32):
  """A Flax-like tree: nested dicts, a list, a scalar leaf and an empty subtree."""
  return {
      'dense': {'kernel': jnp.zeros((4, 3), dtype), 'bias': jnp.zeros((3,), dtype)},
      'norm': [jnp.zeros((), dtype), jnp.zeros((2, 2), dtype)],
      'frozen': {},
  }


def random_problem(seed, dtype=jnp.float32, steps=STEPS):
  """Gradient trees whose scale spans 40×, so that caps bind on some steps and not others."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(tree_template(dtype))
  grads, losses = [], []
  for _ in range(steps):
    scale = rng.choice([0.03, 0.1, 0.3, 1.2])
    grads.append([np.asarray(rng.normal(size=leaf.shape) * scale, dtype) for leaf in leaves])
    losses.append(rng.uniform(0.05, 2.0))
  return treedef, grads, np.asarray(losses, np.float32)


def run_optimizer(tx, treedef, grads, losses, update=None):
  update = update or tx.update
  params = jax.tree.unflatten(treedef, [jnp.zeros_like(g) for g in grads[0]])
  state = tx.init(params)
  all_updates, steps = [], []
  for g, loss in zip(grads, losses):
    updates, state = update(jax.tree.unflatten(treedef, g), state, params, value=loss)
    params = optax.apply_updates(params, updates)
    all_updates.append(jax.tree.leaves(updates))
    steps.append(optax.tree_utils.tree_get(state, 'step_size'))
  return all_updates, np.asarray(steps), state


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, name) for name in CASES])
  def test_matches_float64_reference(self, name):
    make_tx, make_rule = CASES[name]
    treedef, grads, losses = random_problem(seed=0)
    tx = make_tx()
    updates, steps, _ = run_optimizer(tx, treedef, grads, losses, self.variant(tx.update))
    want_updates, want_steps = ref.heavy_ball_updates(make_rule(), grads, losses)
    np.testing.assert_allclose(steps, want_steps, rtol=2e-6)
    for got, want in zip(updates, want_updates):
      chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-8)


def test_reference_problem_exercises_the_caps():
  # A reference comparison proves little if the cap never (or always) binds.
  treedef, grads, losses = random_problem(seed=0)
  del treedef
  polyak = [loss / (0.5 * ref.global_sq_norm(g)) for g, loss in zip(grads, losses)]
  assert 0 < sum(p > 1.0 for p in polyak) < len(polyak)


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
  _, steps, _ = run_optimizer(tx, treedef, grads, losses, jax.jit(tx.update))
  rule = ref.PolyakRule('max', c=None, max_learning_rate=1.0)
  _, want = ref.heavy_ball_updates(rule, grads, losses, cs=[schedule(t) for t in range(STEPS)])
  np.testing.assert_allclose(steps, want, rtol=2e-6)


def test_injected_momentum_equals_fixed_momentum():
  treedef, grads, losses = random_problem(seed=4)
  tx = optax.inject_hyperparams(optaxplus.momsps)(momentum=0.9)
  got, _, _ = run_optimizer(tx, treedef, grads, losses, jax.jit(tx.update))
  want, _, _ = run_optimizer(optaxplus.momsps(momentum=0.9), treedef, grads, losses)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('name', sorted(CASES))
def test_bfloat16_params_keep_their_dtype_and_norm_in_float32(name):
  make_tx, make_rule = CASES[name]
  treedef, grads, losses = random_problem(seed=5, dtype=jnp.bfloat16, steps=6)
  tx = make_tx()
  updates, steps, state = run_optimizer(tx, treedef, grads, losses, jax.jit(tx.update))
  for leaves in updates:
    assert all(u.dtype == jnp.bfloat16 for u in leaves)
  chex.assert_tree_all_finite(state)
  # The steps see the bf16 gradients exactly (norm accumulated in float32).
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

@pytest.mark.parametrize(
    'make, argument',
    [
        (lambda: optaxplus.sps(c=0.0), 'c'),
        (lambda: optaxplus.sps(c=-1.0), 'c'),
        (lambda: optaxplus.sps(max_learning_rate=0.0), 'max_learning_rate'),
        (lambda: optaxplus.momsps(momentum=1.0), 'momentum'),
        (lambda: optaxplus.momsps(momentum=-0.1), 'momentum'),
        (lambda: optaxplus.momsps(c=float('nan')), 'c'),
        (lambda: optaxplus.momsps_smooth(batches_per_epoch=0), 'batches_per_epoch'),
        (lambda: optaxplus.momsps_smooth(batches_per_epoch=2.5), 'batches_per_epoch'),
        (lambda: optaxplus.momsps_smooth(batches_per_epoch=10, tau=0.5), 'tau'),
        (lambda: optaxplus.momsps_smooth(batches_per_epoch=10, init_step=0), 'init_step'),
        (lambda: optaxplus.momdecsps(max_learning_rate=-2.0), 'max_learning_rate'),
        (lambda: optaxplus.momadasps(c=0), 'c'),
        (lambda: optaxplus.adasps(c=-3), 'c'),
    ],
)
def test_invalid_hyperparameters_raise_naming_the_argument(make, argument):
  with pytest.raises(ValueError, match=rf'^{argument} must be .*in [\[(]'):
    make()


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
  beta = {'momsps': 0.9, 'momsps_smooth': 0.9, 'momdecsps': 0.9, 'momadasps': 0.8}
  coast = jax.tree.map(lambda u: beta.get(name, 0.0) * u, first)
  chex.assert_tree_all_finite(second)
  chex.assert_trees_all_close(second, coast, rtol=1e-6, atol=0)
  for field in ('count', 'step_size', 'loss_gap_sum'):
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
