"""optaxplus.checkpoint: a save writes what it is given or raises; a restore verifies what it read."""

import os
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optaxplus import checkpoint
from optaxplus import polyak
from optaxplus import training


def _state(value, size=4):
  """A train state whose params are all ``value``: which checkpoint was read is visible."""
  params = {'w': jnp.full(size, value, jnp.float32), 'b': jnp.full((), value, jnp.float32)}
  return training.TrainState.create(apply_fn=None, params=params, tx=polyak.momsps())


def _restored_value(directory, step=None):
  return float(checkpoint.restore_checkpoint(directory, _state(0.0), step=step).params['b'])


def test_save_at_an_existing_or_earlier_step_raises_unless_overwrite(tmp_path):
  assert checkpoint.save_checkpoint(tmp_path, _state(1.0), step=2) == 2
  with pytest.raises(ValueError, match='already has a checkpoint at step 2; pass overwrite=True'):
    checkpoint.save_checkpoint(tmp_path, _state(2.0), step=2)
  assert _restored_value(tmp_path) == 1.0
  checkpoint.save_checkpoint(tmp_path, _state(5.0), step=5)
  with pytest.raises(ValueError, match=r'checkpoints after step 3 \(the latest is 5\)'):
    checkpoint.save_checkpoint(tmp_path, _state(3.0), step=3)
  assert sorted(os.listdir(tmp_path)) == ['2', '5']
  # overwrite=True replaces step 2 and deletes the later checkpoint 5 (as Flax does).
  checkpoint.save_checkpoint(tmp_path, _state(2.0), step=2, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ['2']
  assert _restored_value(tmp_path) == 2.0
  checkpoint.save_checkpoint(tmp_path, _state(7.0), step=7, overwrite=True)
  assert (_restored_value(tmp_path, step=2), _restored_value(tmp_path)) == (2.0, 7.0)
  # The default step is the state's own; a completed save leaves no temporary directory.
  state = _state(8.0).replace(step=jnp.asarray(8))
  assert checkpoint.save_checkpoint(tmp_path, state, max_to_keep=2) == 8
  assert sorted(os.listdir(tmp_path)) == ['7', '8']


def test_restore_of_a_corrupted_array_file_is_an_error_naming_the_array(tmp_path):
  # Random values, so that the array's (compressed) bytes make up most of the data files.
  state = _state(0.0, size=4096)
  state = state.replace(params=dict(state.params, w=jax.random.normal(jax.random.key(0),
                                                                      (4096,))))
  checkpoint.save_checkpoint(tmp_path, state)
  restored = checkpoint.restore_checkpoint(tmp_path, _state(1.0, size=4096))
  chex.assert_trees_all_equal((restored.params, restored.opt_state),
                              (state.params, state.opt_state))
  data_files = [p for p in (tmp_path / '0' / 'state').rglob('*')
                if p.is_file() and p.parent.name == 'd']
  largest = max(data_files, key=lambda p: p.stat().st_size)
  data = bytearray(largest.read_bytes())
  for offset in range(len(data) // 2, len(data) // 2 + 8):
    data[offset] ^= 0xFF
  largest.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=r"array \.params\['w'\] read back differs from the one "
                     r'saved .* corrupted'):
    checkpoint.restore_checkpoint(tmp_path, _state(1.0, size=4096))


def test_restore_casts_to_the_template_after_verifying_and_rejects_a_foreign_template(tmp_path):
  state = _state(1.5)
  checkpoint.save_checkpoint(tmp_path, state)
  template = _state(0.0)
  template = template.replace(params=jax.tree.map(lambda p: p.astype(jnp.bfloat16),
                                                  template.params))
  restored = checkpoint.restore_checkpoint(tmp_path, template)
  chex.assert_trees_all_equal_dtypes(restored.params, template.params)
  np.testing.assert_array_equal(restored.params['w'], np.full(4, 1.5, jnp.bfloat16))
  foreign = _state(0.0).replace(params={'w': jnp.zeros(4), 'b': jnp.zeros(()),
                                        'extra': jnp.zeros(2)})
  with pytest.raises(ValueError, match=r"has no array \.params\['extra'\]"):
    checkpoint.restore_checkpoint(tmp_path, foreign)


def test_bad_arguments_and_missing_checkpoints(tmp_path):
  state = _state(1.0)
  for kwargs, error, match in (
      ({'step': -1}, ValueError, 'step must be a whole number in'),
      ({'step': 1.5}, TypeError, 'step must be a whole number'),
      ({'step': '3'}, TypeError, 'step must be'),
      ({'max_to_keep': 0}, ValueError, 'max_to_keep must be a whole number in'),
      ({'overwrite': 'yes'}, TypeError, 'overwrite must be True or False')):
    with pytest.raises(error, match=match):
      checkpoint.save_checkpoint(tmp_path, state, **kwargs)
  assert not os.listdir(tmp_path)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpoint.restore_checkpoint(tmp_path, state)
  checkpoint.save_checkpoint(tmp_path, state, step=np.int64(1))
  with pytest.raises(FileNotFoundError, match='no checkpoint 4'):
    checkpoint.restore_checkpoint(tmp_path, state, step=4)
  assert pathlib.Path(tmp_path, '1').is_dir()
