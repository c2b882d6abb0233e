"""Tests of optaxplus.exploration against the float64 transcription in tests/references/exploration.py."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxplus.exploration import (
    ExploreState,
    alto,
    clip_by_global_norm,
    eadam,
    eadamw,
    esgd,
    explore,
    scale_by_trust_ratio,
)
from tests.references import exploration as ref

STEPS = 30
DECAYED = {  # ALTO's default mask: tensors with ndim >= 2
    "['dense_0']['kernel']": True, "['dense_0']['bias']": False,
    "['norm']['scale']": False,
    "['dense_1']['kernel']": True, "['dense_1']['bias']": False,
}


def mlp_params(dtype=jnp.float32, seed=0):
  """Two dense layers with biases, a norm scale, and an empty subtree."""
  rng = np.random.default_rng(seed)
  return {
      "dense_0": {"kernel": jnp.asarray(rng.normal(size=(3, 6)), dtype),
                  "bias": jnp.asarray(rng.normal(size=(6,)) * 0.1, dtype)},
      "norm": {"scale": jnp.ones((6,), dtype)},
      "dense_1": {"kernel": jnp.asarray(rng.normal(size=(6, 2)), dtype),
                  "bias": jnp.zeros((2,), dtype)},
      "frozen": {},
  }


def mlp_loss(params, x, y):
  h = jnp.tanh(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"])
  h = h * params["norm"]["scale"]
  out = h @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
  return jnp.mean((out - y) ** 2)


def batches(steps=STEPS, seed=1):
  """Fresh mini-batches; target scales vary so that ALTO's clip binds on some steps only."""
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(8, 3)), rng.choice([0.1, 2.0]) * rng.normal(size=(8, 2)))
          for _ in range(steps)]


def flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(flat_tree, like):
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
  return jax.tree.unflatten(
      treedef, [jnp.asarray(flat_tree[jax.tree_util.keystr(k)], v.dtype)
                for k, v in leaves_with_path])


def run_library(tx, params, data, update=None):
  """Trains with `tx` on the MLP; returns the params after every step."""
  update = update or tx.update
  state = tx.init(params)
  grad_fn = jax.grad(mlp_loss)
  trajectory = []
  for x, y in data:
    dtype = params["norm"]["scale"].dtype
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    updates, state = update(grad_fn(params, x, y), state, params)
    params = optax.apply_updates(params, updates)
    trajectory.append(params)
  return trajectory, state


_grad64 = jax.jit(jax.grad(mlp_loss))


def reference_grads(params, x, y):
  """The MLP gradient in float64, at flat float64 params."""
  with jax.enable_x64(True):
    like = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float64), mlp_params())
    return flat(_grad64(unflat(params, like), jnp.asarray(x), jnp.asarray(y)))


def run_reference(opt, params, data):
  """The same training with a reference optimizer, float64 throughout."""
  current = flat(params)
  trajectory = []
  for x, y in data:
    current = opt.step(current, reference_grads(current, x, y))
    trajectory.append(current)
  return trajectory


def assert_trajectories_close(library, reference, rtol, atol):
  for step, (lib, want) in enumerate(zip(library, reference)):
    got = flat(lib)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol,
                                 err_msg=f"step {step + 1}, {k}")


