"""The optimizer contract every public optaxplus factory meets, as optax asks of its own.

Ported from optax's generic tests (``contrib/_common_test.py``, ``_src/alias_test.py``,
``_src/transform_test.py``, ``_src/sharding_test.py``, ``tree_utils/_state_utils_test.py``):
jit, ``inject_hyperparams`` with every numeric hyperparameter changed mid-run through
``optax.tree_utils.tree_set``, dtypes from bfloat16 to float64, complex params, finite and
stable state, init on ``jax.ShapeDtypeStruct``, empty trees, unknown extra args,
``MultiSteps``, and state sharded like the params on a 4-device mesh.

Every public factory is ONE entry of ``ENTRIES``: the factory, the hyperparameters to call
it with and the keyword arguments its update needs. Adding an optimizer is adding an entry;
``test_every_public_factory_has_an_entry`` fails until it is there. What is specific to a
method (its reference trajectory, special and edge cases) lives in ``test_<module>.py``.

The toy problem is a weighted quadratic over a nested tree (a matrix in a nested dict, a
scalar and an empty subtree), so that ``value``, ``grad_fn`` and ``hvp_fn`` are real: the
loss, the gradient function and the Hessian-vector products of the "batch". The sharding
checks run in ONE subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(this file run as a script), started first so that it works beside the other checks; this
process keeps its device count.
"""

import dataclasses
import functools
import importlib
import inspect
import json
import numbers
import os
import pathlib
import pkgutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optaxplus
from optaxplus import lamb

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 30  # descent check; the other checks use the first few steps of the same run
DEVICES = 4  # the sharding checks run in one subprocess with this many CPU devices


@dataclasses.dataclass(eq=False)
class Entry:
  """One public factory under test.

  Attributes:
    name: the test id.
    factory: hyperparameters -> transformation (``functools.partial`` binds a base
      optimizer of a wrapper, as optax's contrib tests do).
    hyperparams: what the factory is called with; every numeric one, given or default,
      is injected by ``optax.inject_hyperparams``.
    needs: keyword arguments its ``update`` requires: ``'value'`` (the loss),
      ``'grad_fn'`` (the gradient function of the batch), ``'hvp_fn'`` (its
      Hessian-vector products at the params).
    descent: ``params + descent * update`` must lower the loss (-1 for ``scale_by_*``
      blocks that return ``+γ g``); None for a transform that does not descend.
    every_k: calls per applied update (MultiSteps-like entries).
    step_size: ``'first_update'``: the state holds the Polyak step and the first update
      is ``-γ g``; ``'readable'``: ``tree_get(state, 'step_size')`` only.
    complex_as_pairs: on complex params it must act as on the (real, imaginary) pairs:
      the Σ|g|² norm, the linear maths of SGD, heavy ball, E and SAM (not Adam's, nor
      ASAM's or LAMB's per-tensor |w|).
    new_values: values set with ``tree_set`` where the default change (see ``_changed``)
      would not affect the next update.
    inert: hyperparameters unused in this configuration (ASAM's ``eta`` without
      ``adaptive``); changing them must leave the update alone.
  """

  name: str
  factory: Callable[..., Any]
  hyperparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  needs: tuple[str, ...] = ()
  descent: Optional[float] = 1.0
  every_k: int = 1
  step_size: Optional[str] = None
  complex_as_pairs: bool = True
  new_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  inert: tuple[str, ...] = ()

  def make(self, **changes) -> optax.GradientTransformation:
    return self.factory(**{**self.hyperparams, **changes})


SGD = optax.sgd(0.1, momentum=0.9)
CAP = {'max_learning_rate': 1e-3}  # a cap the Polyak step hits, so changing it matters
VALUE = ('value',)

