"""fsdp_sharding on abstract meshes: which leaves are split, along which dimension.

An ``AbstractMesh`` has axis sizes but no devices, so these tests run in the pytest
process with its single device; training on an FSDP layout of 8 devices is checked in
``parallel_checks.py`` (run by ``test_parallel.py``).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P

from optaxplus import polyak, training
from optaxplus.exploration import eadam
from optaxplus.parallel import fsdp_sharding

MESH = AbstractMesh((2, 4), ('data', 'fsdp'))


def specs(shardings):
  return jax.tree.map(lambda s: s.spec, shardings)


def test_largest_divisible_dimension_is_split():
  tree = {'wide': jnp.zeros((4, 12)), 'tall': jnp.zeros((12, 4)),
          'square': jnp.zeros((8, 8)), 'odd_largest': jnp.zeros((4, 9)),
          'none_divisible': jnp.zeros((3, 5, 7)), 'vector': jnp.zeros(16)}
  assert specs(fsdp_sharding(tree, MESH, min_size=1)) == {
      'wide': P(None, 'fsdp'), 'tall': P('fsdp', None), 'square': P('fsdp', None),
      'odd_largest': P('fsdp', None), 'none_divisible': P(), 'vector': P('fsdp')}


def test_small_leaves_and_scalars_are_replicated():
  tree = {'at_threshold': jnp.zeros((4, 16)), 'below': jnp.zeros((3, 21)),
          'scalar': jnp.zeros(()), 'python_int': 0}
  assert specs(fsdp_sharding(tree, MESH, min_size=64)) == {
      'at_threshold': P(None, 'fsdp'), 'below': P(), 'scalar': P(), 'python_int': P()}


def test_default_min_size_keeps_biases_whole():
  tree = {'kernel': jnp.zeros((256, 512)), 'bias': jnp.zeros(512)}
  assert specs(fsdp_sharding(tree, MESH)) == {'kernel': P(None, 'fsdp'), 'bias': P()}


def test_a_tuple_of_axes_splits_over_their_product():
  tree = {'w': jnp.zeros((4, 24)), 'v': jnp.zeros((12, 4))}  # 8 shards: 24 yes, 12 no
  assert specs(fsdp_sharding(tree, MESH, ('data', 'fsdp'), min_size=1)) == {
      'w': P(None, ('data', 'fsdp')), 'v': P()}


def test_whole_train_state_shards_params_and_moments_alike():
  params = {'kernel': jnp.zeros((16, 32)), 'bias': jnp.zeros(32)}
  create = lambda: training.TrainState.create(apply_fn=None, params=params, tx=eadam(1e-3))
  shardings = fsdp_sharding(jax.eval_shape(create), MESH, min_size=256)
  assert shardings.step.spec == P()
  leaves = jax.tree_util.tree_leaves_with_path(shardings.opt_state)
  kernels = [s.spec for path, s in leaves if "'kernel'" in jax.tree_util.keystr(path)]
  others = [s.spec for path, s in leaves if "'kernel'" not in jax.tree_util.keystr(path)]
  # E's average and Adam's two moments follow the kernel; counts and biases stay whole.
  assert kernels == [P(None, 'fsdp')] * 3, kernels
  assert others and all(spec == P() for spec in others), others


def test_linen_params():
  model = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(8)])
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 12)))['params']
  assert specs(fsdp_sharding(params, MESH, min_size=64)) == {
      'layers_0': {'kernel': P(None, 'fsdp'), 'bias': P('fsdp')},
      'layers_2': {'kernel': P('fsdp', None), 'bias': P()}}


def test_nnx_state_keeps_its_variables():
  model = nnx.Linear(8, 12, rngs=nnx.Rngs(0))
  shardings = fsdp_sharding(nnx.state(model), MESH, min_size=16)
  assert isinstance(shardings['kernel'], nnx.Param)
  assert shardings['kernel'].get_value().spec == P(None, 'fsdp')
  assert shardings['bias'].get_value().spec == P()


def test_an_existing_sharding_on_the_mesh_is_kept_and_extended():
  mesh = AbstractMesh((2, 4), ('model', 'fsdp'))
  tensor_parallel = jax.ShapeDtypeStruct((8, 12), jnp.float32,
                                         sharding=NamedSharding(mesh, P(None, 'model')))
  already_fsdp = jax.ShapeDtypeStruct((8, 12), jnp.float32,
                                      sharding=NamedSharding(mesh, P('fsdp')))
  assert specs(fsdp_sharding({'tp': tensor_parallel, 'fsdp': already_fsdp}, mesh,
                             min_size=1)) == {'tp': P('fsdp', 'model'), 'fsdp': P('fsdp')}


def test_momsps_state_of_a_created_state():
  state = training.TrainState.create(apply_fn=None, params={'w': jnp.zeros((4, 8))},
                                     tx=polyak.momsps())
  shardings = fsdp_sharding(state, MESH, min_size=1)
  assert jax.tree.structure(shardings) == jax.tree.structure(state)
  assert shardings.params['w'].spec == P(None, 'fsdp')


def test_bad_arguments():
  tree = {'w': jnp.zeros((4, 8))}
  with pytest.raises(ValueError, match="no axis 'model'.*'data', 'fsdp'"):
    fsdp_sharding(tree, MESH, 'model')
  with pytest.raises(TypeError, match='axis_name must be a mesh axis name'):
    fsdp_sharding(tree, MESH, 3)
  with pytest.raises(ValueError, match='min_size'):
    fsdp_sharding(tree, MESH, min_size=0)
  for bad in (2.5, True, None):
    with pytest.raises(TypeError, match='min_size'):
      fsdp_sharding(tree, MESH, min_size=bad)