REFERENCE_CASES = {
    "esgd": (lambda: esgd(0.05, alpha=0.5, b1=0.01),
             lambda: ref.WithExplore(ref.Explore(0.5, 0.01), ref.SGD(0.05))),
    "esgd_momentum_large_batch": (
        lambda: esgd(0.05, momentum=0.9, alpha=-5.0, b1=0.99),
        lambda: ref.WithExplore(ref.Explore(-5.0, 0.99), ref.SGD(0.05, 0.9))),
    "esgd_nesterov": (
        lambda: esgd(0.05, momentum=0.8, nesterov=True, alpha=2.0, b1=0.7),
        lambda: ref.WithExplore(ref.Explore(2.0, 0.7), ref.SGD(0.05, 0.8, True))),
    "eadam": (lambda: eadam(0.01, alpha=-5.0, explore_b1=0.99),
              lambda: ref.WithExplore(ref.Explore(-5.0, 0.99), ref.Adam(0.01))),
    "eadamw_masked": (
        lambda: eadamw(0.01, b1=0.8, b2=0.99, weight_decay=0.1, alpha=0.5,
                       explore_b1=0.01,
                       mask=lambda p: jax.tree.map(lambda w: w.ndim >= 2, p)),
        lambda: ref.WithExplore(ref.Explore(0.5, 0.01),
                                ref.Adam(0.01, 0.8, 0.99, weight_decay=0.1,
                                         decayed=DECAYED))),
    "alto": (lambda: alto(0.01, weight_decay=0.01),
             lambda: ref.ALTO(0.01, weight_decay=0.01, decayed=DECAYED)),
    "alto_small_batch": (
        lambda: alto(0.02, alpha=0.5, b1=0.01, b2=0.8, b3=0.95, eps=1e-4,
                     weight_decay=0.1, clip_norm=0.5),
        lambda: ref.ALTO(0.02, alpha=0.5, b1=0.01, b2=0.8, b3=0.95, eps=1e-4,
                         weight_decay=0.1, decayed=DECAYED, clip_norm=0.5)),
}


@functools.lru_cache(maxsize=None)
def reference_trajectory(name, dtype):
  """The reference run of REFERENCE_CASES[name] from mlp_params(dtype), shared by variants."""
  return run_reference(REFERENCE_CASES[name][1](), mlp_params(dtype), batches())


class ReferenceTest(chex.TestCase):
  """Library vs the two-buffer float64 recursion, step by step, jitted and not."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_float64_matches_reference(self):
    with jax.enable_x64(True):
      for name, (make_tx, _) in REFERENCE_CASES.items():
        with self.subTest(name):
          tx = make_tx()
          library, _ = run_library(tx, mlp_params(jnp.float64), batches(),
                                   self.variant(tx.update))
          assert_trajectories_close(library, reference_trajectory(name, jnp.float64),
                                    rtol=1e-9, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_float32_matches_reference(self):
    for name in ("eadam", "alto"):
      with self.subTest(name):
        tx = REFERENCE_CASES[name][0]()
        library, _ = run_library(tx, mlp_params(jnp.float32), batches(),
                                 self.variant(tx.update))
        assert_trajectories_close(library, reference_trajectory(name, jnp.float32),
                                  rtol=2e-4, atol=2e-5)


def test_clipping_binds_in_the_reference_problem():
  """The ALTO cases above exercise both branches of the clip."""
  params = flat(mlp_params())
  opt = ref.ALTO(0.01, weight_decay=0.01, decayed=DECAYED)
  norms = []
  for x, y in batches():
    grads = reference_grads(params, x, y)
    norms.append(ref.global_norm(grads))
    params = opt.step(params, grads)
  assert max(norms) > 1.0 > min(norms), norms


@pytest.mark.parametrize("alpha,b1", [(-5.0, 0.99), (0.5, 0.01), (1.5, 0.5), (0.0, 0.9)])
def test_explore_one_buffer_equals_two_buffer_recursion(alpha, b1):
  rng = np.random.default_rng(7)
  grads = [{"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(2,))} for _ in range(40)]
  two_buffer = ref.Explore(alpha, b1)
  tx = explore(alpha, b1)
  with jax.enable_x64(True):
    state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]))
    for step, g in enumerate(grads):
      got, state = tx.update(jax.tree.map(jnp.asarray, g), state)
      want = two_buffer(g)
      for k in g:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14,
                                   err_msg=f"step {step + 1}, {k}")


@pytest.mark.parametrize("alpha,b1", [(-5.0, 0.99), (0.5, 0.01), (-1.2, 0.2)])
def test_first_step_is_scaled_gradient(alpha, b1):
  g = {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]]), "b": jnp.array([3.0])}
  tx = explore(alpha, b1)
  out, state = tx.update(g, tx.init(g))
  # rtol 1e-5: 1 + alpha (1 - b1) cancels to 0.04 for (-1.2, 0.2) in float32.
  chex.assert_trees_all_close(out, jax.tree.map(lambda v: (1 + alpha * (1 - b1)) * v, g),
                              rtol=1e-5)
  chex.assert_trees_all_close(state.mu, jax.tree.map(lambda v: (1 - b1) * v, g), rtol=1e-6)


class AlphaZeroTest(chex.TestCase):
  """alpha = 0 gives the base optimizer, compared with optax's own implementations."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_alpha_zero_is_base_optimizer(self):
    all_tensors = lambda p: jax.tree.map(lambda _: True, p)
    cases = {
        "sgd": (esgd(0.05, momentum=0.9, alpha=0.0), optax.sgd(0.05, 0.9)),
        "adam": (eadam(0.01, alpha=0.0), optax.adam(0.01)),
        "adamw": (eadamw(0.01, weight_decay=0.1, alpha=0.0),
                  optax.adamw(0.01, weight_decay=0.1)),
        # optax.lamb: no clipping and a trust ratio on every tensor.
        "lamb": (alto(0.01, alpha=0.0, mask=all_tensors, clip_norm=1e9),
                 optax.lamb(0.01, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-4)),
    }
    for name, (tx, base) in cases.items():
      with self.subTest(name):
        params = mlp_params()
        got, _ = run_library(tx, params, batches(10), self.variant(tx.update))
        want, _ = run_library(base, params, batches(10), self.variant(base.update))
        chex.assert_trees_all_close(got[-1], want[-1], atol=1e-7, rtol=1e-7)

  def test_alpha_zero_explore_is_identity(self):
    tx = explore(alpha=0.0, b1=0.9)
    g = {"w": jnp.array([1.0, -3.0, 7.5])}
    state = tx.init(g)
    for _ in range(3):
      out, state = tx.update(g, state)
      chex.assert_trees_all_equal(out, g)


