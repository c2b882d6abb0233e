"""Memory-traffic regression test: every update's compiled bytes stay at their targets.

``cost_analysis()`` of the compiled update is deterministic, so these are exact checks, not
timings. The targets are XLA:CPU's floors (benchmarks/bytes_accessed.py explains them).
"""

import functools

import jax
import jax.numpy as jnp
import optax
import pytest

import optaxplus
from benchmarks import bytes_accessed
from benchmarks import update_timing

TARGETED = [case for case in bytes_accessed.CASES if case.target]
DTYPES = ('float32', 'bfloat16')


@functools.cache
def params(dtype: str):
  return update_timing.transformer_params(128, 2, 1024, getattr(jnp, dtype))


@functools.cache
def measurement(name: str, dtype: str) -> bytes_accessed.Measurement:
  case = next(case for case in bytes_accessed.CASES if case.name == name)
  return bytes_accessed.measure(case.make(), params(dtype), case.extra)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', [case.name for case in TARGETED])
def test_passes_at_target(name, dtype):
  target = next(case.target[dtype] for case in TARGETED if case.name == name)
  assert measurement(name, dtype).passes <= target


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', [case.name for case in bytes_accessed.CASES
                                  if case.name.startswith('optaxplus')])
def test_no_param_sized_copies_nor_host_work(name, dtype):
  case = next(case for case in bytes_accessed.CASES if case.name == name)
  result = measurement(name, dtype)
  assert (result.copies > 0) == case.copies_state_on_cpu  # a fix there must lower its target
  assert result.host_ops == ()


@pytest.mark.parametrize('dtype', DTYPES)
def test_sam_every_k_holds_at_most_one_tree_of_temporaries(dtype):
  """The SAM gradient handed out of every_k's conditional: one tree more than plain SAM.

  bfloat16: inside the conditional XLA:CPU also keeps the float32 widening of the
  gradient that the radius norm sums (2 bf16-sized trees; plain SAM sums it fused).
  """
  plain = measurement('optaxplus.sam(sgd momentum)', dtype)
  every_k = measurement('optaxplus.sam(sgd momentum, every_k=5)', dtype)
  widening = 2 if dtype == 'bfloat16' else 0
  assert every_k.temporaries <= plain.temporaries + 1.05 + widening


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('plain, heavy_ball', [
    ('optaxplus.psps', 'optaxplus.psps (momentum=0.9)'),
    ('optaxplus.sania', 'optaxplus.sania (adagrad_sqr, momentum=0.9)')])
def test_preconditioned_polyak_moves_no_more_than_adam_and_one_pass(plain, heavy_ball, dtype):
  adam = measurement('optax.adam', dtype).passes  # (+ 0.05: the scalars)
  assert measurement(plain, dtype).passes <= adam + 1.05
  # The heavy ball's buffer is Adam's m, but Adam updates it in the pass that reads g;
  # here the reduction for ⟨g, d⟩ (reading g and v) comes before it.
  assert measurement(heavy_ball, dtype).passes <= adam + 2.05


def test_a_wasteful_update_fails_the_target():
  """The measurement sees waste: ``sps`` after a forced float32 copy of the gradient."""
  def materialise_upcast(grads):
    return jax.tree.map(lambda g: jax.lax.optimization_barrier(g.astype(jnp.float32))
                        .astype(g.dtype) * 1.0001, grads)
  wasteful = optax.chain(optax.stateless(lambda g, p=None: materialise_upcast(g)),
                         optaxplus.sps())
  result = bytes_accessed.measure(wasteful, params('bfloat16'), bytes_accessed.VALUE)
  sps_target = next(case.target['bfloat16'] for case in TARGETED
                    if case.name == 'optaxplus.sps')
  assert result.passes > sps_target


def test_one_compilation_over_changing_values():
  tx = optaxplus.momsps()
  tree = params('float32')

  @jax.jit
  def step(params, state, value):
    updates, state = tx.update(params, state, params, value=value)
    return optax.apply_updates(params, updates), state

  state = tx.init(tree)
  for value in (1.0, 2.0, 3.5):
    tree, state = step(tree, state, jnp.float32(value))
  assert step._cache_size() == 1