ENTRIES = [
    Entry('sps', optaxplus.sps, needs=VALUE, step_size='first_update', new_values=CAP),
    Entry('momsps', optaxplus.momsps, needs=VALUE, step_size='first_update',
          new_values=CAP),
    # init_step: the cap τ^{1/N} γ_{t−1} binds on the first step, not by the fourth, so
    # that every hyperparameter matters at one of them (batches_per_epoch=1 doubles it).
    Entry('momsps_smooth', optaxplus.momsps_smooth,
          dict(batches_per_epoch=1, init_step=4e-3), needs=VALUE,
          step_size='first_update'),
    Entry('momdecsps', optaxplus.momdecsps, needs=VALUE, step_size='first_update',
          new_values=CAP),
    Entry('decsps', optaxplus.decsps, needs=VALUE, step_size='first_update',
          new_values=CAP),
    # A larger c: AdaSPS never takes a step larger than its previous one.
    Entry('momadasps', optaxplus.momadasps, needs=VALUE, step_size='first_update',
          new_values={'c': 2.0}),
    Entry('adasps', optaxplus.adasps, needs=VALUE, step_size='first_update',
          new_values={'c': 2.0}),
    Entry('scale_by_sps', optaxplus.scale_by_sps, needs=VALUE, descent=-1.0,
          step_size='first_update', new_values=CAP),
    # c = 1: the default c = 0.2 (made for momentum) is 5 Polyak steps and diverges here.
    Entry('scale_by_sps_smooth', optaxplus.scale_by_sps_smooth,
          dict(c=1.0, batches_per_epoch=1, init_step=0.05), needs=VALUE,
          descent=-1.0, step_size='first_update'),
    Entry('scale_by_decsps', optaxplus.scale_by_decsps, needs=VALUE, descent=-1.0,
          step_size='first_update', new_values=CAP),
    Entry('scale_by_adasps', optaxplus.scale_by_adasps, needs=VALUE, descent=-1.0,
          step_size='first_update', new_values={'c': 2.0}),
    Entry('unified_sam', functools.partial(optaxplus.unified_sam, SGD),
          dict(rho=0.05, lam=0.5), needs=('grad_fn',), inert=('eta',)),
    Entry('sam', functools.partial(optaxplus.sam, SGD), needs=('grad_fn',)),
    Entry('usam', functools.partial(optaxplus.usam, SGD), needs=('grad_fn',),
          inert=('eta', 'eps')),
    Entry('asam', functools.partial(optaxplus.asam, SGD), needs=('grad_fn',),
          complex_as_pairs=False),
    Entry('sam_momsps', functools.partial(optaxplus.sam, optaxplus.momsps()),
          needs=('value', 'grad_fn'), step_size='readable'),
    Entry('sam_perturbation', optaxplus.sam_perturbation, dict(rho=0.05), descent=None,
          inert=('eta',)),
    Entry('explore', optaxplus.explore, descent=-0.1),
    Entry('esgd', optaxplus.esgd, dict(learning_rate=0.05, momentum=0.9)),
    Entry('eadam', optaxplus.eadam, dict(learning_rate=0.05), complex_as_pairs=False),
    Entry('eadamw', optaxplus.eadamw, dict(learning_rate=0.05), complex_as_pairs=False),
    Entry('alto', optaxplus.alto, dict(learning_rate=0.05), complex_as_pairs=False),
    Entry('lamb.clip_by_global_norm', lamb.clip_by_global_norm, dict(max_norm=0.5),
          descent=-0.3),
    Entry('lamb.scale_by_trust_ratio', lamb.scale_by_trust_ratio, descent=-0.05,
          complex_as_pairs=False),
    Entry('lamb.scale_by_lamb', lamb.scale_by_lamb, dict(weight_decay=0.01),
          descent=-0.05, complex_as_pairs=False),
    Entry('multi_steps', functools.partial(optaxplus.multi_steps, optaxplus.momsps()),
          dict(every_k_schedule=3), needs=VALUE, every_k=3, step_size='readable',
          new_values={'every_k_schedule': 1}),
    # Preconditioned Polyak steps. Adam-like per-entry preconditioners do not act on a
    # complex entry as on its (real, imaginary) pair. b2 = 0.9 and ε = 0.5 (an ε that
    # binds) so that every hyperparameter changes an early update. SANIA's step is 1 while
    # (f − f*) / ⟨g, d⟩ > ½: f* = 15 (the loss at the start) makes it smaller.
    Entry('psps', optaxplus.psps, dict(momentum=0.9, b2=0.9, eps=0.5), needs=VALUE,
          step_size='readable', complex_as_pairs=False, new_values=CAP,
          inert=('seed', 'init_samples')),
    Entry('sania', optaxplus.sania, dict(momentum=0.9, b2=0.9, eps=0.5), needs=VALUE,
          step_size='readable', complex_as_pairs=False, new_values={'f_min': 15.0}),
    # c = 50: the default c and cap give the capped step on the first updates.
    Entry('scale_by_preconditioned_polyak',
          functools.partial(optaxplus.scale_by_preconditioned_polyak,
                            optaxplus.scale_by_adagrad_preconditioner()),
          needs=VALUE, descent=-1.0, step_size='readable', complex_as_pairs=False,
          new_values={**CAP, 'c': 50.0}),
    Entry('scale_by_sania',
          functools.partial(optaxplus.scale_by_sania, optaxplus.scale_by_adagrad_sqr()),
          needs=VALUE, descent=-1.0, step_size='readable', complex_as_pairs=False,
          new_values={'f_min': 15.0}),
    Entry('scale_by_adam_preconditioner', optaxplus.scale_by_adam_preconditioner,
          dict(b2=0.9, eps=0.5), descent=-0.05, complex_as_pairs=False),
    Entry('scale_by_adagrad_preconditioner', optaxplus.scale_by_adagrad_preconditioner,
          dict(eps=0.5), descent=-0.3, complex_as_pairs=False),
    Entry('scale_by_adam_sqr', optaxplus.scale_by_adam_sqr, dict(b2=0.9, eps=0.5),
          descent=-0.5, complex_as_pairs=False),
    Entry('scale_by_adagrad_sqr', optaxplus.scale_by_adagrad_sqr, dict(eps=0.5),
          descent=-2.0, complex_as_pairs=False),
    # The toy Hessian is diagonal, so every probe z ⊙ Hz is exact: the seed, the number of
    # probes and the decay of their average cannot matter; an ε of 2 binds (diag H = 1, 4).
    Entry('scale_by_hutchinson', optaxplus.scale_by_hutchinson, dict(init_samples=3),
          needs=('hvp_fn',), descent=-0.2, complex_as_pairs=False,
          new_values={'eps': 2.0}, inert=('b2', 'seed', 'init_samples')),
]