@pytest.mark.parametrize("make_tx,explore_index", [
    (lambda: alto(0.01, weight_decay=0.01), 1),  # b1 = 0.99: E reads the new average
    (lambda: eadam(0.01, alpha=0.5, explore_b1=0.01), 0),  # b1 < 0.5: the old average
])
def test_bfloat16_params(make_tx, explore_index):
  tx = make_tx()
  params16 = mlp_params(jnp.bfloat16)
  params32 = mlp_params(jnp.float32)
  data = batches(10)
  got, state = run_library(tx, params16, data, jax.jit(tx.update))
  want, _ = run_library(tx, params32, data, jax.jit(tx.update))
  chex.assert_trees_all_equal_dtypes(got[-1], params16)
  explore_state = state[explore_index]
  assert isinstance(explore_state, ExploreState)
  chex.assert_trees_all_equal_dtypes(explore_state.mu, params16)
  chex.assert_tree_all_finite(got[-1])
  chex.assert_trees_all_close(jax.tree.map(lambda p: p.astype(jnp.float32), got[-1]),
                              want[-1], atol=3e-2, rtol=3e-2)


def test_bfloat16_norms_are_float32():
  """600 bfloat16 leaves of 1: a bfloat16 running sum of squares stalls at 256."""
  g = {f"leaf_{i}": jnp.ones((), jnp.bfloat16) for i in range(600)}
  clipped, _ = clip_by_global_norm(1.0).update(g, ())
  np.testing.assert_allclose(np.float64(clipped["leaf_0"]), 1 / np.sqrt(600), rtol=4e-3)
  # The trust ratio of a bfloat16 tensor: ‖w‖/‖u‖ = 0.37 exactly in real arithmetic.
  w = {"w": jnp.full((64, 64), 0.37, jnp.bfloat16)}
  u = {"w": jnp.full((64, 64), 1.0, jnp.bfloat16)}
  scaled, _ = scale_by_trust_ratio().update(u, (), w)
  np.testing.assert_allclose(np.float64(scaled["w"][0, 0]), np.float64(w["w"][0, 0]),
                             rtol=4e-3)


