"""Data parallel on 8 CPU devices: jit + sharding, shard_map and pmap give one device's numbers.

The checks live in ``parallel_checks.py`` and run in ONE subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, so this process keeps its device
count and JAX compiles once for all of them; each check is reported as its own test.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from optaxplus import parallel
from tests import parallel_checks

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def results():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  process = subprocess.run([sys.executable, os.path.join(HERE, 'parallel_checks.py')],
                           env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in process.stdout.splitlines() if l.startswith('RESULTS ')]
  assert process.returncode == 0 and lines, process.stdout[-3000:] + process.stderr[-3000:]
  return json.loads(lines[-1][len('RESULTS '):])


@pytest.mark.parametrize('name', list(parallel_checks.CHECKS))
def test_eight_devices(results, name):
  assert name in results, sorted(results)
  assert results[name] is None, results[name]


def test_data_parallel_checks_its_options_in_this_process():
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  with pytest.raises(TypeError, match='train_step must be a callable'):
    parallel.data_parallel(None, mesh)
  with pytest.raises(TypeError, match='donate_state must be True or False'):
    parallel.data_parallel(lambda state, batch: (state, {}), mesh, donate_state=1)