entries = pytest.mark.parametrize('entry', ENTRIES, ids=lambda e: e.name)


# The toy problem --------------------------------------------------------------------

_START = {'dense': {'kernel': [[0.5, -1.0, 1.5, 0.2], [0.3, 0.8, -0.4, 1.0]]},
          'scale': 1.5, 'frozen': {}}
_TARGET = {'dense': {'kernel': [[-0.5, 0.5, 0.0, 1.2], [1.0, -0.7, 0.6, -1.0]]},
           'scale': -0.5, 'frozen': {}}
_IMAGINARY = {  # imaginary parts of the complex problem's start and target
    'start': {'dense': {'kernel': [[0.2, 0.1, -0.3, 0.4], [-0.2, 0.5, 0.1, 0.0]]},
              'scale': 0.7, 'frozen': {}},
    'target': {'dense': {'kernel': [[0.4, -0.6, 0.2, 0.1], [0.0, 0.3, -0.5, 0.8]]},
               'scale': -0.3, 'frozen': {}},
}
# Curvatures 1 and 4: a Polyak step suits no leaf exactly and caps and momenta matter.
_WEIGHTS = {'dense': {'kernel': 0.5}, 'scale': 2.0, 'frozen': {}}
LOW_PRECISION = {'dense': {'kernel': jnp.bfloat16}, 'scale': jnp.float16, 'frozen': {}}
# Any keyword argument that no optimizer expects: every update must ignore it.
UNKNOWN = {'an_argument_no_optimizer_expects': 1.0}


def _is_list(x):
  return isinstance(x, list)


def _tree(values, dtypes=jnp.float32, imaginary=None):
  """``values`` (+ ``1j · imaginary``) as arrays of ``dtypes``, one dtype or a tree of them."""
  if not isinstance(dtypes, dict):
    dtypes = jax.tree.map(lambda _: dtypes, values, is_leaf=_is_list)
  if imaginary is None:
    imaginary = jax.tree.map(lambda v: 0, values, is_leaf=_is_list)
  return jax.tree.map(lambda v, i, d: jnp.asarray(np.asarray(v) + 1j * np.asarray(i), d)
                      if jnp.issubdtype(d, jnp.complexfloating) else jnp.asarray(v, d),
                      values, imaginary, dtypes, is_leaf=_is_list)


def params(dtypes=jnp.float32):
  return _tree(_START, dtypes)


def _abs_sq(x):
  return jnp.real(x * jnp.conj(x))