def test_empty_subtree_and_extra_args():
  params = {"a": jnp.ones((2, 2)), "empty": {}, "nested": {"b": jnp.ones(3), "c": {}}}
  grads = jax.tree.map(lambda p: 0.1 * p, params)
  for tx in (explore(), alto(0.1), eadamw(0.1), esgd(0.1),
             optax.chain(explore(), optax.adam(1e-3))):
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, value=jnp.array(1.0), loss=2.0)
    chex.assert_trees_all_equal_structs(updates, params)
    chex.assert_tree_all_finite(updates)


def test_inject_hyperparams_with_scheduled_alpha():
  schedule = optax.linear_schedule(-5.0, 0.5, transition_steps=STEPS)
  tx = optax.inject_hyperparams(alto)(learning_rate=0.01, alpha=schedule,
                                      weight_decay=0.01)
  params = mlp_params(jnp.float32)
  data = batches()
  library, state = run_library(tx, params, data, jax.jit(tx.update))
  np.testing.assert_allclose(state.hyperparams["alpha"], schedule(STEPS - 1), rtol=1e-5)

  class ScheduledALTO(ref.ALTO):
    def step(self, params, grads):
      self.explore.alpha = float(schedule(self.count))
      return super().step(params, grads)

  want = run_reference(ScheduledALTO(0.01, weight_decay=0.01, decayed=DECAYED), params, data)
  assert_trajectories_close(library, want, rtol=2e-4, atol=2e-5)
  # A constant alpha would not match: the schedule is used, not its first value.
  constant = run_reference(ref.ALTO(0.01, weight_decay=0.01, decayed=DECAYED), params, data)
  assert not np.allclose(flat(library[-1])["['dense_0']['kernel']"],
                         constant[-1]["['dense_0']['kernel']"], rtol=1e-3)


@pytest.mark.parametrize("make,match", [
    (lambda: explore(alpha=-100.0, b1=0.99),
     r"alpha \(with b1=0.99\) must be in \(-100.0, 100.0\)"),
    (lambda: explore(alpha=2.0, b1=0.5), r"alpha \(with b1=0.5\) must be in \(-2.0, 2.0\)"),
    (lambda: explore(alpha=float("nan")), r"alpha .*got nan"),
    (lambda: explore(alpha=float("inf")), r"alpha .*got inf"),
    (lambda: explore(b1=1.0), r"b1 must be in \[0.0, 1.0\)"),
    (lambda: explore(b1=-0.1), r"b1 must be in \[0.0, 1.0\)"),
    (lambda: clip_by_global_norm(0.0), r"max_norm must be in \(0.0, inf\)"),
    (lambda: esgd(-0.1), r"learning_rate must be in \[0.0, inf\)"),
    (lambda: esgd(0.1, momentum=1.0), r"momentum must be in \[0.0, 1.0\)"),
    (lambda: esgd(0.1, alpha=1.02, b1=0.01), r"alpha \(with b1=0.01\) must be in \(-1.0101"),
    (lambda: eadam(0.1, eps=0.0), r"eps must be in \(0.0, inf\)"),
    (lambda: eadam(0.1, b2=1.0), r"b2 must be in \[0.0, 1.0\)"),
    (lambda: eadam(0.1, alpha=-10.5, explore_b1=0.9),
     r"alpha \(with explore_b1=0.9\) must be in \(-10.0, 10.0\)"),
    (lambda: eadam(0.1, explore_b1=1.5), r"explore_b1 must be in \[0.0, 1.0\)"),
    (lambda: eadamw(0.1, weight_decay=-1e-4), r"weight_decay must be in \[0.0, inf\)"),
    (lambda: alto(0.1, clip_norm=0.0), r"clip_norm must be in \(0.0, inf\)"),
    (lambda: alto(0.1, clip_norm=-1.0), r"clip_norm must be in \(0.0, inf\)"),
    (lambda: alto(-1e-3), r"learning_rate must be in \[0.0, inf\)"),
    (lambda: alto(0.1, b3=1.0), r"b3 must be in \[0.0, 1.0\)"),
    (lambda: alto(0.1, eps=-1e-6), r"eps must be in \(0.0, inf\)"),
    (lambda: alto(0.1, weight_decay=-0.1), r"weight_decay must be in \[0.0, inf\)"),
    (lambda: alto(0.1, alpha=-5.5, b1=0.8), r"alpha \(with b1=0.8\) must be in \(-5.0, 5.0\)"),
])
def test_bad_hyperparameters_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_positional_alpha_cannot_land_in_nesterov():
  with pytest.raises(TypeError, match="nesterov must be a bool"):
    esgd(0.1, 0.9, 0.5, 0.01)


