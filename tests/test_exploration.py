"""Tests of optaxplus.exploration against the float64 transcription in tests/references/exploration.py."""

import functools
import inspect
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxplus._wide import narrow
from optaxplus.exploration import (
    ExploreState,
    alto,
    eadam,
    eadamw,
    esgd,
    explore,
)
from optaxplus.lamb import clip_by_global_norm, scale_by_lamb, scale_by_trust_ratio
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
    "esgd": (lambda: esgd(0.05, alpha=0.5, explore_b1=0.01),
             lambda: ref.WithExplore(ref.Explore(0.5, 0.01), ref.SGD(0.05))),
    "esgd_momentum_large_batch": (
        lambda: esgd(0.05, momentum=0.9, alpha=-5.0, explore_b1=0.99),
        lambda: ref.WithExplore(ref.Explore(-5.0, 0.99), ref.SGD(0.05, 0.9))),
    "esgd_nesterov": (
        lambda: esgd(0.05, momentum=0.8, nesterov=True, alpha=2.0, explore_b1=0.7),
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
        lambda: alto(0.02, alpha=0.5, explore_b1=0.01, b1=0.8, b2=0.95, eps=1e-4,
                     weight_decay=0.1, clip_norm=0.5),
        lambda: ref.ALTO(0.02, betas=(0.01, 0.8, 0.95), alpha=0.5, eps=1e-4,
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


def only(state, kind):
  """The one sub-state of type ``kind`` (a NamedTuple) inside an optimizer state."""
  found = [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kind))
           if isinstance(x, kind)]
  assert len(found) == 1, found
  return found[0]


@pytest.mark.parametrize("make_tx", [
    lambda: alto(0.01, weight_decay=0.01),  # b1 = 0.99: E reads the new average
    lambda: eadam(0.01, alpha=0.5, explore_b1=0.01),  # b1 < 0.5: the old average
])
def test_bfloat16_params(make_tx):
  tx = make_tx()
  params16 = mlp_params(jnp.bfloat16)
  params32 = mlp_params(jnp.float32)
  data = batches(10)
  got, state = run_library(tx, params16, data, jax.jit(tx.update))
  want, _ = run_library(tx, params32, data, jax.jit(tx.update))
  chex.assert_trees_all_equal_dtypes(got[-1], params16)
  chex.assert_trees_all_equal_dtypes(only(state, ExploreState).mu, params16)
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


# --- Hyperparameter checks -----------------------------------------------------------------

FACTORIES = {  # every public factory with hyperparameters, and its required arguments
    "explore": (explore, {}),
    "clip_by_global_norm": (clip_by_global_norm, {"max_norm": 1.0}),
    "scale_by_lamb": (scale_by_lamb, {}),
    "esgd": (esgd, {"learning_rate": 0.1}),
    "eadam": (eadam, {"learning_rate": 0.1}),
    "eadamw": (eadamw, {"learning_rate": 0.1}),
    "alto": (alto, {"learning_rate": 0.1}),
}
BAD_VALUES = {
    "True": True, "False": False, "None": None, "'0.1'": "0.1", "[0.1]": [0.1],
    "jnp.array(-1.)": jnp.array(-1.0), "nan": float("nan"), "inf": float("inf"),
    "jnp.ones(2)": jnp.ones(2),
}
# Values of this list that are valid for an argument: alpha may be -1 (|alpha| < 100),
# momentum None (plain SGD), nesterov a bool, mask None or a bool (every tensor, or none).
ACCEPTED = {("alpha", "jnp.array(-1.)"), ("momentum", "None"), ("nesterov", "True"),
            ("nesterov", "False"), ("mask", "None"), ("mask", "True"), ("mask", "False")}
# Wrong types are TypeErrors; numbers out of range, NaN and infinities ValueErrors.
OUT_OF_RANGE = {"jnp.array(-1.)", "nan", "inf"}
NOT_NUMBERS = {"nesterov", "mask"}  # any non-bool (non-bool leaf) is a TypeError


