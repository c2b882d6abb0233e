"""Single-device tests of optaxplus.training: TrainState, make_train_step, nnx_grad_fn."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

from optaxplus import accumulation
from optaxplus import checkpoint
from optaxplus import polyak
from optaxplus import training
# By name: the package re-exports the functions `sam` and `explore` over the modules.
from optaxplus.exploration import alto, eadam, eadamw, esgd
from optaxplus.sharpness import asam, sam, unified_sam, usam
from tests.jaxprs import primitives_in_conds


class SmallCNN(nn.Module):
  """Conv → BatchNorm → ReLU → Dense: the smallest model with mutable state."""

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def _cnn_problem(tx, batch_size=8):
  model = SmallCNN()
  rng_x, rng_y, rng_init = jax.random.split(jax.random.key(0), 3)
  batch = {'x': jax.random.normal(rng_x, (batch_size, 6, 6, 1)),
           'y': jax.random.randint(rng_y, (batch_size,), 0, 3)}
  variables = model.init(rng_init, batch['x'])
  state = training.TrainState.create(
      apply_fn=model.apply, params=variables['params'], tx=tx,
      model_state={'batch_stats': variables['batch_stats']})

  def loss_fn(params, model_state, batch):
    logits, model_state = model.apply({'params': params, **model_state}, batch['x'],
                                      mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()
    return loss, (model_state, {'accuracy': jnp.mean(logits.argmax(-1) == batch['y'])})

  # Jitted so that the tests' own reference evaluations do not run op by op.
  return state, batch, jax.jit(loss_fn)


def _linear_problem(tx):
  x = jax.random.normal(jax.random.key(1), (8, 3))
  batch = {'x': x, 'y': x @ jnp.array([1.0, -2.0, 0.5]) + 0.1}
  params = {'w': jnp.zeros(3), 'b': jnp.zeros(())}

  def loss_fn(params, batch):
    return jnp.mean((batch['x'] @ params['w'] + params['b'] - batch['y']) ** 2)

  return training.TrainState.create(apply_fn=None, params=params, tx=tx), batch, loss_fn


def _probe_sam(delta):
  """An optimizer whose update is ``grad_fn(params + delta)``: exposes what grad_fn does."""
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params, *, grad_fn, **extra_args):
    del updates, extra_args
    return grad_fn(jax.tree.map(lambda p: p + delta, params)), state

  return optax.GradientTransformationExtraArgs(init, update)


def test_train_state_forwards_value_and_replaces_fields():
  tx = optax.polyak_sgd(max_learning_rate=1.0)
  params = {'w': jnp.array([1.0, -2.0])}
  state = training.TrainState.create(apply_fn=None, params=params, tx=tx)
  loss, grads = jax.value_and_grad(lambda p: jnp.sum(p['w'] ** 2))(params)
  new = state.apply_gradients(grads=grads, value=loss, model_state={'n': 1})
  updates, _ = tx.update(grads, tx.init(params), params, value=loss)
  chex.assert_trees_all_close(new.params, optax.apply_updates(params, updates))
  assert new.model_state == {'n': 1} and int(new.step) == 1
  # A plain GradientTransformation is wrapped so that it ignores the extra args.
  plain = optax.GradientTransformation(*optax.sgd(0.1)[:2])
  state = training.TrainState.create(apply_fn=None, params=params, tx=plain)
  chex.assert_trees_all_close(state.apply_gradients(grads=grads, value=loss).params['w'],
                              params['w'] - 0.1 * grads['w'])
  # Flax's fp8 convention: the OVERWRITE_WITH_GRADIENT collection is replaced, not optimized.
  overwrite = train_state.OVERWRITE_WITH_GRADIENT
  state = training.TrainState.create(
      apply_fn=None, params={'params': params, overwrite: {'scale': jnp.ones(())}}, tx=tx)
  new = state.apply_gradients(
      grads={'params': grads, overwrite: {'scale': jnp.array(3.0)}}, value=loss)
  chex.assert_trees_all_close(new.params['params'], optax.apply_updates(params, updates))
  assert float(new.params[overwrite]['scale']) == 3.0


@pytest.mark.parametrize('make_tx', [
    lambda: polyak.momsps(), lambda: optax.sgd(0.1, momentum=0.9)])
def test_train_step_matches_manual_updates(make_tx):
  tx = make_tx()
  state, batch, loss_fn = _linear_problem(tx)
  train_step = jax.jit(training.make_train_step(loss_fn))
  params, opt_state = state.params, tx.init(state.params)
  for _ in range(5):
    state, metrics = train_step(state, batch)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics['grad_norm'], optax.tree.norm(grads), rtol=1e-6)
  chex.assert_trees_all_close(state.params, params, rtol=1e-6)
  step_size = optax.tree_utils.tree_get(opt_state, 'step_size')
  if step_size is None:
    assert 'step_size' not in metrics
  else:
    np.testing.assert_allclose(metrics['step_size'], step_size, rtol=1e-6)


def test_cnn_with_batchnorm_carries_state_and_aux():
  state, batch, loss_fn = _cnn_problem(polyak.momsps())
  train_step = jax.jit(training.make_train_step(loss_fn, has_aux=True, has_state=True))
  _, (expected_state, _) = loss_fn(state.params, state.model_state, batch)
  state, metrics = train_step(state, batch)
  chex.assert_trees_all_close(state.model_state, expected_state)
  assert set(metrics) == {'loss', 'grad_norm', 'step_size', 'aux'}
  assert 0.0 <= float(metrics['aux']['accuracy']) <= 1.0
  for _ in range(3):
    state, metrics = train_step(state, batch)
  chex.assert_tree_all_finite((state, metrics))


def test_grad_fn_is_the_gradient_on_the_same_batch_and_keeps_one_pass_of_statistics():
  delta = 0.01
  state, batch, loss_fn = _cnn_problem(_probe_sam(delta))
  train_step = jax.jit(training.make_train_step(loss_fn, has_aux=True, has_state=True))
  new, _ = train_step(state, batch)
  perturbed = jax.tree.map(lambda p: p + delta, state.params)
  expected = jax.grad(lambda p: loss_fn(p, state.model_state, batch)[0])(perturbed)
  # The probe's update is the grad_fn output: params move by exactly that gradient.
  chex.assert_trees_all_close(
      jax.tree.map(lambda a, b: a - b, new.params, state.params), expected, rtol=1e-5,
      atol=1e-7)
  _, (clean_state, _) = loss_fn(state.params, state.model_state, batch)
  chex.assert_trees_all_close(new.model_state, clean_state)


def test_static_sam_step_alternates_two_compiled_steps_as_every_k_does():
  """sam_step from Python: the every_k=3 trajectory from steps without a conditional."""
  state, batch, loss_fn = _cnn_problem(unified_sam(optax.sgd(0.1, momentum=0.9), 0.05,
                                                   every_k=3))
  train_step = training.make_train_step(loss_fn, has_aux=True, has_state=True)
  for sam_step in (True, False):
    jaxpr = jax.make_jaxpr(lambda s, b: train_step(s, b, sam_step=sam_step))(state, batch)
    # No convolution inside a conditional (a norm's out-of-range fallback may be one).
    assert 'conv_general_dilated' not in primitives_in_conds(jaxpr)
  in_graph = jax.jit(train_step)
  static = jax.jit(train_step, static_argnames='sam_step')
  expected = got = state
  for i in range(6):
    expected, expected_metrics = in_graph(expected, batch)
    got, metrics = static(got, batch, sam_step=i % 3 == 0)
    chex.assert_trees_all_close((got.params, got.opt_state, got.model_state, metrics),
                                (expected.params, expected.opt_state,
                                 expected.model_state, expected_metrics),
                                rtol=1e-5, atol=1e-7)
  # ...and the schedule matters: SAM on every call gives other parameters.
  always, _ = static(state, batch, sam_step=True)
  for _ in range(5):
    always, _ = static(always, batch, sam_step=True)
  assert not np.allclose(jax.tree.leaves(always.params)[0], jax.tree.leaves(got.params)[0])


def test_non_scalar_loss_raises_before_compilation():
  state, batch, loss_fn = _linear_problem(polyak.momsps())
  per_example = lambda params, batch: (batch['x'] @ params['w'] - batch['y']) ** 2
  with pytest.raises(ValueError, match='scalar loss'):
    jax.jit(training.make_train_step(per_example))(state, batch)


def test_bad_options_raise():
  loss_fn = lambda p, b: 0.0
  with pytest.raises(ValueError, match='axis_name'):
    training.make_train_step(loss_fn, local_gradients=True)
  with pytest.raises(ValueError, match=r'accumulation_steps must be a whole number in \[1.0'):
    training.make_train_step(loss_fn, accumulation_steps=0)
  with pytest.raises(TypeError, match='accumulation_steps must be a whole number'):
    training.make_train_step(loss_fn, accumulation_steps=2.5)
  for bad in (True, None, '2', [2]):
    with pytest.raises(TypeError, match='accumulation_steps'):
      training.make_train_step(loss_fn, accumulation_steps=bad)
  for name in ('has_aux', 'has_state', 'has_rng', 'local_gradients'):
    for bad in (1, 'yes', None):
      with pytest.raises(TypeError, match=f'{name} must be True or False'):
        training.make_train_step(loss_fn, **{name: bad})
  with pytest.raises(TypeError, match='loss_fn must be a callable'):
    training.make_train_step('loss')
  state, batch, loss_fn = _linear_problem(optax.sgd(0.1))
  with pytest.raises(ValueError, match='accumulation_steps=3'):
    training.make_train_step(loss_fn, accumulation_steps=3)(state, batch)
  with pytest.raises(ValueError, match='rng'):
    training.make_train_step(loss_fn, has_rng=True)(state, batch)
  # A whole-number float or a concrete array is accepted like the int.
  for steps in (2.0, np.int64(2), jnp.array(2)):
    new, _ = jax.jit(training.make_train_step(loss_fn, accumulation_steps=steps))(state, batch)
    chex.assert_tree_all_finite(new.params)


def test_has_aux_mismatch_is_a_clear_error_at_trace_time_naming_which_way():
  state, batch, loss_fn = _linear_problem(polyak.momsps())
  with_aux = lambda params, batch: (loss_fn(params, batch), {'n': 1})
  cases = [
      (with_aux, {}, r'make_train_step\(has_aux=False, has_state=False\) expects loss_fn to '
       r'return the scalar loss, but it returned a tuple of 2 .*pass has_aux=True'),
      (loss_fn, {'has_aux': True}, r'expects loss_fn to return \(loss, aux\), but it '
       r'returned an array of shape \(\) and dtype float32: pass has_aux=False'),
      (lambda p, s, b: loss_fn(p, b), {'has_state': True},
       r'return \(loss, new_model_state\).*pass has_state=False'),
      (lambda p, s, b: (loss_fn(p, b), s), {'has_aux': True, 'has_state': True},
       r'return \(loss, \(new_model_state, aux\)\), but it returned a tuple of 2 '
       r'\(an array of shape \(\) and dtype float32, NoneType\)'),
  ]
  for fn, options, match in cases:
    with pytest.raises(TypeError, match=match):
      jax.jit(training.make_train_step(fn, **options))(state, batch)
  model = NNXNet(nnx.Rngs(0))
  x = jnp.ones((4, 3))
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  with pytest.raises(TypeError, match=r'nnx_grad_fn\(has_aux=False\) expects .*has_aux=True'):
    training.nnx_grad_fn(lambda m, x: (jnp.mean(m(x)), 0), model, x)(params)
  with pytest.raises(TypeError, match=r'nnx_grad_fn\(has_aux=True\) .*pass has_aux=False'):
    training.nnx_grad_fn(lambda m, x: jnp.mean(m(x)), model, x, has_aux=True)(params)


def test_accumulation_keeps_value_consistent_with_the_gradient():
  state, batch, loss_fn = _linear_problem(polyak.momsps())
  full = jax.jit(training.make_train_step(loss_fn))
  accumulated = jax.jit(training.make_train_step(loss_fn, accumulation_steps=4))
  state_full = state_acc = state
  for _ in range(5):
    state_full, metrics_full = full(state_full, batch)
    state_acc, metrics_acc = accumulated(state_acc, batch)
    chex.assert_trees_all_close(metrics_acc, metrics_full, rtol=1e-5)
  chex.assert_trees_all_close(state_acc.params, state_full.params, rtol=1e-5)
  # optax.MultiSteps hands the optimizer the LAST micro-batch's loss: a different step.
  multi = optax.MultiSteps(polyak.momsps(), every_k_schedule=4)
  params, multi_state = state.params, multi.init(state.params)
  for i in range(4):
    micro = jax.tree.map(lambda x: x[i::4], batch)
    loss, grads = jax.value_and_grad(loss_fn)(params, micro)
    updates, multi_state = multi.update(grads, multi_state, params, value=loss)
  assert not np.allclose(optax.apply_updates(params, updates)['w'],
                         full(state, batch)[0].params['w'], rtol=1e-3)


def test_accumulation_with_bfloat16_params_keeps_their_dtype():
  state, batch, loss_fn = _linear_problem(polyak.momsps())
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), state.params)
  state = training.TrainState.create(apply_fn=None, params=params, tx=polyak.momsps())
  full, _ = jax.jit(training.make_train_step(loss_fn))(state, batch)
  accumulated, metrics = jax.jit(training.make_train_step(loss_fn, accumulation_steps=4))(
      state, batch)
  chex.assert_trees_all_equal_dtypes(accumulated.params, params)
  chex.assert_trees_all_close(accumulated.params, full.params, rtol=2e-2, atol=1e-3)
  assert metrics['grad_norm'].dtype == jnp.float32


def test_multi_steps_passes_the_mean_value_of_its_micro_steps():
  state, batch, loss_fn = _linear_problem(polyak.momsps())
  full, _ = jax.jit(training.make_train_step(loss_fn))(state, batch)
  tx = accumulation.multi_steps(polyak.momsps(), every_k_schedule=4)
  state = training.TrainState.create(apply_fn=None, params=state.params, tx=tx)
  step = jax.jit(training.make_train_step(loss_fn))
  micro = [jax.tree.map(lambda x: x[i::4], batch) for i in range(4)]
  nan_batch = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), micro[0])
  # A skipped (non-finite) call in the middle changes neither the gradient nor the value.
  for b in micro[:2] + [nan_batch] + micro[2:]:
    state, _ = step(state, b)
  chex.assert_trees_all_close(state.params, full.params, rtol=1e-5)
  chex.assert_trees_all_close(state.opt_state.multi_steps.inner_opt_state,
                              full.opt_state, rtol=1e-5)
  assert float(state.opt_state.value_mean) == 0.0
  assert int(state.opt_state.num_skipped) == 1


def test_accumulation_grad_fn_and_batchnorm():
  delta = 0.01
  state, batch, loss_fn = _cnn_problem(_probe_sam(delta))
  step = jax.jit(training.make_train_step(loss_fn, has_aux=True, has_state=True,
                                          accumulation_steps=2))
  new, metrics = step(state, batch)
  micro = [jax.tree.map(lambda x: x[i::2], batch) for i in range(2)]
  perturbed = jax.tree.map(lambda p: p + delta, state.params)
  grad = lambda p, b: jax.grad(lambda p: loss_fn(p, state.model_state, b)[0])(p)
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *[grad(perturbed, b) for b in micro])
  chex.assert_trees_all_close(jax.tree.map(lambda a, b: a - b, new.params, state.params),
                              expected, rtol=1e-5, atol=1e-7)
  # BatchNorm statistics run through the micro-batches in order, once each.
  model_state = state.model_state
  for b in micro:
    _, (model_state, _) = loss_fn(state.params, model_state, b)
  chex.assert_trees_all_close(new.model_state, model_state, rtol=1e-5, atol=1e-8)
  losses = [loss_fn(state.params, state.model_state, b)[0] for b in micro]
  np.testing.assert_allclose(metrics['loss'], np.mean(losses), rtol=1e-6)


def test_rng_reaches_the_loss_and_is_shared_with_grad_fn():
  seen = []

  def loss_fn(params, batch, rng):
    seen.append(rng)
    noise = jax.random.normal(rng, batch['x'].shape)
    return jnp.mean(((batch['x'] + noise) @ params['w'] - batch['y']) ** 2)

  state, batch, _ = _linear_problem(_probe_sam(0.0))
  step = training.make_train_step(loss_fn, has_rng=True)
  rng = jax.random.key(3)
  new, metrics = step(state, batch, rng)
  assert len(seen) == 2 and all(r is seen[0] for r in seen)
  expected = jax.grad(loss_fn)(state.params, batch, rng)
  chex.assert_trees_all_close(new.params['w'] - state.params['w'], expected['w'],
                              rtol=1e-6)


class NNXNet(nnx.Module):
  """Linear → BatchNorm → Linear, for the NNX path."""

  def __init__(self, rngs):
    self.hidden = nnx.Linear(3, 4, rngs=rngs)
    self.norm = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
    self.out = nnx.Linear(4, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.norm(self.hidden(x))))


def test_nnx_grad_fn_gradient_at_perturbed_params_one_pass_of_statistics():
  model = NNXNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, _probe_sam(0.01), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(2), (8, 3))
  y = jnp.sum(x, axis=1, keepdims=True)
  loss_fn = lambda model, x, y: jnp.mean((model(x) - y) ** 2)
  reference = nnx.clone(model)
  params_before = nnx.as_pure(nnx.state(model, nnx.Param))

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value=loss,
                     grad_fn=training.nnx_grad_fn(loss_fn, model, x, y))
    return loss

  train_step(model, optimizer, x, y)
  # One clean pass updates the statistics once.
  loss_fn(reference, x, y)
  chex.assert_trees_all_close(model.norm.mean[...], reference.norm.mean[...], rtol=1e-6)
  chex.assert_trees_all_close(model.norm.var[...], reference.norm.var[...], rtol=1e-6)
  # The update is the gradient at params + 0.01 with the pre-step statistics.
  graphdef, _, rest = nnx.split(nnx.clone(reference), nnx.Param, ...)
  perturbed = jax.tree.map(lambda p: p + 0.01, params_before)
  expected = jax.grad(
      lambda p: loss_fn(nnx.merge(graphdef, p, rest, copy=True), x, y))(perturbed)
  moved = jax.tree.map(lambda a, b: a - b, nnx.as_pure(nnx.state(model, nnx.Param)),
                       params_before)
  chex.assert_trees_all_close(moved, expected, rtol=1e-5, atol=1e-7)


EVERY_OPTIMIZER = {
    'sps': lambda: polyak.sps(),
    'momsps': lambda: polyak.momsps(),
    'momsps_smooth': lambda: polyak.momsps_smooth(batches_per_epoch=10),
    'momdecsps': lambda: polyak.momdecsps(),
    'momadasps': lambda: polyak.momadasps(),
    'decsps': lambda: polyak.decsps(),
    'adasps': lambda: polyak.adasps(),
    'sam': lambda: sam(optax.sgd(0.05, momentum=0.9)),
    'usam': lambda: usam(optax.sgd(0.05, momentum=0.9)),
    'asam': lambda: asam(optax.sgd(0.05, momentum=0.9)),
    'unified_sam_momsps': lambda: unified_sam(polyak.momsps(), rho=0.05, lam='1-1/t'),
    'esgd': lambda: esgd(0.05, momentum=0.9),
    'eadam': lambda: eadam(1e-2),
    'eadamw': lambda: eadamw(1e-2),
    'alto': lambda: alto(1e-2),
}


@pytest.mark.parametrize('name', list(EVERY_OPTIMIZER))
def test_linen_cnn_trains_and_checkpoints_with_every_optaxplus_optimizer(name, tmp_path):
  state, batch, loss_fn = _cnn_problem(EVERY_OPTIMIZER[name]())
  train_step = jax.jit(training.make_train_step(loss_fn, has_aux=True, has_state=True))
  template, first_loss = state, None
  for i in range(4):
    if i == 2:
      checkpoint.save_checkpoint(tmp_path, state)
      middle = state
    state, metrics = train_step(state, batch)
    first_loss = metrics['loss'] if first_loss is None else first_loss
  chex.assert_tree_all_finite(state)
  assert float(metrics['loss']) < float(first_loss)
  assert not np.allclose(state.model_state['batch_stats']['BatchNorm_0']['mean'],
                         template.model_state['batch_stats']['BatchNorm_0']['mean'])
  # Every optimizer state restores and training continues bit-identically.
  restored = checkpoint.restore_checkpoint(tmp_path, template)
  chex.assert_trees_all_equal(restored, jax.tree.map(jnp.asarray, middle))
  chex.assert_trees_all_equal_structs(restored, jax.tree.map(jnp.asarray, middle))
  for _ in range(2):
    restored, _ = train_step(restored, batch)
  chex.assert_trees_all_equal(restored, state)


@pytest.mark.parametrize('name', list(EVERY_OPTIMIZER))
def test_nnx_model_with_batchnorm_trains_with_every_optaxplus_optimizer(name):
  model = NNXNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, EVERY_OPTIMIZER[name](), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(2), (16, 3))
  y = jnp.sin(jnp.sum(x, axis=1, keepdims=True))
  loss_fn = lambda model, x, y: jnp.mean((model(x) - y) ** 2)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value=loss,
                     grad_fn=training.nnx_grad_fn(loss_fn, model, x, y))
    return loss

  losses = [float(train_step(model, optimizer, x, y)) for _ in range(4)]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert int(optimizer.step[...]) == 4
