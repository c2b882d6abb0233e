"""Construction-time checks of hyperparameters, shared by every optaxplus factory.

A hyperparameter given as a Python number is checked when the optimizer is built; an array
is not, because under ``optax.inject_hyperparams`` it is a tracer whose value is unknown
until the update runs (and reading it there would force a host sync).
"""

import numbers
from typing import Any


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
  """Raises ``ValueError`` naming ``name`` and its valid range if ``value`` lies outside it.

  Args:
    name: the argument's name, as the user typed it.
    value: the value given; only real Python/NumPy numbers are checked.
    low: the lower bound, or None for none.
    high: the upper bound, or None for none.
    low_open: whether ``low`` itself is excluded.
    high_open: whether ``high`` itself is excluded.

  Examples:
    >>> check_range('momentum', 0.9, 0.0, 1.0, high_open=True)
    >>> check_range('c', 0.0, 0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: c must be in (0.0, inf), got 0.0.
  """
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    return
  too_low = low is not None and (value <= low if low_open else value < low)
  too_high = high is not None and (value >= high if high_open else value > high)
  if too_low or too_high or value != value:  # value != value: NaN
    left = '(' if low_open or low is None else '['
    right = ')' if high_open or high is None else ']'
    low_text = '-inf' if low is None else float(low)
    high_text = 'inf' if high is None else float(high)
    raise ValueError(
        f'{name} must be in {left}{low_text}, {high_text}{right}, got {value}.'
    )
