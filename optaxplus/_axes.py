"""Mapped axis names and shard_map's varying types, shared by SAM and the training layer."""

from typing import Union

import jax

AxisName = Union[str, tuple[str, ...]]


def axis_names(axis_name: AxisName) -> tuple[str, ...]:
  """``axis_name`` as a tuple of names (a single name becomes a 1-tuple)."""
  return axis_name if isinstance(axis_name, tuple) else (axis_name,)


def varying_axes(x) -> frozenset:
  """The mesh axes over which ``x`` may differ, as shard_map's type checking tracks them.

  Examples:
    >>> import jax.numpy as jnp
    >>> varying_axes(jnp.ones(2))  # outside shard_map nothing varies
    frozenset()
  """
  aval = jax.typeof(x)
  manual_axis_type = getattr(aval, 'manual_axis_type', None)  # JAX >= 0.9
  if manual_axis_type is not None:
    return frozenset(manual_axis_type.varying)
  return frozenset(getattr(aval, 'vma', ()))


def cast_varying(tree, names: tuple[str, ...]):
  """Every leaf of ``tree`` typed as varying over ``names`` (cast over the missing ones).

  Under ``shard_map(check_vma=True)`` the gradient with respect to a value invariant over
  an axis is summed over that axis; with respect to the same value typed as varying it
  is each device's own gradient.
  """
  def cast(x):
    missing = tuple(name for name in names if name not in varying_axes(x))
    if not missing:
      return x
    if hasattr(jax.lax, 'pcast'):
      return jax.lax.pcast(x, missing, to='varying')
    return jax.lax.pvary(x, missing)  # JAX before pcast (deprecated in 0.8.2)

  return jax.tree.map(cast, tree)