def test_boundary_hyperparameters_are_accepted():
  explore(alpha=-99.0, b1=0.99)
  explore(alpha=0.5, b1=0.0)
  alto(0.0, weight_decay=0.0)
  esgd(0.1, momentum=0.0)


def test_zero_gradient_is_finite():
  params = mlp_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  for tx in (alto(0.01), eadamw(0.01), esgd(0.1, momentum=0.9), explore()):
    state = tx.init(params)
    p = params
    for _ in range(3):
      updates, state = tx.update(zeros, state, p)
      p = optax.apply_updates(p, updates)
    chex.assert_tree_all_finite((p, state))
  # From a nonzero average, a zero gradient gives -alpha (1 - b1) m and decays m.
  tx = explore(alpha=-5.0, b1=0.99)
  g = {"w": jnp.array([2.0, -1.0])}
  _, state = tx.update(g, tx.init(g))
  out, state2 = tx.update({"w": jnp.zeros(2)}, state)
  np.testing.assert_allclose(out["w"], 0.05 * 0.01 * np.array([2.0, -1.0]), rtol=1e-6)
  np.testing.assert_allclose(state2.mu["w"], 0.99 * 0.01 * np.array([2.0, -1.0]), rtol=1e-6)


def test_nan_gradient_entries_leave_state_and_output_clean():
  tx = explore(alpha=-5.0, b1=0.99)
  g1 = {"w": jnp.array([1.0, 2.0, 3.0])}
  _, state = tx.update(g1, tx.init(g1))
  bad = {"w": jnp.array([jnp.nan, jnp.inf, 1.0])}
  out, new_state = tx.update(bad, state)
  m = 0.01 * np.array([1.0, 2.0, 3.0])
  np.testing.assert_allclose(out["w"], [0.0, 0.0, 0.95 * 1.0 + 0.05 * m[2]], rtol=1e-6)
  np.testing.assert_allclose(new_state.mu["w"], [m[0], m[1], 0.99 * m[2] + 0.01],
                             rtol=1e-6)


def test_nan_gradient_does_not_poison_alto():
  tx = alto(0.01, weight_decay=0.01)
  params = mlp_params()
  data = batches(4)
  trajectory, state = run_library(tx, params, data[:3], jax.jit(tx.update))
  p = trajectory[-1]
  nan_grads = jax.tree.map(lambda v: jnp.full_like(v, jnp.nan), params)
  nan_grads["dense_1"]["bias"] = jnp.ones_like(params["dense_1"]["bias"])
  updates, new_state = jax.jit(tx.update)(nan_grads, state, p)
  p_next = optax.apply_updates(p, updates)
  chex.assert_tree_all_finite((p_next, new_state))
  # A NaN anywhere makes the global norm NaN: E's average keeps its value everywhere.
  chex.assert_trees_all_equal(new_state[1].mu, state[1].mu)
  # ...and the Adam part sees a zero gradient: its moments only decay.
  chex.assert_trees_all_close(new_state[2].mu, jax.tree.map(lambda m: 0.9 * m, state[2].mu),
                              rtol=1e-6)
  # Training carries on normally afterwards.
  more, _ = run_library(tx, p_next, data[3:], jax.jit(tx.update))
  chex.assert_tree_all_finite(more)


