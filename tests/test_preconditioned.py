"""Tests of optaxplus.preconditioned against the float64 transcription in tests/references."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optaxplus
from tests.references import preconditioned as ref

STEPS = 25
MOMENTUM = 0.9


def random_problem(seed, steps=STEPS):
  """Gradients of a nested tree (a matrix, a vector, a scalar, an empty subtree) whose
  scale changes 40× from step to step, so that the cap binds on some steps only."""
  rng = np.random.default_rng(seed)
  template = {'dense': {'kernel': np.zeros((4, 3)), 'bias': np.zeros(3)},
              'norm': [np.zeros(()), np.zeros((2, 2))], 'frozen': {}}
  leaves, treedef = jax.tree.flatten(template)
  grads, losses = [], []
  for _ in range(steps):
    scale = rng.choice([0.03, 0.1, 0.3, 1.2])
    grads.append([np.asarray(rng.normal(size=leaf.shape) * scale, np.float32)
                  for leaf in leaves])
    losses.append(rng.uniform(0.05, 2.0))
  # A symmetric, indefinite "Hessian" per leaf (acting on the flattened leaf).
  hessians = []
  for leaf in leaves:
    m = rng.normal(size=(leaf.size, leaf.size))
    hessians.append((m + m.T) / 2 + np.diag(rng.uniform(0.5, 3.0, leaf.size)))
  losses[5] = np.nan  # a skipped step: the heavy ball coasts, the preconditioner waits
  return treedef, grads, np.asarray(losses, np.float32), hessians


def recording_hvp(treedef, hessians, probes):
  """``v ↦ H v`` with the given per-leaf matrices; appends every probe ``v`` to ``probes``."""
  matrices = [jnp.asarray(h, jnp.float32) for h in hessians]

  def hvp_fn(v):
    leaves = treedef.flatten_up_to(v)
    jax.debug.callback(lambda *z: probes.append([np.asarray(x) for x in z]), *leaves,
                       ordered=True)
    return jax.tree.unflatten(treedef, [(m @ z.ravel()).reshape(z.shape)
                                        for m, z in zip(matrices, leaves)])
  return hvp_fn


def run(tx, treedef, grads, losses, **extra):
  """Jitted updates on the given gradients; per-step updates (leaves) and step sizes."""
  update = jax.jit(functools.partial(tx.update, **extra))
  params = jax.tree.unflatten(treedef, [jnp.zeros_like(g) for g in grads[0]])
  state = tx.init(params)
  all_updates, steps = [], []
  for g, loss in zip(grads, losses):
    updates, state = update(jax.tree.unflatten(treedef, g), state, params, value=loss)
    jax.effects_barrier()
    params = optax.apply_updates(params, updates)
    all_updates.append(jax.tree.leaves(updates))
    steps.append(float(optax.tree_utils.tree_get(state, 'step_size')))
  return all_updates, steps, state


def kept_steps(steps):
  """The step the state holds after each update: a skipped one (None) keeps the last."""
  assert steps[5] is None and all(s is not None for i, s in enumerate(steps) if i != 5)
  return [steps[i - 1] if s is None else s for i, s in enumerate(steps)]


# name -> (optimizer, reference preconditioner, reference step); momentum added by the test.
CASES = {
    'psps_adam': (
        lambda m: optaxplus.psps('adam', c=0.5, max_learning_rate=1.0, momentum=m, b2=0.9,
                                 eps=1e-3),
        lambda: ref.Preconditioner('adam', b2=0.9, eps=1e-3),
        functools.partial(ref.psps_step, c=0.5, max_learning_rate=1.0)),
    'psps_adagrad': (
        lambda m: optaxplus.psps('adagrad', c=0.5, max_learning_rate=1.0, momentum=m,
                                 eps=1e-3),
        lambda: ref.Preconditioner('adagrad', eps=1e-3),
        functools.partial(ref.psps_step, c=0.5, max_learning_rate=1.0)),
    'psps_hutchinson': (
        lambda m: optaxplus.psps('hutchinson', c=0.5, max_learning_rate=1.0, momentum=m,
                                 b2=0.9, eps=0.7, seed=3, init_samples=4),
        lambda h: ref.Preconditioner('hutchinson', b2=0.9, eps=0.7, hessians=h,
                                     init_samples=4),
        functools.partial(ref.psps_step, c=0.5, max_learning_rate=1.0)),
    'sania_adam_sqr': (
        lambda m: optaxplus.sania('adam_sqr', momentum=m, b2=0.9, eps=0.01),
        lambda: ref.Preconditioner('adam_sqr', b2=0.9, eps=0.01),
        ref.sania_step),
    'sania_adagrad_sqr': (
        lambda m: optaxplus.sania('adagrad_sqr', momentum=m, eps=0.01),
        lambda: ref.Preconditioner('adagrad_sqr', eps=0.01),
        ref.sania_step),
}


def assert_matches_reference(name, momentum, problem):
  make_tx, make_preconditioner, step = CASES[name]
  treedef, grads, losses, hessians = problem
  extra, probes = {}, []
  if 'hutchinson' in name:
    extra['hvp_fn'] = recording_hvp(treedef, hessians, probes)
    preconditioner = make_preconditioner(hessians)
  else:
    preconditioner = make_preconditioner()
  updates, steps, state = run(make_tx(momentum), treedef, grads, losses, **extra)
  probes_per_step = None
  if probes:  # n + 1 probes at the first step, one at every other, all ±1 and distinct,
    # but for the skipped step's, drawn again at the next step (the count did not move)
    assert len(probes) == preconditioner.init_samples + len(grads)
    flat = {tuple(np.concatenate([z.ravel() for z in probe])) for probe in probes}
    assert len(flat) == len(probes) - 1 and set(np.concatenate(list(flat))) == {-1.0, 1.0}
    first = preconditioner.init_samples + 1
    probes_per_step = [probes[:first]] + [[p] for p in probes[first:]]
  want_updates, want_steps = ref.heavy_ball(preconditioner, step, grads, losses,
                                            momentum=momentum,
                                            probes_per_step=probes_per_step)
  np.testing.assert_allclose(steps, kept_steps(want_steps), rtol=2e-5)
  for got, want in zip(updates, want_updates):
    atol = 2e-5 * max(np.max(np.abs(w)) for w in want)
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=atol)
  return steps, want_steps


@pytest.mark.parametrize('momentum', [0.0, MOMENTUM], ids=['plain', 'momentum'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_float64_reference(name, momentum):
  steps, _ = assert_matches_reference(name, momentum, random_problem(0))
  # The reference proves little if the cap (PSPS's γ_b = 1, SANIA's λ ≤ 1) never or
  # always binds.
  cap = 1 - momentum
  assert 0 < sum(np.isclose(s, cap, rtol=1e-6) for s in steps) < len(steps), steps


@pytest.mark.parametrize('name', ['psps_adam', 'sania_adam_sqr'])
def test_float64_params_step_in_float64(name):
  make_tx, make_preconditioner, step = CASES[name]
  with jax.enable_x64(True):
    treedef, grads, losses, _ = random_problem(6)
    grads = [[np.float64(g) * 1.0001 for g in step_grads] for step_grads in grads]
    updates, steps, state = run(make_tx(MOMENTUM), treedef, grads, np.float64(losses))
    want_updates, want_steps = ref.heavy_ball(make_preconditioner(), step, grads, losses,
                                              momentum=MOMENTUM)
    assert optax.tree_utils.tree_get(state, 'step_size').dtype == jnp.float64
  np.testing.assert_allclose(steps, kept_steps(want_steps), rtol=1e-12)
  for got, want in zip(updates, want_updates):
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-14)


# --- special cases --------------------------------------------------------------------

@pytest.mark.parametrize('momentum', [0.0, MOMENTUM])
def test_identity_direction_is_sps(momentum):
  treedef, grads, losses, _ = random_problem(2)
  sps = optax.chain(optaxplus.scale_by_sps(0.5, 1.0, momentum=momentum),
                    optax.trace(momentum), optax.scale(-1.0))
  identity = optax.chain(
      optaxplus.scale_by_preconditioned_polyak(optax.identity(), 0.5, 1.0,
                                               momentum=momentum),
      optax.trace(momentum), optax.scale(-1.0))
  want, want_steps, _ = run(sps, treedef, grads, losses)
  got, got_steps, _ = run(identity, treedef, grads, losses)
  np.testing.assert_allclose(got_steps, want_steps, rtol=1e-6)
  for g, w in zip(got, want):
    chex.assert_trees_all_close(g, w, rtol=1e-6, atol=1e-7)


def test_identity_direction_matches_reference_sps():
  # The same through the reference: D = I turns the PSPS step into SPS_max.
  treedef, grads, losses, _ = random_problem(3)
  tx = optax.chain(optaxplus.scale_by_preconditioned_polyak(optax.identity(), 0.5, 1.0),
                   optax.scale(-1.0))
  updates, steps, _ = run(tx, treedef, grads, losses)
  want_updates, want_steps = ref.heavy_ball(
      ref.Preconditioner('identity'), functools.partial(ref.psps_step, c=0.5,
                                                        max_learning_rate=1.0),
      grads, losses)
  np.testing.assert_allclose(steps, kept_steps(want_steps), rtol=2e-6)
  for got, want in zip(updates, want_updates):
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-8)


def _least_squares(seed, scales):
  """``½ mean (A w + b − y)²``, the columns of A scaled by ``scales``; ``y`` is attained."""
  rng = np.random.default_rng(seed)
  a = jnp.asarray(rng.normal(size=(32, len(scales))) * scales, jnp.float32)
  y = a @ jnp.asarray(rng.normal(size=len(scales)), jnp.float32) + 0.5
  return lambda x: 0.5 * jnp.mean((a @ x['w'] + x['b'] - y) ** 2)


def _train(tx, loss_fn, x, steps, hvp=False):
  @jax.jit
  def step(x, state):
    value, grads = jax.value_and_grad(loss_fn)(x)
    extra = {'hvp_fn': lambda v: jax.jvp(jax.grad(loss_fn), (x,), (v,))[1]} if hvp else {}
    updates, state = tx.update(grads, state, x, value=value, **extra)
    return optax.apply_updates(x, updates), state

  state = tx.init(x)
  trajectory = [x]
  for _ in range(steps):
    x, state = step(x, state)
    trajectory.append(x)
  return trajectory


@pytest.mark.parametrize('preconditioner, momentum', [('adam_sqr', 0.0),
                                                      ('adagrad_sqr', MOMENTUM)])
def test_sania_is_invariant_to_a_diagonal_rescaling(preconditioner, momentum):
  """Training on ``y = S x`` (loss ``f(S⁻¹ y)``) gives ``y_t = S x_t`` (ε never binds)."""
  scales = np.logspace(-2, 2, 6)
  s = jnp.asarray(scales, jnp.float32)
  loss_fn = _least_squares(4, np.ones(6))
  scaled_loss = lambda y: loss_fn({'w': y['w'] / s, 'b': y['b']})
  x0 = {'w': jnp.linspace(-1.0, 1.0, 6), 'b': jnp.zeros(())}
  tx = optaxplus.sania(preconditioner, momentum=momentum, eps=1e-30)
  xs = _train(tx, loss_fn, x0, 20)
  ys = _train(tx, scaled_loss, {'w': x0['w'] * s, 'b': x0['b']}, 20)
  for x, y in zip(xs, ys):
    np.testing.assert_allclose(y['w'] / s, x['w'], rtol=2e-4, atol=1e-5)
  assert float(loss_fn(xs[-1])) < 0.1 * float(loss_fn(xs[0]))
  if momentum:  # The rescaling is not a no-op: Adam's root preconditioner is not invariant.
    psps = optaxplus.psps('adam', momentum=momentum)
    xs, ys = _train(psps, loss_fn, x0, 20), _train(psps, scaled_loss,
                                                    {'w': x0['w'] * s, 'b': x0['b']}, 20)
    assert not np.allclose(ys[-1]['w'] / s, xs[-1]['w'], rtol=1e-2)


@pytest.mark.parametrize('preconditioner', ['adam', 'hutchinson'])
def test_psps_solves_ill_conditioned_least_squares_where_sps_does_not(preconditioner):
  """Feature scales spanning 10³ (curvatures 10⁶): the same budget of 200 steps."""
  loss_fn = _least_squares(5, np.logspace(-1.5, 1.5, 8))
  x0 = {'w': jnp.zeros(8), 'b': jnp.zeros(())}
  start = float(loss_fn(x0))
  psps = _train(optaxplus.psps(preconditioner), loss_fn, x0, 200,
                hvp=preconditioner == 'hutchinson')
  sps = _train(optaxplus.sps(), loss_fn, x0, 200)
  assert float(loss_fn(psps[-1])) < 1e-6 * start, float(loss_fn(psps[-1])) / start
  assert float(loss_fn(sps[-1])) > 1e-3 * start, float(loss_fn(sps[-1])) / start


# --- skipped updates ------------------------------------------------------------------

SKIPPING = {  # name -> (optimizer, its momentum)
    'psps': (lambda: optaxplus.psps('adam', momentum=MOMENTUM, f_min=0.1), MOMENTUM),
    'sania': (lambda: optaxplus.sania('adagrad_sqr', momentum=MOMENTUM, f_min=0.1),
              MOMENTUM),
    'psps_hutchinson': (lambda: optaxplus.psps('hutchinson', f_min=0.1, init_samples=2), 0.0),
}
@pytest.mark.parametrize('name', sorted(SKIPPING))
def test_non_informative_update_is_skipped_and_keeps_the_state(name):
  make_tx, momentum = SKIPPING[name]
  tx = make_tx()
  params = {'a': jnp.ones(3), 'b': [jnp.ones((2, 2))]}
  hvp = {'hvp_fn': lambda v: jax.tree.map(lambda x: 2 * x, v)} if 'hutch' in name else {}
  update = jax.jit(functools.partial(tx.update, **hvp))
  grads = jax.tree.map(lambda p: 0.3 * p, params)
  first, state = update(grads, tx.init(params), params, value=1.0)  # an applied update
  cases = {
      'loss at f_min': (grads, 0.1),
      'NaN loss': (grads, jnp.nan),
      'NaN gradient': (jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads), 1.0),
      'inf gradient': (jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.inf), grads), 1.0),
      'zero gradient': (jax.tree.map(jnp.zeros_like, grads), 1.0),
  }
  for case, (bad_grads, value) in cases.items():
    updates, new_state = update(bad_grads, state, params, value=value)
    # The heavy ball coasts (β u_{t−1}); the Polyak step's state and the preconditioner's
    # (the chain's first) are left as they were.
    chex.assert_trees_all_close(updates, jax.tree.map(lambda u: momentum * u, first),
                                custom_message=case)
    chex.assert_trees_all_equal(new_state[0], state[0], custom_message=case)


def test_direction_of_ascent_is_skipped():
  """A direction with ⟨g, d⟩ < 0 (here d = −g) gives no step and keeps the state."""
  tx = optaxplus.scale_by_preconditioned_polyak(optax.scale(-1.0))
  g = jnp.array([3.0, 4.0])
  state = tx.init(g)
  updates, new_state = tx.update(g, state, value=5.0)
  chex.assert_trees_all_equal(updates, jnp.zeros(2))
  chex.assert_trees_all_equal(new_state, state)


def test_skipped_update_keeps_the_preconditioner_estimate():
  tx = optaxplus.sania('adam_sqr', f_min=0.5)
  g = jnp.array([1.0, -2.0])
  _, state = tx.update(g, tx.init(g), value=1.0)
  _, skipped = tx.update(10 * g, state, value=0.25)  # loss below f_min
  chex.assert_trees_all_equal(skipped, state)
  assert int(state[0].direction.count) == 1
  chex.assert_trees_all_close(state[0].direction.estimate, 0.001 * g**2, rtol=1e-4)


# --- precision and dtypes ----------------------------------------------------------------

def test_bfloat16_params_step_in_float32():
  params = {'w': jnp.full((64,), 0.5, jnp.bfloat16), 'b': jnp.zeros((3,), jnp.bfloat16)}
  loss_fn = lambda p: jnp.sum(jnp.square(p['w'].astype(jnp.float32) - 1)) + jnp.sum(
      jnp.square(p['b'].astype(jnp.float32) + 1))
  tx = optaxplus.psps('adam', momentum=MOMENTUM)
  trajectory = _train(tx, loss_fn, params, 30)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(trajectory[-1]))
  assert float(loss_fn(trajectory[-1])) < 0.05 * float(loss_fn(params))
  assert optax.tree_utils.tree_get(tx.init(params), 'step_size').dtype == jnp.float32


def test_inject_hyperparams_reads_a_traced_preconditioner_eps():
  g = jnp.array([3.0, 4.0])
  tx = optax.inject_hyperparams(optaxplus.sania)(preconditioner='adagrad_sqr', eps=100.0)
  state = tx.init(g)
  updates, state = tx.update(g, state, g, value=1.0)  # d = g / 100, ⟨g, d⟩ = 0.25: λ = 1
  np.testing.assert_allclose(updates, -g / 100, rtol=1e-6)


# --- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize('factory, kwargs, error, words', [
    (optaxplus.psps, dict(preconditioner='lbfgs'), ValueError, 'preconditioner must be one of'),
    (optaxplus.sania, dict(preconditioner='adam'), ValueError, 'preconditioner must be one of'),
    (optaxplus.psps, dict(c=0.0), ValueError, 'c must be a finite number in (0.0, inf)'),
    (optaxplus.psps, dict(max_learning_rate=-1.0), ValueError, 'max_learning_rate must be'),
    (optaxplus.psps, dict(momentum=1.0), ValueError, 'momentum must be a finite number in [0.0, 1.0)'),
    (optaxplus.psps, dict(b2=1.0), ValueError, 'b2 must be a finite number in [0.0, 1.0)'),
    (optaxplus.psps, dict(preconditioner='adagrad', b2=2.0), ValueError, 'b2 must be'),
    (optaxplus.psps, dict(eps=0.0), ValueError, 'eps must be a finite number in (0.0, inf)'),
    (optaxplus.psps, dict(seed=-1), ValueError, 'seed must be a whole number'),
    (optaxplus.psps, dict(seed=0.5), TypeError, 'seed must be a whole number'),
    (optaxplus.psps, dict(init_samples=0), ValueError, 'init_samples must be a whole number'),
    (optaxplus.sania, dict(eps=float('nan')), ValueError, 'eps must be a finite number'),
    (optaxplus.sania, dict(f_min=float('inf')), ValueError, 'f_min must be a finite number'),
    (optaxplus.sania, dict(momentum=True), TypeError, 'momentum must be a finite number'),
    (optaxplus.scale_by_adam_sqr, dict(b2=-0.1), ValueError, 'b2 must be'),
    (optaxplus.scale_by_adagrad_sqr, dict(eps=None), TypeError, 'eps must be'),
    (optaxplus.scale_by_hutchinson, dict(init_samples=2.5), TypeError, 'init_samples must be'),
    (functools.partial(optaxplus.scale_by_preconditioned_polyak, optax.identity()),
     dict(c=-1.0), ValueError, 'c must be'),
])
def test_bad_hyperparameters_raise_at_construction(factory, kwargs, error, words):
  with pytest.raises(error, match=words.replace('(', r'\(').replace(')', r'\)')
                     .replace('[', r'\[')):
    factory(**kwargs)


def test_missing_extra_arguments_say_what_to_pass():
  g = jnp.ones(3)
  tx = optaxplus.psps('hutchinson')
  with pytest.raises(TypeError, match='hvp_fn=lambda v: jax.jvp'):
    tx.update(g, tx.init(g), g, value=1.0)
  tx = optaxplus.sania()
  with pytest.raises(TypeError, match='value=loss'):
    tx.update(g, tx.init(g), g)