def bad_input_cases():
  """(factory, argument, bad value) for every argument of every factory."""
  for factory, (make, _) in FACTORIES.items():
    for argument in inspect.signature(make).parameters:
      for value_name in BAD_VALUES:
        if (argument, value_name) not in ACCEPTED:
          yield pytest.param(factory, argument, value_name,
                             id=f"{factory}-{argument}-{value_name}")


@pytest.mark.parametrize("factory,argument,value_name", bad_input_cases())
def test_bad_input_raises_naming_the_argument(factory, argument, value_name):
  make, required = FACTORIES[factory]
  wrong_type = argument in NOT_NUMBERS or value_name not in OUT_OF_RANGE
  with pytest.raises(TypeError if wrong_type else ValueError) as raised:
    make(**{**required, argument: BAD_VALUES[value_name]})
  assert re.match(rf"{argument}\b", str(raised.value)), str(raised.value)


@pytest.mark.parametrize("make,error,match", [
    (lambda: explore(alpha=-100.0, b1=0.99),
     ValueError, r"alpha \(with b1=0.99\) must be a finite number in \(-100.0, 100.0\), "
                 r"got -100.0"),
    (lambda: explore(alpha=2.0, b1=0.5), ValueError, r"alpha \(with b1=0.5\) .* \(-2.0, 2.0\)"),
    (lambda: explore(b1=1.0), ValueError, r"b1 must be a finite number in \[0.0, 1.0\)"),
    (lambda: explore(b1=-0.1), ValueError, r"b1 .* \[0.0, 1.0\)"),
    # Concrete arrays are checked like numbers, the alpha bound included.
    (lambda: explore(alpha=jnp.array(-101.0), b1=jnp.array(0.99)), ValueError,
     r"alpha \(with b1=0.99\d*\) .* \(-100.0\d*, 100.0\d*\), got Array\(-101"),
    (lambda: eadam(0.1, b1=np.float32(1.0)), ValueError, r"b1 .* \[0.0, 1.0\)"),
    (lambda: clip_by_global_norm(0.0), ValueError, r"max_norm .* \(0.0, inf\)"),
    (lambda: esgd(0.0), ValueError, r"learning_rate .* \(0.0, inf\) or a schedule"),
    (lambda: esgd(0.1, momentum=1.0), ValueError, r"momentum .* \[0.0, 1.0\)"),
    (lambda: esgd(0.1, alpha=1.02, explore_b1=0.01), ValueError,
     r"alpha \(with explore_b1=0.01\) .* \(-1.0101"),
    (lambda: eadam(0.1, eps=0.0), ValueError, r"eps .* \(0.0, inf\)"),
    (lambda: eadam(0.1, b2=1.0), ValueError, r"b2 .* \[0.0, 1.0\)"),
    (lambda: eadam(0.1, alpha=-10.5, explore_b1=0.9), ValueError,
     r"alpha \(with explore_b1=0.9\) .* \(-10.0, 10.0\)"),
    (lambda: eadam(0.1, explore_b1=1.5), ValueError, r"explore_b1 .* \[0.0, 1.0\)"),
    (lambda: eadamw(0.1, weight_decay=-1e-4), ValueError, r"weight_decay .* \[0.0, inf\)"),
    (lambda: eadamw(0.1, mask={"w": 1}), TypeError, r"mask must be None, a pytree of bools"),
    (lambda: alto(0.1, clip_norm=-1.0), ValueError, r"clip_norm .* \(0.0, inf\)"),
    (lambda: alto(0.1, b2=1.0), ValueError, r"b2 .* \[0.0, 1.0\)"),
    (lambda: alto(0.1, alpha=-5.5, explore_b1=0.8), ValueError,
     r"alpha \(with explore_b1=0.8\) .* \(-5.0, 5.0\)"),
    # The old names are gone, not silently ignored; alto's options are keyword-only.
    (lambda: alto(0.1, b3=0.99), TypeError, "b3"),
    (lambda: esgd(0.1, b1=0.99), TypeError, "b1"),
    (lambda: alto(0.1, 0.9), TypeError, "positional"),
    # esgd(lr, momentum, alpha, explore_b1) would pass alpha as nesterov.
    (lambda: esgd(0.1, 0.9, 0.5, 0.01), TypeError, "nesterov must be True or False"),
])
def test_bad_hyperparameters_raise(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_boundary_and_special_hyperparameters_are_accepted():
  explore(alpha=-99.0, b1=0.99)
  explore(alpha=0.5, b1=0.0)
  explore(alpha=jnp.array(-5.0), b1=np.float64(0.99))
  alto(1e-3, weight_decay=0.0, mask=False)
  alto(optax.linear_schedule(0.1, 0.0, 10), mask={"w": True, "b": np.bool_(False)})
  eadamw(0.1, mask=lambda p: jax.tree.map(lambda _: True, p))
  esgd(0.1, momentum=0.0, nesterov=np.bool_(True))


def test_concrete_array_hyperparameters_act_as_numbers():
  g = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
  as_arrays, as_floats = explore(jnp.array(-5.0), jnp.array(0.99)), explore(-5.0, 0.99)
  s_arrays, s_floats = as_arrays.init(g), as_floats.init(g)
  for _ in range(3):
    got, s_arrays = as_arrays.update(g, s_arrays)
    want, s_floats = as_floats.update(g, s_floats)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_every_factory_defaults_to_the_large_batch_preset():
  for make, decay in ((explore, "b1"), (esgd, "explore_b1"), (eadam, "explore_b1"),
                      (eadamw, "explore_b1"), (alto, "explore_b1")):
    parameters = inspect.signature(make).parameters
    assert parameters["alpha"].default == -5.0, make.__name__
    assert parameters[decay].default == 0.99, make.__name__


def test_mask_bool_selects_every_tensor_or_none():
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.2, -0.1])}
  grads = {"w": jnp.array([[0.3, 0.1], [-0.2, 0.4]]), "b": jnp.array([1.0, 2.0])}
  got = {}
  for flag, callable_mask in ((True, lambda p: jax.tree.map(lambda _: True, p)),
                              (False, lambda p: jax.tree.map(lambda _: False, p))):
    with_bool, with_callable = alto(0.01, mask=flag), alto(0.01, mask=callable_mask)
    got[flag], _ = with_bool.update(grads, with_bool.init(params), params)
    want, _ = with_callable.update(grads, with_callable.init(params), params)
    chex.assert_trees_all_close(got[flag], want, rtol=1e-6)
  # ...and the two differ: with no tensor masked there is no trust ratio.
  assert not np.allclose(got[True]["w"], got[False]["w"])


