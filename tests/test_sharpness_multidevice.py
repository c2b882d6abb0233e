"""Multi-device tests of optaxplus.sharpness: m-sharpness per device and per group, global view.

The devices run in ONE subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (``python -m
tests.test_sharpness_multidevice OUT``), which writes its parameters to ``OUT``; the tests in
this process compare them with the float64 NumPy reference. The device count of the
pytest process is never changed.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.references import sharpness as reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8
PER_DEVICE = 4  # examples per device: m in m-sharpness
SIZES = (4, 8, 8, 2)
STEPS = 6
LR, MOMENTUM, RHO, LAM = 0.1, 0.9, 0.1, '1-1/t'


def problem():
  rng = np.random.default_rng(1)
  flat = {n: v.astype(np.float32) for n, v in reference.mlp_init(rng, SIZES).items()}
  xs = rng.normal(size=(STEPS, DEVICES * PER_DEVICE, SIZES[0])).astype(np.float32)
  ys = rng.normal(size=(STEPS, DEVICES * PER_DEVICE, SIZES[-1])).astype(np.float32)
  return flat, xs, ys


# Device side: runs in the subprocess -------------------------------------------------

def run_on_devices(out_path):
  """Trains with shard_map, pmap, jit + NamedSharding and on one device; saves params."""
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from optaxplus.sharpness import unified_sam

  assert jax.device_count() == DEVICES, jax.devices()
  flat, xs, ys = problem()
  mesh = jax.make_mesh((DEVICES,), ('data',))

  def loss_fn(params, x, y):
    h = x
    for i in range(1, len(SIZES)):
      z = h @ params[f'w{i}'] + params[f'b{i}']
      h = jnp.tanh(z) if i < len(SIZES) - 1 else z
    return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, axis=-1))

  def make_step(tx, local_params=lambda p: p):
    def step(params, state, x, y):
      grads = jax.grad(loss_fn)(local_params(params), x, y)
      updates, state = tx.update(
          grads, state, params, grad_fn=lambda p: jax.grad(loss_fn)(p, x, y))
      return optax.apply_updates(params, updates), state
    return step

  def train(step, params, state, place=lambda x: x):
    for i in range(STEPS):
      params, state = step(params, state, place(xs[i]), place(ys[i]))
    return params

  def per_device_tx(every_k):
    return unified_sam(optax.sgd(LR, momentum=MOMENTUM), RHO, LAM, axis_name='data',
                           every_k=every_k)

  results, errors = {}, {}
  params = {n: jnp.asarray(v) for n, v in flat.items()}
  batch_sharding = NamedSharding(mesh, P('data'))
  shard_batch = lambda x: jax.device_put(x, batch_sharding)
  # shard_map types replicated params as unvarying and sums their gradient over the
  # axis; the local gradient is taken at params cast to varying.
  varying = lambda p: jax.lax.pcast(p, 'data', to='varying')
  specs = dict(mesh=mesh, in_specs=(P(), P(), P('data'), P('data')), out_specs=(P(), P()))
  for every_k in (1, 2):
    tx = per_device_tx(every_k)
    step = jax.jit(jax.shard_map(make_step(tx, varying), **specs))
    results[f'shard_map_k{every_k}'] = train(step, params, tx.init(params), shard_batch)
  tx = per_device_tx(1)
  step = jax.jit(jax.shard_map(make_step(tx), check_vma=False, **specs))
  results['shard_map_unchecked'] = train(step, params, tx.init(params), shard_batch)
  try:
    train(jax.jit(jax.shard_map(make_step(tx), **specs)), params, tx.init(params),
          shard_batch)
    errors['summed_gradient'] = 'no error'
  except ValueError as error:
    errors['summed_gradient'] = str(error)

  tx = per_device_tx(1)
  replicate = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * DEVICES), tree)
  split = lambda x: x.reshape(DEVICES, PER_DEVICE, *x.shape[1:])
  pmapped = train(jax.pmap(make_step(tx), axis_name='data'), replicate(params),
                  replicate(tx.init(params)), place=split)
  for name in flat:  # every device holds the same parameters
    np.testing.assert_array_equal(pmapped[name], np.stack([pmapped[name][0]] * DEVICES))
  results['pmap'] = {n: v[0] for n, v in pmapped.items()}

  tx = unified_sam(optax.sgd(LR, momentum=MOMENTUM), RHO, LAM)
  step = jax.jit(make_step(tx))
  replicated = jax.device_put(params, NamedSharding(mesh, P()))
  results['global_jit'] = train(step, replicated, tx.init(replicated), shard_batch)
  one_device = jax.device_put(params, jax.devices()[0])
  results['one_device'] = train(step, one_device, tx.init(one_device))

  results.update(run_grouped(make_step, train, params, loss_fn))

  arrays = {f'{run}/{n}': np.asarray(v) for run, tree in results.items()
            for n, v in tree.items()}
  np.savez(out_path, **arrays, **{f'errors/{k}': np.asarray(v) for k, v in errors.items()})


GRID = (2, 4)  # (replica, group): device (r, g) holds rows block 4 r + g of the batch
GROUPED = {'group': 'group', 'replica': 'replica', 'both': ('replica', 'group')}


def run_grouped(make_step, train, params, loss_fn):
  """Grouped m-sharpness on a (replica, group) mesh, one run per perturbation axis."""
  import jax
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from optaxplus import parallel, training
  from optaxplus.sharpness import unified_sam

  axes = ('replica', 'group')
  mesh = jax.make_mesh(GRID, axes)
  place = lambda x: jax.device_put(x, NamedSharding(mesh, P(axes)))
  varying = lambda p: jax.lax.pcast(p, axes, to='varying')
  results = {}
  for run, perturbation_axis_name in GROUPED.items():
    tx = unified_sam(optax.sgd(LR, momentum=MOMENTUM), RHO, LAM, axis_name=axes,
                     perturbation_axis_name=perturbation_axis_name)
    step = jax.jit(jax.shard_map(make_step(tx, varying), mesh=mesh,
                                 in_specs=(P(), P(), P(axes), P(axes)), out_specs=(P(), P())))
    results[f'grouped_{run}'] = train(step, params, tx.init(params), place)
  # Without type checks the gradient at a shared point is the device's own already.
  tx = unified_sam(optax.sgd(LR, momentum=MOMENTUM), RHO, LAM, axis_name=axes,
                   perturbation_axis_name='group')
  step = jax.jit(jax.shard_map(make_step(tx), mesh=mesh, check_vma=False,
                               in_specs=(P(), P(), P(axes), P(axes)), out_specs=(P(), P())))
  results['grouped_group_unchecked'] = train(step, params, tx.init(params), place)
  # The same through the training layer: make_train_step over both axes, local gradients.
  train_step = parallel.data_parallel(training.make_train_step(
      lambda p, batch: loss_fn(p, *batch), axis_name=axes, local_gradients=True),
      mesh, axis_name=axes)
  state = training.TrainState.create(apply_fn=None, params=params, tx=tx)
  results['grouped_group_builder'] = train(
      lambda _, state, x, y: (lambda new: (new.params, new))(train_step(state, (x, y))[0]),
      params, state)
  return results


# Host side: the tests ----------------------------------------------------------------

@pytest.fixture(scope='module')
def device_results(tmp_path_factory):
  out = tmp_path_factory.mktemp('sam_multidevice') / 'params.npz'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}',
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
  proc = subprocess.run([sys.executable, '-m', 'tests.test_sharpness_multidevice', str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  with np.load(out) as data:
    results = {}
    for key in data.files:
      run, name = key.split('/')
      results.setdefault(run, {})[name] = data[key]
  return results


def reference_run(shards, every_k=1):
  flat, xs, ys = problem()
  per_shard = xs.shape[1] // shards

  def grad_fn(params, step, shard):
    rows = slice(shard * per_shard, (shard + 1) * per_shard)
    return reference.mlp_loss_and_grad(params, xs[step, rows].astype(np.float64),
                                       ys[step, rows].astype(np.float64))

  return reference.run(flat, grad_fn, reference.SGDMomentum(LR, MOMENTUM), STEPS,
                       rho=RHO, lam=LAM, every_k=every_k, shards=shards)


def grouped_reference_run(perturbation_axis_name):
  """One perturbation per group of devices: the rows of the devices sharing the axis."""
  flat, xs, ys = problem()
  replicas, groups = GRID
  block = xs.shape[1] // (replicas * groups)
  devices = {  # device (r, g) is block 4 r + g; a group varies the perturbation's axes
      'group': [[groups * r + g for g in range(groups)] for r in range(replicas)],
      'replica': [[groups * r + g for r in range(replicas)] for g in range(groups)],
  }[perturbation_axis_name]
  rows = [np.concatenate([np.arange(b * block, (b + 1) * block) for b in group])
          for group in devices]

  def grad_fn(params, step, shard):
    return reference.mlp_loss_and_grad(params, xs[step, rows[shard]].astype(np.float64),
                                       ys[step, rows[shard]].astype(np.float64))

  return reference.run(flat, grad_fn, reference.SGDMomentum(LR, MOMENTUM), STEPS,
                       rho=RHO, lam=LAM, shards=len(rows))


def assert_close(params, expected, rtol=1e-4, atol=1e-5):
  for name, value in expected.items():
    np.testing.assert_allclose(params[name], value, rtol=rtol, atol=atol, err_msg=name)


def test_per_device_and_global_references_differ():
  # Otherwise the tests below could not tell m-sharpness from a global perturbation.
  per_device, global_ = reference_run(DEVICES), reference_run(1)
  assert max(np.max(np.abs(per_device[n] - global_[n])) for n in global_) > 1e-3


@pytest.mark.parametrize('every_k', [1, 2])
def test_shard_map_perturbs_per_device(device_results, every_k):
  assert_close(device_results[f'shard_map_k{every_k}'], reference_run(DEVICES, every_k))


def test_shard_map_without_type_checks_perturbs_per_device(device_results):
  assert_close(device_results['shard_map_unchecked'], reference_run(DEVICES))


def test_shard_map_rejects_a_gradient_already_summed_over_devices(device_results):
  message = str(device_results['errors']['summed_gradient'])
  assert 'needs the LOCAL gradient' in message and 'pcast' in message, message


def test_pmap_perturbs_per_device(device_results):
  assert_close(device_results['pmap'], reference_run(DEVICES))


def test_jit_with_named_sharding_perturbs_globally(device_results):
  assert_close(device_results['global_jit'], reference_run(1))
  assert_close(device_results['global_jit'], device_results['one_device'], rtol=1e-5,
               atol=1e-6)


@pytest.mark.parametrize('axis', ['group', 'replica'])
def test_grouped_perturbation_per_group_of_devices(device_results, axis):
  assert_close(device_results[f'grouped_{axis}'], grouped_reference_run(axis))


def test_grouped_perturbation_without_type_checks(device_results):
  assert_close(device_results['grouped_group_unchecked'], grouped_reference_run('group'))


def test_grouped_perturbation_through_make_train_step(device_results):
  """make_train_step(axis_name=(replica, group), local_gradients=True) under data_parallel."""
  assert_close(device_results['grouped_group_builder'], grouped_reference_run('group'))


def test_grouped_references_differ_from_per_device_and_global():
  # m = 16 (groups) lies between m = 4 (devices) and m = 32 (global): all three differ.
  runs = [grouped_reference_run('group'), grouped_reference_run('replica'),
          reference_run(DEVICES), reference_run(1)]
  for i, a in enumerate(runs):
    for b in runs[i + 1:]:
      assert max(np.max(np.abs(a[n] - b[n])) for n in a) > 1e-4


def test_perturbing_over_every_axis_is_the_global_perturbation(device_results):
  assert_close(device_results['grouped_both'], reference_run(1))
  assert_close(device_results['grouped_both'], device_results['global_jit'], rtol=1e-5,
               atol=1e-6)


def test_perturbation_axes_must_be_among_the_averaged_axes():
  import optax

  from optaxplus.sharpness import unified_sam
  base = optax.sgd(LR)
  for axis_name, perturbation_axis_name in ((None, 'group'), ('replica', 'group'),
                                            (('replica', 'group'), ('group', 'model'))):
    with pytest.raises(ValueError, match=r"^perturbation_axis_name must be None or axes "
                                         r"among axis_name=.*not among them"):
      unified_sam(base, axis_name=axis_name, perturbation_axis_name=perturbation_axis_name)
  with pytest.raises(TypeError, match='^perturbation_axis_name must be a mapped axis'):
    unified_sam(base, axis_name='data', perturbation_axis_name=('data', 1))
  unified_sam(base, axis_name=('replica', 'group'), perturbation_axis_name='group')


if __name__ == '__main__':
  run_on_devices(sys.argv[1])
