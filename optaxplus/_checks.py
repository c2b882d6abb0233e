"""Construction-time checks of hyperparameters, shared by every optaxplus factory.

A hyperparameter is checked when the optimizer is built, whether it is a Python number, a
NumPy scalar or a concrete JAX array. Only tracers are exempt: under
``optax.inject_hyperparams`` or ``jax.vmap`` their value is unknown until the update runs,
and reading it there would force a host sync. Everything that is not a real number — a
bool, ``None``, a string, a list, a complex or non-scalar array — is a ``TypeError``; a
number outside its range, NaN, or an infinity where a finite value is needed is a
``ValueError``. Both name the argument and what it accepts.
"""

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_tracer(value: Any) -> bool:
  """Whether ``value`` is a JAX tracer, whose value cannot be read at construction."""
  return isinstance(value, jax.core.Tracer)


def _range_text(low, high, low_open, high_open) -> str:
  left = '(' if low_open or low is None else '['
  right = ')' if high_open or high is None else ']'
  low_text = '-inf' if low is None else float(low)
  high_text = 'inf' if high is None else float(high)
  return f'{left}{low_text}, {high_text}{right}'


def _as_real(name: str, value: Any, expected: str) -> float:
  """``value`` as a Python float, or a ``TypeError`` if it is not one real scalar."""
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f'{name} must be {expected}, got the bool {value}.')
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    dtype = np.dtype(value.dtype)
    if np.ndim(value) == 0 and (jnp.issubdtype(dtype, jnp.integer)
                                or jnp.issubdtype(dtype, jnp.floating)):
      return float(np.asarray(value))
    hint = (' (optax.inject_hyperparams casts hyperparameters to complex params\' dtype: '
            'pass it hyperparam_dtype=jnp.float32)' if jnp.issubdtype(dtype, jnp.complexfloating)
            else '')
    raise TypeError(
        f'{name} must be {expected}, got an array of shape {np.shape(value)} and dtype '
        f'{dtype}{hint}.')
  raise TypeError(f'{name} must be {expected}, got {type(value).__name__} {value!r}.')


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    integer: bool = False,
    allow_schedule: bool = False,
) -> None:
  """Raises if ``value`` is not a real number in the given range (tracers are exempt).

  Args:
    name: the argument's name, as the user typed it.
    value: the value given: a Python or NumPy number, or a scalar array.
    low: the lower bound, or None for none.
    high: the upper bound, or None for none.
    low_open: whether ``low`` itself is excluded.
    high_open: whether ``high`` itself is excluded.
    allow_inf: whether an infinity inside the range is accepted (e.g. "no cap").
    integer: whether the value must be a whole number.
    allow_schedule: whether a callable (an optax schedule ``step -> value``) is accepted.

  Raises:
    TypeError: ``value`` is not a real scalar (bools, None, strings, sequences, complex
      or non-scalar arrays), or a finite number that is not whole where ``integer`` is set.
    ValueError: ``value`` is NaN, infinite where a finite value is needed, or out of range.

  Examples:
    >>> check_range('momentum', 0.9, 0.0, 1.0, high_open=True)
    >>> check_range('c', 0.0, 0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: c must be a finite number in (0.0, inf), got 0.0.
    >>> check_range('momentum', True, 0.0, 1.0, high_open=True)
    Traceback (most recent call last):
    ...
    TypeError: momentum must be a finite number in [0.0, 1.0), got the bool True.
  """
  if is_tracer(value) or (allow_schedule and callable(value)):
    return
  kind = 'a whole number' if integer else 'a number' if allow_inf else 'a finite number'
  expected = f'{kind} in {_range_text(low, high, low_open, high_open)}'
  if allow_schedule:
    expected += ' or a schedule (a callable of the step)'
  number = _as_real(name, value, expected)
  too_low = low is not None and (number <= low if low_open else number < low)
  too_high = high is not None and (number >= high if high_open else number > high)
  not_finite = np.isnan(number) or (np.isinf(number) and not (allow_inf and not integer))
  if too_low or too_high or not_finite:
    raise ValueError(f'{name} must be {expected}, got {value!r}.')
  if integer and number != int(number):
    raise TypeError(f'{name} must be {expected}, got {value!r}.')


def check_bool(name: str, value: Any) -> None:
  """Raises ``TypeError`` unless ``value`` is a Python or NumPy bool.

  Examples:
    >>> check_bool('adaptive', 'yes')
    Traceback (most recent call last):
    ...
    TypeError: adaptive must be True or False, got str 'yes'.
  """
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f'{name} must be True or False, got {type(value).__name__} {value!r}.')


def check_adam(b1: Any, b2: Any, eps: Any) -> None:
  """Adam's decays in ``[0, 1)`` and its ``eps > 0`` (tracers are not checked)."""
  check_range("b1", b1, 0.0, 1.0, high_open=True)
  check_range("b2", b2, 0.0, 1.0, high_open=True)
  # eps = 0 turns a coordinate whose gradient has always been 0 into 0/0.
  check_range("eps", eps, 0.0, low_open=True)


def _is_bool(leaf: Any) -> bool:
  if isinstance(leaf, (bool, np.bool_)):
    return True
  return (isinstance(leaf, (np.ndarray, jax.Array)) and leaf.dtype == np.bool_
          and leaf.ndim == 0)


def check_mask(mask: Any) -> None:
  """``mask`` is None, a callable, or a pytree of bools (as ``optax.masked`` takes)."""
  if mask is None or callable(mask):
    return
  for leaf in jax.tree.leaves(mask):
    if not _is_bool(leaf):
      raise TypeError(
          "mask must be None, a pytree of bools like params (a single bool applies to "
          "every tensor) or a callable returning one, got a leaf "
          f"{type(leaf).__name__} {leaf!r}.")