# --- The aliases are their chains --------------------------------------------------------

def _matrices(params):
  return jax.tree.map(lambda w: w.ndim >= 2, params)


def _alto_chain(learning_rate, *, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-4, mask=None,
                clip_norm=1.0, alpha=-5.0, explore_b1=0.99):
  """ALTO written as the chain of public blocks its docstring names."""
  mask = _matrices if mask is None else mask
  return optax.chain(clip_by_global_norm(clip_norm), explore(alpha, explore_b1),
                     optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.masked(scale_by_trust_ratio(), mask),
                     optax.scale_by_learning_rate(learning_rate))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("make_tx,make_chain", [
    (lambda: alto(0.01, weight_decay=0.01), lambda: _alto_chain(0.01, weight_decay=0.01)),
    (lambda: alto(0.02, alpha=0.5, explore_b1=0.01, weight_decay=0.1, mask=True),
     lambda: _alto_chain(0.02, alpha=0.5, explore_b1=0.01, weight_decay=0.1, mask=True)),
    (lambda: esgd(0.05, momentum=0.9, alpha=0.5, explore_b1=0.01),
     lambda: optax.chain(explore(0.5, 0.01), optax.sgd(0.05, momentum=0.9))),
    (lambda: eadamw(0.01, weight_decay=0.1, alpha=1.0, explore_b1=0.3),
     lambda: optax.chain(explore(1.0, 0.3), optax.adamw(0.01, weight_decay=0.1))),
    (lambda: optax.chain(scale_by_lamb(0.9, 0.999, 1e-6, 0.01),
                         optax.scale_by_learning_rate(0.01)),
     lambda: optax.chain(optax.scale_by_adam(0.9, 0.999, 1e-6),
                         optax.add_decayed_weights(0.01, _matrices),
                         optax.masked(scale_by_trust_ratio(), _matrices),
                         optax.scale_by_learning_rate(0.01))),
], ids=["alto", "alto_small_batch_mask_true", "esgd_small_batch", "eadamw_b1_0.3",
        "scale_by_lamb"])
