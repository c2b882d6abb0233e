"""Memory traffic of every optimizer update, read off the compiled program (no timing).

    python -m benchmarks.bytes_accessed [--d_model 256 --layers 4 --vocab 4096]

Updates are memory-bound, so the bytes an update reads and writes set its speed. XLA's
``cost_analysis()['bytes accessed']`` of the jitted, donated ``update + apply_updates`` is
exact and identical on every run, unlike a wall clock on a shared machine. It is reported
in param-sized passes (bytes ÷ the params' bytes): on XLA:CPU a plain copy is 2.000 passes,
``optax.sgd`` 3.000, sgd-momentum 6.000, ``optax.adam`` 10.000 (each written array gets its
own fusion there). Beside it: the temporaries XLA allocates (``memory_analysis()``), in
param-sized trees, and the param-sized ``copy`` instructions left in the optimized HLO.
Only compiles; runs in seconds.
"""

import math
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import optaxplus
from benchmarks import update_timing


def _half(params):
  """A gradient function for SAM's second pass: ∇(¼‖p‖²), cheap and of the params' dtypes."""
  return jax.tree.map(lambda p: p * jnp.asarray(0.5, p.dtype), params)


class Case(NamedTuple):
  """One update to measure: its optimizer, the extra args its update needs, its target."""
  name: str
  make: Callable[[], optax.GradientTransformation]
  extra: dict
  target: dict  # dtype name -> maximal param-sized passes; empty for optax peers
  # XLA:CPU copies the optimizer state: E with explore_b1 < 0.5 and no state in the
  # optimizer after it reads its old average after the new one is written, in the
  # caller's apply_updates, which E cannot order itself after (+2 passes).
  copies_state_on_cpu: bool = False


# On XLA:CPU each global norm is a plain sum of squares, plus a fallback branch (a second
# read of its operand) that runs only when that sum is outside its exact range; the
# compiled program counts the branch: +1 pass per array the branch reads.
FALLBACK = 1
# E with explore_b1 < 0.5 orders its new average after the base optimizer's new state by
# reading one entry of each state array. XLA:CPU slices bfloat16 arrays in float32, and
# the count then charges the whole array although that fusion reads one entry: +1
# counted pass per state tree in bfloat16 only.
ONE_ENTRY_BF16 = 1

VALUE = {'value': jnp.float32(2.0)}
SAM = {'grad_fn': _half}
BOTH = lambda bound: {'float32': bound, 'bfloat16': bound}

CASES = (
    Case('optaxplus.sps', optaxplus.sps, VALUE, BOTH(4.05 + FALLBACK)),
    Case('optax.polyak_sgd', optax.polyak_sgd, VALUE, {}),
    Case('optaxplus.momsps', optaxplus.momsps, VALUE, BOTH(7.05 + FALLBACK)),
    Case('optaxplus.momsps_smooth', lambda: optaxplus.momsps_smooth(batches_per_epoch=100),
         VALUE, BOTH(7.05 + FALLBACK)),
    Case('optaxplus.momdecsps', optaxplus.momdecsps, VALUE, BOTH(7.05 + FALLBACK)),
    Case('optaxplus.momadasps', optaxplus.momadasps, VALUE, BOTH(7.05 + FALLBACK)),
    Case('optax polyak + trace', lambda: optax.chain(
        optax.scale_by_polyak(), optax.trace(0.9), optax.scale(-1.0)), VALUE, {}),
    Case('optaxplus.esgd (alpha=-5, b1=0.99)',
         lambda: optaxplus.esgd(0.1, alpha=-5.0, explore_b1=0.99), {}, BOTH(7.05)),
    Case('optaxplus.esgd (alpha=0.5, b1=0.01)',
         lambda: optaxplus.esgd(0.1, alpha=0.5, explore_b1=0.01), {}, BOTH(9.05),
         copies_state_on_cpu=True),
    Case('optaxplus.esgd (momentum=0.9, b1=0.01)',
         lambda: optaxplus.esgd(0.1, momentum=0.9, alpha=0.5, explore_b1=0.01), {},
         {'float32': 10.05, 'bfloat16': 10.05 + ONE_ENTRY_BF16}),
    Case('optax.sgd', lambda: optax.sgd(0.1), {}, {}),
    Case('optax.sgd (momentum=0.9)', lambda: optax.sgd(0.1, momentum=0.9), {}, {}),
    Case('optaxplus.eadam', lambda: optaxplus.eadam(1e-3), {}, BOTH(15.05)),
    Case('optaxplus.eadam (alpha=0.5, b1=0.01)',
         lambda: optaxplus.eadam(1e-3, alpha=0.5, explore_b1=0.01), {},
         {'float32': 15.05, 'bfloat16': 15.05 + 2 * ONE_ENTRY_BF16}),
    Case('optax.adam', lambda: optax.adam(1e-3), {}, {}),
    # The fallbacks of the clip's and ‖w‖'s norms read g and w; that of each tensor's
    # ‖u‖, u recomputed from Adam's moments and w, reads all three.
    Case('optaxplus.alto', lambda: optaxplus.alto(1e-3), {}, BOTH(20.05 + 5 * FALLBACK)),
    Case('optaxplus.alto (alpha=0.5, b1=0.01)',
         lambda: optaxplus.alto(1e-3, alpha=0.5, explore_b1=0.01), {},
         {'float32': 20.05 + 5 * FALLBACK,
          'bfloat16': 20.05 + 5 * FALLBACK + 2 * ONE_ENTRY_BF16}),
    Case('optax.lamb', lambda: optax.lamb(1e-3), {}, {}),
    # Preconditioned Polyak steps: one reduction for ⟨g, d⟩ (it reads g and v), then v and
    # the params (and the heavy ball's buffer) each written in one pass.
    Case('optaxplus.psps', optaxplus.psps, VALUE, BOTH(9.05)),
    Case('optaxplus.psps (momentum=0.9)', lambda: optaxplus.psps(momentum=0.9), VALUE,
         BOTH(12.05)),
    Case('optaxplus.sania', optaxplus.sania, VALUE, BOTH(9.05)),
    Case('optaxplus.sania (adagrad_sqr, momentum=0.9)',
         lambda: optaxplus.sania('adagrad_sqr', momentum=0.9), VALUE, BOTH(12.05)),
    Case('optax.contrib.momo_adam', optax.contrib.momo_adam, VALUE, {}),
    Case('optaxplus.sam(sgd momentum)', lambda: optaxplus.sam(
        optax.sgd(0.1, momentum=0.9)), SAM, {}),
    Case('optaxplus.sam(sgd momentum, every_k=5)', lambda: optaxplus.sam(
        optax.sgd(0.1, momentum=0.9), every_k=5), SAM, {}),
)


