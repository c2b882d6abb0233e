"""Tests of the shared hyperparameter checks (optaxplus._checks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optaxplus._checks import check_bool
from optaxplus._checks import check_range

NOT_NUMBERS = [True, False, np.bool_(True), None, '0.5', [0.5], (0.5,), {'a': 0.5},
               1 + 0j, jnp.ones(2), np.ones((1, 1)), jnp.array(True), object()]


@pytest.mark.parametrize('value', NOT_NUMBERS, ids=repr)
def test_non_numbers_are_type_errors_naming_the_argument(value):
  with pytest.raises(TypeError, match='momentum must be a finite number in'):
    check_range('momentum', value, 0.0, 1.0, high_open=True)


@pytest.mark.parametrize('value', [-0.1, 1.0, float('nan'), float('inf'), np.float32(2.0),
                                   jnp.array(-1.0), np.array(1.5), jnp.array(jnp.nan)])
def test_out_of_range_and_non_finite_are_value_errors(value):
  with pytest.raises(ValueError, match=r'momentum must be a finite number in \[0.0, 1.0\)'):
    check_range('momentum', value, 0.0, 1.0, high_open=True)


@pytest.mark.parametrize('value', [0.0, 0.5, 0, np.float32(0.9), jnp.array(0.9),
                                   np.array(0.1), jnp.array(0.5, jnp.bfloat16)])
def test_numbers_and_concrete_scalar_arrays_in_range_pass(value):
  check_range('momentum', value, 0.0, 1.0, high_open=True)


def test_tracers_are_exempt():
  jax.jit(lambda x: check_range('c', x, 0.0, low_open=True) or x)(jnp.array(-1.0))


def test_infinity_only_where_allowed():
  check_range('max_learning_rate', float('inf'), 0.0, low_open=True, allow_inf=True)
  with pytest.raises(ValueError, match='max_learning_rate must be a number in'):
    check_range('max_learning_rate', float('nan'), 0.0, low_open=True, allow_inf=True)


def test_integers():
  check_range('every_k', 3, 1, integer=True)
  check_range('every_k', jnp.array(3), 1, integer=True)
  check_range('every_k', 3.0, 1, integer=True)
  with pytest.raises(TypeError, match=r'every_k must be a whole number in \[1.0, inf\)'):
    check_range('every_k', 2.5, 1, integer=True)
  with pytest.raises(ValueError, match='every_k must be a whole number'):
    check_range('every_k', 0, 1, integer=True)


def test_schedules_only_where_allowed():
  check_range('learning_rate', lambda step: 0.1, 0.0, low_open=True, allow_schedule=True)
  with pytest.raises(TypeError, match='or a schedule'):
    check_range('learning_rate', '0.1', 0.0, low_open=True, allow_schedule=True)
  with pytest.raises(TypeError, match='learning_rate must be a finite number'):
    check_range('learning_rate', lambda step: 0.1, 0.0, low_open=True)


@pytest.mark.parametrize('value', [1, 0, None, 'True', jnp.array(True)])
def test_check_bool_rejects_non_bools(value):
  with pytest.raises(TypeError, match='adaptive must be True or False'):
    check_bool('adaptive', value)


def test_check_bool_accepts_bools():
  check_bool('adaptive', True)
  check_bool('adaptive', np.bool_(False))


@pytest.mark.parametrize('value', [float('nan'), float('inf'), np.float32('nan')])
def test_non_finite_whole_numbers_are_value_errors(value):
  with pytest.raises(ValueError, match='every_k must be a whole number'):
    check_range('every_k', value, 1, integer=True)


def test_complex_scalar_arrays_say_how_inject_hyperparams_avoids_them():
  with pytest.raises(TypeError, match='hyperparam_dtype=jnp.float32'):
    check_range('c', jnp.array(1.0 + 0j), 0.0, low_open=True)