def test_alias_equals_its_chain_of_public_blocks(make_tx, make_chain, dtype):
  """Reordered for memory traffic (E's average after the base's state, ALTO's ‖u‖ from a
  recomputed Adam direction), the aliases compute what their chains compute."""
  tx, chain = make_tx(), make_chain()
  params = mlp_params(dtype)
  got, _ = run_library(tx, params, batches(8), jax.jit(tx.update))
  want, _ = run_library(chain, params, batches(8), jax.jit(chain.update))
  # bfloat16: ALTO's ‖u‖ is of u as XLA computes it in float32, the chain's of u rounded
  # to bfloat16; an ulp there moves an entry by a few ulps over the 8 steps.
  rtol = 1e-6 if dtype == jnp.float32 else 2e-2
  chex.assert_trees_all_close(got, want, rtol=rtol, atol=rtol * 1e-2)


def test_narrow_to_bfloat16_is_astype_bit_for_bit():
  """Every upper half of a float32 with the lower halves at the rounding boundaries."""
  upper = np.arange(1 << 16, dtype=np.uint32) << 16
  lower = np.array([0, 1, 0x4000, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF], np.uint32)
  x = jnp.asarray((upper[:, None] | lower[None, :]).ravel().view(np.float32))
  got, want = jax.jit(lambda x: (narrow(x, jnp.bfloat16), x.astype(jnp.bfloat16)))(x)
  bits = lambda y: np.asarray(jax.lax.bitcast_convert_type(y, jnp.uint16))
  nan = np.isnan(np.asarray(want, np.float32))
  np.testing.assert_array_equal(np.isnan(np.asarray(got, np.float32)), nan)
  np.testing.assert_array_equal(bits(got)[~nan], bits(want)[~nan])


# --- Overflow and precision --------------------------------------------------------------

BF16_MAX = float(jnp.finfo(jnp.bfloat16).max)  # 3.39e38


@pytest.mark.parametrize("dtype,big,traced", [
    (jnp.float32, 3e38, False), (jnp.bfloat16, BF16_MAX, False),
    (jnp.float32, 3e38, True),  # alpha, b1 traced, as under optax.inject_hyperparams
])
@pytest.mark.parametrize("alpha,b1,m,g", [
    (-5.0, 0.99, 1.0, -1.0),  # g - m overflows (the large-batch form reads the new m)
    (-5.0, 0.99, 1.0, 1.0),
    (0.5, 0.01, 0.66, 0.66),  # (1 + alpha (1 - b1)) g overflows
    (0.5, 0.01, 1.0, -0.33),  # g - m overflows
    (1.5, 0.5, 1.0, 0.66),  # the new-average form, whose coefficient is 1.5
])
def test_explore_keeps_finite_gradients_finite_near_the_float_max(dtype, big, traced, alpha, b1,
                                                                  m, g):
  """ĝ = (1 + c) g - c m and m' = b1 m + (1 - b1) g, exact values representable."""
  m = jnp.full((3,), m * big, dtype)  # a previous average near the largest float
  g = {"w": jnp.full((3,), g * big, dtype), "b": jnp.full((2,), -g * big, dtype)}
  mu = {"w": m, "b": -m[:2]}
  c = alpha * (1 - b1)
  want_g = jax.tree.map(lambda g, m: (1 + c) * np.float64(g) - c * np.float64(m), g, mu)
  want_m = jax.tree.map(lambda g, m: b1 * np.float64(m) + (1 - b1) * np.float64(g), g, mu)
  assert max(np.max(np.abs(v)) for v in jax.tree.leaves(want_g)) <= float(jnp.finfo(dtype).max)
  if traced:
    update = jax.jit(lambda g, s, a, b: explore(a, b).update(g, s))
    got_g, state = update(g, ExploreState(mu=mu), alpha, b1)
  else:
    got_g, state = jax.jit(explore(alpha, b1).update)(g, ExploreState(mu=mu))
  chex.assert_tree_all_finite((got_g, state))
  rtol = 1e-6 if dtype == jnp.float32 else 1e-2
  chex.assert_trees_all_close(jax.tree.map(np.float64, got_g), want_g, rtol=rtol)
  chex.assert_trees_all_close(jax.tree.map(np.float64, state.mu), want_m, rtol=rtol)


