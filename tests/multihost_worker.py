"""One process of the 2-process data-parallel test in test_multihost.py.

``python multihost_worker.py <process_id> <port> <output.npz>``, with 2 CPU devices per
process (``XLA_FLAGS``): joins the run through ``jax.distributed.initialize`` on loopback
with gloo CPU collectives, trains on its half of each global batch with the ``jit`` and
the ``shard_map`` paths of ``data_parallel`` (one run saving and restoring an orbax
checkpoint halfway), and with FSDP: params and optimizer state split over all 4 devices
of both processes (a ``(1 data, 4 fsdp)`` mesh), each run saving and restoring the sharded
state halfway. Saves the final parameters and losses, and this process's rows of an
array split over both processes after an orbax round trip.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

# Run as a script, the repository root is not on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optaxplus import checkpoint, parallel, polyak, training  # noqa: E402
from optaxplus.sharpness import unified_sam  # noqa: E402

STEPS = 5
GLOBAL_BATCH = 16
OPTIMIZERS = ('momsps', 'unified_sam')


def problem():
  """Initial parameters and STEPS global batches of a small regression (NumPy, float32)."""
  rng = np.random.default_rng(0)
  params = {'w1': rng.normal(size=(3, 8)) / np.sqrt(3), 'b1': np.zeros(8),
            'w2': rng.normal(size=(8, 1)) / np.sqrt(8), 'b2': np.zeros(1)}
  x = rng.normal(size=(STEPS, GLOBAL_BATCH, 3))
  batches = [{'x': xi, 'y': np.sin(xi.sum(axis=1, keepdims=True))} for xi in x]
  as32 = lambda tree: {k: np.asarray(v, np.float32) for k, v in tree.items()}
  return as32(params), [as32(b) for b in batches]


def make_optimizer(name):
  if name == 'momsps':
    return polyak.momsps()
  return unified_sam(optax.sgd(0.05, momentum=0.9), rho=0.05)


def loss_fn(params, batch):
  hidden = jnp.tanh(batch['x'] @ params['w1'] + params['b1'])
  return jnp.mean((hidden @ params['w2'] + params['b2'] - batch['y']) ** 2)


def replicated_state(mesh, name, params):
  state = training.TrainState.create(apply_fn=None, params=params, tx=make_optimizer(name))
  return jax.device_put(state, NamedSharding(mesh, PartitionSpec()))


def fsdp_state(mesh, name, params):
  """The state created inside jit straight into its FSDP shardings, and those shardings."""
  create = lambda: training.TrainState.create(apply_fn=None, params=params,
                                              tx=make_optimizer(name))
  sharding = parallel.fsdp_sharding(jax.eval_shape(create), mesh, min_size=8)
  return jax.jit(create, out_shardings=sharding)(), sharding


def train(step, new_state, batches, rows, checkpoint_directory=None):
  """Trains on this process's ``rows``; saves and restores halfway if given a directory."""
  state = new_state()
  losses = []
  for i, batch in enumerate(batches):
    if checkpoint_directory is not None and i == len(batches) // 2:
      checkpoint.save_checkpoint(checkpoint_directory, state)
      state = checkpoint.restore_checkpoint(checkpoint_directory, new_state())
    state, metrics = step(state, {k: v[rows] for k, v in batch.items()})
    losses.append(float(metrics['loss']))
  return state, losses


def train_fsdp(name, params, batches, rows, directory):
  """FSDP over both processes' devices, through a checkpoint of the sharded state."""
  # Auto axes: XLA gathers each weight where the matmuls need it.
  mesh = jax.make_mesh((1, jax.device_count()), ('data', 'fsdp'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  _, sharding = fsdp_state(mesh, name, params)
  step = parallel.data_parallel(training.make_train_step(loss_fn), mesh,
                                axis_name=('data', 'fsdp'), state_sharding=sharding,
                                donate_state=True)
  state, losses = train(step, lambda: fsdp_state(mesh, name, params)[0], batches, rows,
                        directory)
  # The restored state's tx is another object: compare the leaves' shardings.
  assert [x.sharding for x in jax.tree.leaves(state)] == jax.tree.leaves(sharding)
  # w1 (3, 8) is split in 4 along its columns, 2 on each process.
  assert not state.params['w1'].is_fully_addressable
  assert state.params['w1'].addressable_shards[0].data.shape == (3, 2)
  results = {f'{name}/fsdp/losses': np.array(losses)}
  for key, value in state.params.items():
    results[f'{name}/fsdp/{key}'] = np.asarray(
        multihost_utils.process_allgather(value, tiled=True))
  return results


def checkpoint_of_an_array_split_over_both_processes(mesh, directory):
  """Saves and restores an array each process holds half of; returns this process's rows."""
  rows = jax.process_index() * 8 + np.arange(8, dtype=np.float32)
  sharded = parallel.shard_batch({'x': rows}, mesh)
  checkpoint.save_checkpoint(directory, sharded, step=0)
  restored = checkpoint.restore_checkpoint(directory, sharded)
  assert restored['x'].sharding == sharded['x'].sharding, restored['x'].sharding
  return np.concatenate([np.asarray(s.data) for s in restored['x'].addressable_shards])


def main():
  process_id, port, output = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                             process_id=process_id, initialization_timeout=60)
  assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  half = GLOBAL_BATCH // 2
  rows = slice(process_id * half, (process_id + 1) * half)
  params, batches = problem()
  results = {}
  for name in OPTIMIZERS:
    for how, axis_name in (('jit', None), ('shard_map', 'data')):
      step = parallel.data_parallel(training.make_train_step(loss_fn, axis_name=axis_name),
                                    mesh)
      # One run also goes through a multi-host orbax checkpoint halfway.
      directory = (os.path.join(os.path.dirname(output), 'checkpoint')
                   if (name, how) == ('momsps', 'jit') else None)
      state, losses = train(step, lambda: replicated_state(mesh, name, params), batches,
                            rows, directory)
      results[f'{name}/{how}/losses'] = np.array(losses)
      for key, value in state.params.items():
        results[f'{name}/{how}/{key}'] = np.asarray(value)
    results.update(train_fsdp(name, params, batches, rows, os.path.join(
        os.path.dirname(output), f'fsdp_checkpoint_{name}')))
  results['sharded_checkpoint_rows'] = checkpoint_of_an_array_split_over_both_processes(
      mesh, os.path.join(os.path.dirname(output), 'sharded_checkpoint'))
  np.savez(output, **results)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
