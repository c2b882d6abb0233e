"""Two processes on loopback (jax.distributed, gloo CPU collectives) train like one process.

They do so with the state replicated (jit, shard_map) and with FSDP, params and optimizer
state split over the devices of both processes (saved and restored halfway).

Each process has 2 CPU devices and feeds its half of every global batch; the final
parameters and the losses must match one device trained on the whole global batches.
Subprocesses run with bounded timeouts and are killed on failure, so CI cannot hang.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from optaxplus import training
from tests import multihost_worker as worker

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  port = _free_port()
  outputs = [tmp_path / f'process{i}.npz' for i in range(2)]
  processes = [
      subprocess.Popen([sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(i),
                        str(port), str(outputs[i])], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  logs = []
  try:
    for process in processes:
      logs.append(process.communicate(timeout=240)[0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.communicate()
  assert all(p.returncode == 0 for p in processes), '\n'.join(l[-3000:] for l in logs)

  params, batches = worker.problem()
  results = [np.load(path) for path in outputs]
  for i, result in enumerate(results):  # each process restored its own half, verified
    np.testing.assert_array_equal(result['sharded_checkpoint_rows'], 8 * i + np.arange(8))
  for name in worker.OPTIMIZERS:
    state = training.TrainState.create(apply_fn=None, params=params,
                                       tx=worker.make_optimizer(name))
    step = jax.jit(training.make_train_step(worker.loss_fn))
    losses = []
    for batch in batches:
      state, metrics = step(state, batch)
      losses.append(float(metrics['loss']))
    for result in results:
      for how in ('jit', 'shard_map', 'fsdp'):
        np.testing.assert_allclose(result[f'{name}/{how}/losses'], losses, rtol=1e-5)
        for key, value in state.params.items():
          np.testing.assert_allclose(result[f'{name}/{how}/{key}'], value, rtol=1e-5,
                                     atol=1e-6, err_msg=f'{name}/{how}/{key}')