def test_esgd_with_a_3e38_gradient_stays_finite_like_sgd():
  data = [{"w": jnp.full((2, 2), s * 3e38, jnp.float32), "b": jnp.full((3,), -s * 3e38)}
          for s in (1, 1, -1, 1)]
  params = jax.tree.map(jnp.zeros_like, data[0])
  opt, reference = esgd(0.1), ref.WithExplore(ref.Explore(-5.0, 0.99), ref.SGD(0.1))
  want, state, update = flat(params), opt.init(params), jax.jit(opt.update)
  for g in data:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
    want = reference.step(want, flat(g))
    chex.assert_tree_all_finite((params, state))
    for k, v in flat(params).items():
      np.testing.assert_allclose(v, want[k], rtol=1e-5)


def test_norms_of_float64_params_are_float64():
  """Clip and trust ratio in float64: a float32 norm would be off by ~1e-8."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    u = {"a": jnp.asarray(rng.normal(size=(7, 5))), "b": jnp.asarray(rng.normal(size=3))}
    w = jax.tree.map(lambda v: 3.0 + v, u)
    clipped, _ = clip_by_global_norm(0.5).update(u, ())
    scaled, _ = scale_by_trust_ratio().update(u, (), w)
    chex.assert_trees_all_equal_dtypes(clipped, u)
    clipped, scaled = flat(clipped), flat(scaled)
    np.testing.assert_allclose(ref.global_norm(clipped), 0.5, rtol=1e-14)
    for k in flat(u):
      np.testing.assert_allclose(np.linalg.norm(scaled[k]), np.linalg.norm(flat(w)[k]),
                                 rtol=1e-14)
      np.testing.assert_allclose(
          scaled[k] / np.linalg.norm(scaled[k]), flat(u)[k] / np.linalg.norm(flat(u)[k]),
          rtol=1e-13)


@pytest.mark.parametrize("size", [1e-25, 1e25])
def test_norms_of_tiny_and_huge_updates_are_exact(size):
  """Squares of 1e-25 underflow float32 and of 1e25 overflow it; the norms stay exact."""
  rng = np.random.default_rng(4)
  u64 = {"a": rng.normal(size=(4, 3)) * size, "b": rng.normal(size=5) * size}
  w64 = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
  u, w = (jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), t) for t in (u64, w64))
  clipped, _ = clip_by_global_norm(size / 10).update(u, ())
  np.testing.assert_allclose(ref.global_norm(flat(clipped)) / (size / 10), 1.0, rtol=1e-5)
  scaled, _ = scale_by_trust_ratio().update(u, (), w)
  for k in u64:
    want = u64[k] * np.linalg.norm(w64[k]) / np.linalg.norm(u64[k])
    np.testing.assert_allclose(np.asarray(scaled[k], np.float64), want, rtol=1e-5)


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
  chex.assert_trees_all_equal(only(new_state, ExploreState).mu, only(state, ExploreState).mu)
  # ...and the Adam part sees a zero gradient: its moments only decay.
  adam_mu = lambda s: only(s, optax.ScaleByAdamState).mu
  chex.assert_trees_all_close(adam_mu(new_state), jax.tree.map(lambda m: 0.9 * m, adam_mu(state)),
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