def loss(tree):
  """``Σ_leaves w Σ|p − t|²``, in the dtype of the params (minimum 0 at the target)."""
  complex_tree = any(jnp.iscomplexobj(x) for x in jax.tree.leaves(tree))
  target = (_tree(_TARGET, jnp.complex64, _IMAGINARY['target']) if complex_tree
            else _TARGET)
  terms = jax.tree.map(
      lambda p, t, w: w * jnp.sum(_abs_sq(p - jnp.asarray(t, p.dtype))),
      tree, target, _WEIGHTS, is_leaf=_is_list)
  leaves = jax.tree.leaves(terms)
  return sum(leaves[1:], leaves[0]) if leaves else jnp.zeros((), jnp.float32)


def gradient(loss_fn):
  # optax's convention: a complex gradient is conjugated before it reaches the optimizer
  # (the steepest ascent direction of a real loss), a no-op on real leaves.
  return lambda p: jax.tree.map(jnp.conj, jax.grad(loss_fn)(p))


def extra_args(entry, loss_fn, tree):
  """The keyword arguments ``entry``'s update needs at ``tree``."""
  args = {}
  if 'value' in entry.needs:
    args['value'] = loss_fn(tree)
  if 'grad_fn' in entry.needs:
    args['grad_fn'] = gradient(loss_fn)
  if 'hvp_fn' in entry.needs:
    args['hvp_fn'] = lambda v: jax.jvp(gradient(loss_fn), (tree,), (v,))[1]
  return args


def update(tx, entry, tree, state, loss_fn=loss, **unknown):
  """One ``tx.update`` at ``tree`` with the gradient and what ``entry`` needs."""
  grads = gradient(loss_fn)(tree)
  return tx.update(grads, state, tree, **extra_args(entry, loss_fn, tree), **unknown)


def apply(entry, tree, updates):
  """The params after ``updates``, in the direction that descends for ``entry``."""
  scale = 1.0 if entry.descent is None else entry.descent
  return optax.apply_updates(tree, jax.tree.map(lambda u: scale * u, updates))


def run(step, entry, tree, state, steps):
  """``steps`` calls of ``step(tree, state) -> (updates, state)``; every tree and state."""
  trees, states, all_updates = [tree], [state], []
  for _ in range(steps):
    updates, state = step(tree, state)
    tree = apply(entry, tree, updates)
    trees.append(tree)
    states.append(state)
    all_updates.append(updates)
  return trees, states, all_updates


def close(actual, desired, rtol=1e-5, atol=1e-6, **kwargs):
  chex.assert_trees_all_close(actual, desired, rtol=rtol, atol=atol, **kwargs)