class Measurement(NamedTuple):
  """What one compiled update moves, in param-sized units."""
  passes: float  # bytes accessed / params' bytes
  temporaries: float  # temp allocation / params' bytes
  copies: int  # `copy` instructions of at least `min_copy_size` elements
  host_ops: tuple  # host transfers or callbacks found in the HLO


def compile_update(tx: optax.GradientTransformation, params, extra: dict) -> Any:
  """``update + apply_updates`` jitted with params and state donated, compiled for ``params``.

  The gradient is an argument, except with a ``grad_fn`` (SAM): then, as in a train step,
  the step computes it with ``grad_fn(params)`` and SAM calls ``grad_fn`` again. A gradient
  passed in cannot leave the plain branch of ``every_k``'s ``lax.cond`` without a copy
  (the step may not overwrite its argument); one computed in the step is handed through.
  """
  def step(params, state, grads, extra):
    if 'grad_fn' in extra:
      grads = extra['grad_fn'](params)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  arrays = {k: v for k, v in extra.items() if not callable(v)}
  functions = {k: v for k, v in extra.items() if callable(v)}
  jitted = jax.jit(lambda p, s, g, a: step(p, s, g, {**a, **functions}), donate_argnums=(0, 1))
  return jitted.lower(params, jax.eval_shape(tx.init, params), params, arrays).compile()


_HOST_OPS = re.compile(r'\b(send|recv|infeed|outfeed)\(|custom_call_target="[^"]*callback')
_COPY = re.compile(r'= \w+\[([\d,]*)\][^=]*\bcopy\(')


def measure(tx: optax.GradientTransformation, params, extra: dict,
            min_copy_size: int = 4096) -> Measurement:
  """The :class:`Measurement` of ``tx``'s update on ``params``."""
  compiled = compile_update(tx, params, extra)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  tree_bytes = update_timing.tree_bytes(params)
  hlo = compiled.as_text()
  copies = sum(1 for dims in _COPY.findall(hlo)
               if math.prod(int(d) for d in dims.split(',') if d) >= min_copy_size)
  return Measurement(
      passes=cost['bytes accessed'] / tree_bytes,
      temporaries=compiled.memory_analysis().temp_size_in_bytes / tree_bytes,
      copies=copies,
      host_ops=tuple(match.group(0) for match in _HOST_OPS.finditer(hlo)))


def markdown_table(rows: list[tuple[str, dict[str, Measurement], dict]]) -> str:
  """Rows of (name, {dtype: Measurement}, target) as a Markdown table."""
  lines = ['| update | f32 passes | bf16 passes | target (f32 / bf16) | temporaries (f32 / bf16 trees) '
           '| param-sized copies |', '|---|---:|---:|---|---:|---:|']
  for name, by_dtype, target in rows:
    f32, bf16 = by_dtype['float32'], by_dtype['bfloat16']
    target_text = (f"≤ {target['float32']} / ≤ {target['bfloat16']}" if target else 'peer')
    lines.append(f'| {name} | {f32.passes:.3f} | {bf16.passes:.3f} | {target_text} | '
                 f'{f32.temporaries:.2f} / {bf16.temporaries:.2f} | {f32.copies + bf16.copies} |')
  return '\n'.join(lines)


def main():
  args = update_timing.tree_arguments(__doc__, 256, 4, 4096, repeats=None)
  trees = {dtype: update_timing.transformer_params(args.d_model, args.layers, args.vocab,
                                                   getattr(jnp, dtype))
           for dtype in ('float32', 'bfloat16')}
  rows = [(case.name, {dtype: measure(case.make(), params, case.extra)
                       for dtype, params in trees.items()}, case.target) for case in CASES]
  print(update_timing.describe_machine(trees['float32']))
  print(markdown_table(rows))


if __name__ == '__main__':
  main()
