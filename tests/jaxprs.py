"""Inspecting traced programs: which primitives run inside a conditional."""

import jax
import jax.extend  # not imported by `import jax`


def _subjaxprs(params):
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def primitives_in_conds(jaxpr, inside: bool = False) -> set[str]:
  """Names of the primitives that some ``cond`` branch of ``jaxpr`` (nested too) runs."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  found = set()
  for eqn in jaxpr.eqns:
    if inside:
      found.add(eqn.primitive.name)
    nested = inside or eqn.primitive.name == 'cond'
    for sub in _subjaxprs(eqn.params):
      found |= primitives_in_conds(sub, nested)
  return found