def differs(a, b, rtol=1e-5, atol=1e-6) -> bool:
  """Whether two trees of arrays are NOT all close (the negation of ``close``)."""
  return not all(
      np.allclose(np.asarray(x, np.complex128), np.asarray(y, np.complex128), rtol, atol)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def shapes_and_dtypes(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


# Shared work: one optimizer and one compiled step per entry ---------------------------

@functools.cache
def optimizer(entry):
  return entry.make()


@functools.cache
def trajectory(entry):
  """The jitted f32 run of ``STEPS`` steps, and how many times its step was traced.

  Every update gets an extra keyword argument that no optimizer expects (UNKNOWN).
  """
  tx = optimizer(entry)
  traces = []

  @jax.jit
  def step(tree, state):
    traces.append(None)
    return update(tx, entry, tree, state, **UNKNOWN)

  trees, states, all_updates = run(step, entry, params(), tx.init(params()), STEPS)
  return trees, states, all_updates, len(traces)


def numeric_hyperparams(entry) -> dict[str, Any]:
  """Every hyperparameter, given or default, that inject_hyperparams turns into an array."""
  signature = inspect.signature(entry.factory)
  bound = signature.bind_partial(**entry.hyperparams)
  bound.apply_defaults()
  numeric = {}
  for name, value in bound.arguments.items():
    kind = signature.parameters[name].kind
    if kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
      continue
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
      numeric[name] = value
  return numeric


def injected(entry):
  return optax.inject_hyperparams(entry.factory)(**entry.hyperparams)


@functools.cache
def injected_run(entry, steps=4):
  """``steps`` jitted steps of the injected optimizer, and its jitted step."""
  tx = injected(entry)
  step = jax.jit(functools.partial(update, tx, entry))
  return (step, *run(step, entry, params(), tx.init(params()), steps))


# The checks ------------------------------------------------------------------------

def test_every_public_factory_has_an_entry():
  def unwrap(factory):
    return unwrap(factory.func) if isinstance(factory, functools.partial) else factory

  covered = {unwrap(entry.factory) for entry in ENTRIES}
  # The package's names and every public function of its public modules (optaxplus.lamb
  # keeps optax's names, so it is not imported into the package namespace).
  modules = [importlib.import_module(f'optaxplus.{module.name}')
             for module in pkgutil.iter_modules(optaxplus.__path__)
             if not module.name.startswith('_')]
  functions = [getattr(optaxplus, name) for name in optaxplus.__all__] + [
      value for module in modules for name, value in vars(module).items()
      if not name.startswith('_') and getattr(value, '__module__', None) == module.__name__]
  factories = {
      f'{f.__module__}.{f.__name__}' for f in functions
      if inspect.isfunction(f) and f not in covered
      and 'GradientTransformation' in str(inspect.signature(f).return_annotation)}
  assert not factories, f'public factories without an entry in ENTRIES: {sorted(factories)}'


@entries
def test_jit_with_unknown_args_matches_eager_and_descends(entry):
  """Jitted with an unknown extra argument, it computes what eager computes without it."""
  trees, states, all_updates, traces = trajectory(entry)
  tx = optimizer(entry)
  eager = run(functools.partial(update, tx, entry), entry, params(), tx.init(params()), 2)
  close(eager[2], all_updates[:2])
  close(eager[1], states[:3])
  assert traces == 1, f'the jitted step was traced {traces} times: the state changes type'
  chex.assert_trees_all_equal_dtypes(all_updates[-1], params())
  assert differs(trees[-1], trees[0]), 'the params never moved'
  chex.assert_tree_all_finite(trees)
  if entry.descent is not None:
    start, end = float(loss(trees[0])), float(loss(trees[-1]))
    assert end < 0.5 * start, f'loss {start:.4g} -> {end:.4g} in {STEPS} steps'


@entries
def test_state_is_finite(entry):
  _, states, _, _ = trajectory(entry)
  chex.assert_tree_all_finite(states)
  tx = optimizer(entry)
  with jax.debug_infs(True):
    state = tx.init(params())
    update(tx, entry, params(), state)


@entries
def test_state_keeps_structure_shapes_and_dtypes(entry):
  _, states, _, _ = trajectory(entry)
  for state in states[1:4]:
    chex.assert_trees_all_equal_structs(state, states[0])
    chex.assert_trees_all_equal_shapes_and_dtypes(state, states[0])


@entries
def test_abstract_init_and_update(entry):
  tx = optimizer(entry)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params())
  state = tx.init(params())
  expected_state = shapes_and_dtypes(state)
  # Directly on ShapeDtypeStruct, as optax's sharding tests, and traced.
  assert shapes_and_dtypes(tx.init(abstract)) == expected_state
  assert shapes_and_dtypes(jax.eval_shape(tx.init, abstract)) == expected_state
  abstract_state = jax.eval_shape(tx.init, abstract)
  updates, new_state = jax.eval_shape(functools.partial(update, tx, entry), abstract,
                                      abstract_state)
  assert shapes_and_dtypes(updates) == shapes_and_dtypes(params())
  assert shapes_and_dtypes(new_state) == expected_state


@entries
def test_map_params_is_a_no_op_with_the_identity(entry):
  tx = optimizer(entry)
  state = trajectory(entry)[1][1]
  chex.assert_trees_all_equal(optax.tree.map_params(tx, lambda v: v, state), state)


@entries
def test_empty_tree(entry):
  """``{}`` params (every other check has an empty subtree in its params)."""
  tree = {}
  tx = optimizer(entry)
  state = jax.jit(tx.init)(tree)
  sum_of_squares = lambda t: sum((jnp.sum(x**2) for x in jax.tree.leaves(t)), jnp.zeros(()))
  step = jax.jit(functools.partial(update, tx, entry, loss_fn=sum_of_squares))
  updates, new_state = step(tree, state)
  assert jax.tree.structure(updates) == jax.tree.structure(tree)
  chex.assert_tree_all_finite(new_state)
  chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


@pytest.mark.parametrize('entry', [e for e in ENTRIES if e.step_size],
                         ids=lambda e: e.name)
def test_polyak_step_size_is_readable(entry):
  trees, states, all_updates, _ = trajectory(entry)
  # After the first applied update (MultiSteps-like entries apply on their k-th call).
  steps = [optax.tree_utils.tree_get(state, 'step_size') for state in states[entry.every_k:]]
  assert all(np.isfinite(s) and s > 0 for s in steps), steps
  if entry.step_size == 'first_update':
    # The heavy ball starts from zero, so the first update is −γ_0 g_0 (+γ_0 g_0 for
    # scale_by_*): the step the state reports is the one taken.
    expected = jax.tree.map(lambda g: -steps[0] * g, gradient(loss)(trees[0]))
    close(jax.tree.map(lambda u: entry.descent * u, all_updates[0]), expected)


@entries
def test_inject_hyperparams_matches_the_factory(entry):
  numeric = numeric_hyperparams(entry)
  _, _, states, all_updates = injected_run(entry)
  assert set(states[0].hyperparams) == set(numeric)
  _, expected_states, expected_updates, _ = trajectory(entry)
  close(all_updates, expected_updates[:len(all_updates)])
  close([s.inner_state for s in states], expected_states[:len(states)])


def _hyperparam_cases():
  for entry in ENTRIES:
    for name in numeric_hyperparams(entry):
      yield pytest.param(entry, name, id=f'{entry.name}-{name}')


def _changed(value):
  """A valid new value: towards 1 from inside (0, 1), halved otherwise, 0 -> 0.5, int + 1."""
  if isinstance(value, numbers.Integral):
    return value + 1
  if value == 0:
    return 0.5
  if 0 < value < 1:
    return (1 + value) / 2
  return value / 2


@pytest.mark.parametrize('entry, name', list(_hyperparam_cases()))
def test_tree_set_changes_the_next_update(entry, name):
  """A hyperparameter set in the injected state acts as the factory built with it.

  Checked mid-run (step 3) or, where it does not act there (a cap that binds only early
  on, say), before the first step: the change must make a difference at one of them.
  """
  step, trees, states, _ = injected_run(entry)
  new = entry.new_values.get(name, _changed(numeric_hyperparams(entry)[name]))
  for point in (3, 0):  # 3 is odd: SAM's every_k = 2 skips it
    tree, state = trees[point], states[point]
    old = optax.tree_utils.tree_get(state, name)
    changed = optax.tree_utils.tree_set(state, **{name: jnp.asarray(new, old.dtype)})
    updates, _ = step(tree, changed)
    unchanged, _ = step(tree, state)
    if name in entry.inert:
      close(updates, unchanged)
    elif differs(updates, unchanged):
      break
  else:
    assert name in entry.inert, (
        f'{name}={new} gives the same updates as {name}={old} at steps 3 and 0: pick a '
        f'value in Entry.new_values that matters, or list {name} in Entry.inert')
  expected, _ = update(entry.make(**{name: new}), entry, tree, state.inner_state)
  close(updates, expected)


def _schedule_cases():
  for entry in ENTRIES:
    signature = inspect.signature(entry.factory)
    for name in numeric_hyperparams(entry):
      annotation = str(signature.parameters[name].annotation)
      if 'Callable' in annotation or 'Schedule' in annotation:
        yield pytest.param(entry, name, id=f'{entry.name}-{name}')


@pytest.mark.parametrize('entry, name', list(_schedule_cases()))
def test_schedule_hyperparameter_accepts_a_constant_schedule(entry, name):
  value = numeric_hyperparams(entry)[name]
  tx = entry.make(**{name: optax.constant_schedule(value)})
  step = jax.jit(functools.partial(update, tx, entry))
  _, _, all_updates = run(step, entry, params(), tx.init(params()), 3)
  close(all_updates, trajectory(entry)[2][:3])


@entries
def test_low_precision_dtypes(entry):
  _check_dtypes(entry, params(LOW_PRECISION))


@entries
def test_float64_dtypes(entry):
  with jax.enable_x64(True):
    _check_dtypes(entry, params(jnp.float64))


def _check_dtypes(entry, tree):
  """Updates in each param's dtype and a state whose types never change (optax's test)."""
  tx = optimizer(entry)

  @jax.jit
  def step(tree, state, really):
    def real_update():
      args = extra_args(entry, loss, tree)
      if 'value' in args:  # a loss in another dtype than the params, to confuse on purpose
        args['value'] = args['value'].astype(
            jnp.bfloat16 if tree['scale'].dtype != jnp.bfloat16 else jnp.float16)
      return tx.update(gradient(loss)(tree), state, tree, **args)
    # Both branches must have the same types: updates like params, state like state.
    return jax.lax.cond(really, real_update, lambda: (tree, state))

  state = tx.init(tree)
  states = [state]
  for _ in range(3):
    updates, state = step(tree, state, True)
    chex.assert_trees_all_equal_dtypes(updates, tree)
    chex.assert_tree_all_finite(updates)
    tree = apply(entry, tree, updates)
    states.append(state)
  chex.assert_trees_all_equal_dtypes(tree, params(jax.tree.map(lambda x: x.dtype, tree)))
  for s in states[1:]:
    chex.assert_trees_all_equal_structs(s, states[0])
    chex.assert_trees_all_equal_shapes_and_dtypes(s, states[0])


def _pairs(tree):
  """Each complex leaf as its (real, imaginary) pair of float32 leaves."""
  return jax.tree.map(lambda z: (jnp.real(z), jnp.imag(z)), tree)


def _unpair(tree, like):
  """The complex tree shaped as ``like`` whose leaves are the (real, imaginary) pairs."""
  return jax.tree.map(lambda _, pair: pair[0] + 1j * pair[1], like, tree)


@entries
def test_complex_params(entry):
  """Complex params as optax takes them: conjugated gradient, Σ|g|² norms, -γ g steps.

  Where the maths is linear in the gradient with norms over all entries (the Polyak
  family, SGD, the heavy ball, E, SAM), a complex leaf must act exactly as its real and
  imaginary parts side by side; elsewhere (Adam's moments, ASAM's and LAMB's |w|) the
  update must at least keep its imaginary part.
  """
  tx = optimizer(entry)
  tree = _tree(_START, jnp.complex64, _IMAGINARY['start'])
  step = jax.jit(functools.partial(update, tx, entry))
  _, _, all_updates = run(step, entry, tree, tx.init(tree), 3)
  chex.assert_trees_all_equal_dtypes(all_updates[-1], tree)
  chex.assert_tree_all_finite(all_updates)
  applied = all_updates[entry.every_k - 1]
  assert all(np.any(np.imag(u) != 0) for u in jax.tree.leaves(applied)), (
      'the imaginary part of the update was dropped')
  if not entry.complex_as_pairs:
    return
  pair_loss = lambda p: loss(_unpair(p, tree))
  pair_step = jax.jit(functools.partial(update, tx, entry, loss_fn=pair_loss))
  pairs = _pairs(tree)
  _, _, pair_updates = run(pair_step, entry, pairs, tx.init(pairs), 3)
  close(all_updates, [_unpair(u, tree) for u in pair_updates])


def test_sps_on_complex_params_matches_optax_polyak_sgd():
  """SPS with c = 1 is optax.polyak_sgd, whose norm is Σ|g|² and whose step is −γ g."""
  tree = {'w': jnp.array([1 + 1j, 2 - 1j], jnp.complex64)}
  grads = {'w': jnp.array([1 + 1j, 2 - 1j], jnp.complex64)}  # ‖g‖² = 7
  value = jnp.asarray(3.5)
  ours, _ = optaxplus.sps(c=1.0, max_learning_rate=1.0).update(
      grads, optaxplus.sps().init(tree), tree, value=value)
  polyak_sgd = optax.polyak_sgd(max_learning_rate=1.0)
  theirs, _ = polyak_sgd.update(grads, polyak_sgd.init(tree), tree, value=value)
  close(ours, theirs)
  close(ours, {'w': -0.5 * grads['w']})  # γ = 3.5 / 7


@entries
def test_multi_steps(entry):
  """In optax.MultiSteps(·, 3): zero updates for two calls, then the optimizer's own.

  The ``multi_steps`` entry accumulates by itself: its own run shows the same cadence.
  """
  _, _, expected_updates, _ = trajectory(entry)
  zeros = jax.tree.map(jnp.zeros_like, params())
  if entry.every_k > 1:
    for updates in expected_updates[:entry.every_k - 1]:
      chex.assert_trees_all_equal(updates, zeros)
    assert differs(expected_updates[entry.every_k - 1], zeros)
    return
  tx = optax.MultiSteps(optimizer(entry), 3)
  step = jax.jit(functools.partial(update, tx, entry))
  tree, state = params(), tx.init(params())
  for call in range(3):
    updates, state = step(tree, state)  # the same batch each time: the mean is its grad
    if call < 2:
      chex.assert_trees_all_equal(updates, zeros)
  close(updates, expected_updates[0])


# Sharding: one subprocess with DEVICES CPU devices checks every entry ---------------

def _sharding_check(entry):
  """Raises unless state and updates are sharded like the params, with and without types."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

  specs = {'dense': {'kernel': P(None, 'x')}, 'scale': P(), 'frozen': {}}
  is_spec = lambda x: isinstance(x, P)
  tx = optimizer(entry)

  def like_params(tree, reference, what):
    # Scalars (step counts, γ) are left out: they match the scalar param only by shape.
    by_shape = {x.shape: x.sharding for x in jax.tree.leaves(reference) if x.ndim}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      want = by_shape.get(leaf.shape)
      if want is not None and not leaf.sharding.is_equivalent_to(want, leaf.ndim):
        raise AssertionError(f'{what}{jax.tree_util.keystr(path)} is sharded as '
                             f'{leaf.sharding}, its params as {want}')

  # Sharding in types (optax's sharding tests): an explicit mesh.
  mesh = jax.make_mesh((DEVICES,), ('x',), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)
    tree = jax.device_put(params(), shardings)
    state0 = tx.init(tree)
    types = lambda t: jax.tree.map(jax.typeof, t)
    if types(jax.jit(tx.init)(tree)) != types(state0):
      raise AssertionError('jit(init) and init give states of different types')
    step = jax.jit(functools.partial(update, tx, entry))
    updates, state1 = step(tree, state0)
    _, state2 = step(apply(entry, tree, updates), state1)
    if not types(state0) == types(state1) == types(state2):
      raise AssertionError(f'state types change across updates:\n{types(state0)}\n'
                           f'{types(state1)}')
    if types(updates) != types(tree):
      raise AssertionError(f'updates {types(updates)} are not typed like params '
                           f'{types(tree)}')
    like_params(state2, tree, 'state')
  # Sharding propagated by jit from NamedSharding params (no sharding in types).
  mesh = jax.make_mesh((DEVICES,), ('x',), axis_types=(AxisType.Auto,))
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)
  tree = start = jax.device_put(params(), shardings)
  state = tx.init(tree)
  like_params(state, tree, 'init state')
  step = jax.jit(functools.partial(update, tx, entry))
  for _ in range(2):
    updates, state = step(tree, state)
    like_params(updates, tree, 'updates')
    like_params(state, tree, 'state')
    tree = apply(entry, tree, updates)
    like_params(tree, start, 'params')


def _sharding_main():
  assert jax.device_count() == DEVICES, jax.devices()
  results = {}
  for entry in ENTRIES:
    try:
      _sharding_check(entry)
      results[entry.name] = None
    except Exception as error:  # reported per entry by test_sharding
      results[entry.name] = f'{type(error).__name__}: {error}'[:3000]
  print('RESULTS ' + json.dumps(results))


_SUBPROCESS = []  # the sharding subprocess and its output files, once started


def _start_sharding_subprocess():
  if not _SUBPROCESS:
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}')
    stdout, stderr = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
    process = subprocess.Popen([sys.executable, __file__], cwd=ROOT, env=env,
                               stdout=stdout, stderr=stderr, text=True)
    _SUBPROCESS.extend([process, stdout, stderr])
  return _SUBPROCESS


@pytest.fixture(scope='module', autouse=True)
def _sharding_in_the_background(request):
  """Starts the sharding subprocess first, so that it runs beside the other checks."""
  if any(getattr(item, 'originalname', None) == 'test_sharding'
         for item in request.session.items):
    _start_sharding_subprocess()
  yield
  if _SUBPROCESS and _SUBPROCESS[0].poll() is None:
    _SUBPROCESS[0].kill()
    _SUBPROCESS[0].wait()


@pytest.fixture(scope='module')
def sharding_results():
  process, stdout, stderr = _start_sharding_subprocess()
  process.wait(timeout=600)
  stdout.seek(0)
  stderr.seek(0)
  out, err = stdout.read(), stderr.read()
  lines = [l for l in out.splitlines() if l.startswith('RESULTS ')]
  assert process.returncode == 0 and lines, out[-3000:] + err[-3000:]
  return json.loads(lines[-1][len('RESULTS '):])


@entries
def test_sharding(entry, sharding_results):
  assert entry.name in sharding_results
  assert sharding_results[entry.name] is None, sharding_results[entry.name]


if __name__ == '__main__':
  _sharding_main()
