"""The wheel installs the library only, with its licence and type marker, and declares it.

The wheel is built once, offline (``pip wheel --no-deps --no-build-isolation``), from a
copy of the working tree, so the build leaves nothing in the repository and no earlier
``build/`` directory can leak stale files into it.
"""

import email.parser
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import optaxplus

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE_DEPENDENCIES = {'jax', 'optax', 'chex', 'numpy'}


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  source = tmp_path_factory.mktemp('source') / 'optaxplus'
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      '.git', 'build', 'dist', '*.egg-info', '__pycache__', 'runs', '.benchmarks'))
  out = tmp_path_factory.mktemp('wheel')
  process = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
       '--no-index', '--quiet', str(source), '-w', str(out)],
      capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
  (path,) = out.glob('optaxplus-*.whl')
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    dist_info = f'optaxplus-{optaxplus.__version__}.dist-info'
    metadata = email.parser.Parser().parsestr(
        archive.read(f'{dist_info}/METADATA').decode())
    licence = next(archive.read(n) for n in names
                   if n.startswith(dist_info) and n.endswith('LICENSE')).decode()
  return path, names, metadata, licence


def test_wheel_holds_only_the_library_with_licence_and_type_marker(wheel):
  path, names, _, licence = wheel
  assert path.name.startswith(f'optaxplus-{optaxplus.__version__}-py3-none-any')
  dist_info = f'optaxplus-{optaxplus.__version__}.dist-info/'
  outside = [n for n in names if not n.startswith(('optaxplus/', dist_info))]
  assert not outside, outside
  modules = {n for n in names if n.startswith('optaxplus/')}
  expected = {f'optaxplus/{p.name}' for p in (ROOT / 'optaxplus').glob('*.py')}
  assert modules == expected | {'optaxplus/py.typed'}
  assert 'Apache License' in licence and 'Version 2.0, January 2004' in licence
  assert 'END OF TERMS AND CONDITIONS' in licence  # the full text, not a pointer to it


def test_metadata_base_dependencies_extras_and_version(wheel):
  _, _, metadata, _ = wheel
  assert metadata['Version'] == optaxplus.__version__
  requirements = metadata.get_all('Requires-Dist')
  base = {r.split('>')[0].split('=')[0].split('<')[0].strip()
          for r in requirements if 'extra ==' not in r}
  assert base == BASE_DEPENDENCIES
  assert set(metadata.get_all('Provides-Extra')) == {'flax', 'experiments', 'dev'}
  flax_extra = {r.split('>')[0] for r in requirements if "extra == 'flax'" in r
                or 'extra == "flax"' in r}
  assert flax_extra == {'flax', 'orbax-checkpoint'}
  assert metadata['License'] == 'Apache-2.0'
  assert 'License :: OSI Approved :: Apache Software License' in metadata.get_all(
      'Classifier')
  assert any(url.startswith('Repository, https://') for url in metadata.get_all('Project-URL'))



WITHOUT_FLAX = r'''
import sys
for name in ('flax', 'orbax', 'tensorstore'):
  sys.modules[name] = None  # `import flax...` now raises ModuleNotFoundError

import jax, jax.numpy as jnp, optax, optaxplus

params = {'w': jnp.array([1.0, -2.0])}
for tx in (optaxplus.momsps(), optaxplus.multi_steps(optaxplus.sps(), every_k_schedule=1)):
  loss, grads = jax.value_and_grad(lambda p: jnp.sum(p['w'] ** 2))(params)
  updates, _ = tx.update(grads, tx.init(params), params, value=loss)
  assert float(optax.tree.norm(updates)) > 0
assert callable(optaxplus.data_parallel) and 'TrainState' in dir(optaxplus)

def expect_extra_error(fn):
  try:
    fn()
  except ImportError as error:
    assert "pip install 'optaxplus[flax]'" in str(error), error
  else:
    raise AssertionError(f'{fn} did not raise')

expect_extra_error(lambda: optaxplus.TrainState)
expect_extra_error(lambda: optaxplus.make_train_step)
expect_extra_error(lambda: optaxplus.save_checkpoint)
expect_extra_error(lambda: optaxplus.restore_checkpoint)
expect_extra_error(lambda: optaxplus.nnx_grad_fn(lambda m: 0.0, None))
def from_import():
  from optaxplus.training import TrainState
expect_extra_error(from_import)
loaded = [k for k, m in sys.modules.items()
          if m is not None and k.split('.')[0] in ('flax', 'orbax', 'tensorstore')]
assert not loaded, loaded
print('OK')
'''


def test_optimizers_work_without_flax_and_its_pieces_name_the_extra():
  process = subprocess.run([sys.executable, '-c', WITHOUT_FLAX], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert process.returncode == 0 and process.stdout.strip() == 'OK', (
      process.stdout[-3000:] + process.stderr[-3000:])


def test_lazy_names_are_listed_and_resolve_to_their_definitions():
  from optaxplus import accumulation, checkpoint, parallel, training
  assert set(optaxplus.__all__) <= set(dir(optaxplus))
  for name in optaxplus.__all__:
    assert getattr(optaxplus, name) is not None, name
  assert optaxplus.TrainState is training.TrainState
  assert optaxplus.multi_steps is accumulation.multi_steps
  assert optaxplus.save_checkpoint is checkpoint.save_checkpoint
  assert optaxplus.data_parallel is parallel.data_parallel
  with pytest.raises(AttributeError, match='no_such_name'):
    optaxplus.no_such_name  # pylint: disable=pointless-statement