def test_multisteps_sees_one_accumulated_gradient():
  k, steps = 3, 4
  rng = np.random.default_rng(11)
  params = mlp_params()
  micro = [[jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.7, p.dtype),
                         params) for _ in range(k)] for _ in range(steps)]
  inner = alto(0.01, weight_decay=0.01)
  multi = optax.MultiSteps(alto(0.01, weight_decay=0.01), every_k_schedule=k)
  p_multi, s_multi = params, multi.init(params)
  p_one, s_one = params, inner.init(params)
  update_multi, update_one = jax.jit(multi.update), jax.jit(inner.update)
  for group in micro:
    for g in group:
      updates, s_multi = update_multi(g, s_multi, p_multi)
      p_multi = optax.apply_updates(p_multi, updates)
    mean = jax.tree.map(lambda *gs: sum(gs) / k, *group)
    updates, s_one = update_one(mean, s_one, p_one)
    p_one = optax.apply_updates(p_one, updates)
    chex.assert_trees_all_close(p_multi, p_one, rtol=1e-6, atol=1e-6)
  # E fed every micro-batch would differ: the test can tell the two apart.
  p_micro, s_micro = params, inner.init(params)
  for group in micro:
    for g in group:
      updates, s_micro = update_one(g, s_micro, p_micro)
      p_micro = optax.apply_updates(p_micro, updates)
  assert not np.allclose(flat(p_micro)["['dense_0']['bias']"],
                         flat(p_one)["['dense_0']['bias']"], atol=1e-4)


def rosenbrock(p):
  return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def arc_length_along_floor(x_start, x_end):
  """Length of the valley floor y = x² between two abscissas."""
  primitive = lambda x: 0.5 * x * np.sqrt(1 + 4 * x * x) + 0.25 * np.arcsinh(2 * x)
  return primitive(x_end) - primitive(x_start)


def test_explore_travels_further_along_the_valley_floor():
  """The qualitative claim of the paper's Figure 1, on the Rosenbrock valley.

  Same start on the floor, same base optimizer (Adam, lr 1e-2), 150 steps. With
  alpha < 0, E averages the gradients that zigzag across the valley, so Adam's
  normalised step points more along the floor. Measured (float32, CPU), in
  floor-arc length from the start: Adam 1.230, E alpha=-5 1.248, E alpha=-50 1.499.
  A no-op E would make all three equal.
  """
  start = jnp.array([-1.5, 2.25])

  def travel(tx):
    def step(carry, _):
      p, s = carry
      updates, s = tx.update(jax.grad(rosenbrock)(p), s, p)
      return (optax.apply_updates(p, updates), s), None

    (p, _), _ = jax.lax.scan(step, (start, tx.init(start)), length=150)
    p = np.asarray(p, np.float64)
    assert abs(p[1] - p[0] ** 2) < 0.05, "the run left the valley floor"
    return arc_length_along_floor(-1.5, p[0]), rosenbrock(p)

  base_travel, base_loss = travel(optax.adam(1e-2))
  preset_travel, preset_loss = travel(eadam(1e-2, alpha=-5.0, explore_b1=0.99))
  strong_travel, strong_loss = travel(eadam(1e-2, alpha=-50.0, explore_b1=0.99))
  assert base_travel > 1.0  # the base optimizer does move along the floor
  assert preset_travel > 1.005 * base_travel
  assert strong_travel > 1.15 * base_travel
  assert strong_loss < preset_loss < base_loss
