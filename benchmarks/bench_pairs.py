"""Wall clock of each optaxplus update against its closest optax peer, in one interleaved run.

    python -m benchmarks.bench_pairs [--d_model 512 --layers 8 --vocab 8192 --repeats 15]

Three pairs, each timed as a jitted, donated ``update + apply_updates`` on a GPT-shaped
tree in float32 and in bfloat16, every candidate called once per round so that a shared
machine's slow phases hit all of them (``update_timing.interleaved_best``):

================================  ===============================  =======
optaxplus                         peer                             target
================================  ===============================  =======
``alto``                          ``optax.lamb``                   ≤ 1.00×
``momsps``                        ``scale_by_polyak`` + ``trace``  ≤ 1.02×
``eadam``                         ``optax.adam``                   ≤ 1.60×
================================  ===============================  =======

The ratio is optaxplus ÷ peer, fastest call against fastest call, by wall clock and by
process CPU time (all threads; on a loaded machine the steadier of the two). The verdict
reads the wall-clock ratio, which is what a user waits for.
"""


import jax.numpy as jnp
import optax

from benchmarks import update_timing
from optaxplus.exploration import alto, eadam
from optaxplus.polyak import momsps

PAIRS = (
    ('alto', lambda: alto(1e-3), 'optax.lamb', lambda: optax.lamb(1e-3, weight_decay=1e-4),
     1.00),
    ('momsps', momsps, 'optax polyak + trace', lambda: optax.chain(
        optax.scale_by_polyak(), optax.trace(0.9), optax.scale(-1.0)), 1.02),
    ('eadam', lambda: eadam(1e-3), 'optax.adam', lambda: optax.adam(1e-3), 1.60),
)
DTYPES = (('float32', jnp.float32), ('bfloat16', jnp.bfloat16))


def main():
  args = update_timing.tree_arguments(__doc__, 512, 8, 8192)

  runs, trees = {}, {}
  for dtype_name, dtype in DTYPES:
    params = update_timing.transformer_params(args.d_model, args.layers, args.vocab, dtype)
    trees[dtype_name] = params
    for name, make, peer, make_peer, _ in PAIRS:
      for label, factory in ((name, make), (peer, make_peer)):
        # value: the loss the Polyak steps need; the others ignore it.
        runs[label, dtype_name] = update_timing.update_run(
            factory(), params, params, value=jnp.asarray(1.0, dtype))
  wall, cpu = update_timing.interleaved_best(runs, args.repeats)

  print(update_timing.describe_machine(trees['float32']))
  print('| optaxplus | peer | dtype | optaxplus (ms) | peer (ms) | ratio (wall) '
        '| ratio (CPU) | target | met |')
  print('|---|---|---|---:|---:|---:|---:|---:|---|')
  for name, _, peer, _, target in PAIRS:
    for dtype_name, _ in DTYPES:
      ours, theirs = (name, dtype_name), (peer, dtype_name)
      ratio = wall[ours] / wall[theirs]
      print(f'| {name} | {peer} | {dtype_name} | {1e3 * wall[ours]:.2f} | '
            f'{1e3 * wall[theirs]:.2f} | {ratio:.3f}× | {cpu[ours] / cpu[theirs]:.3f}× | '
            f'≤ {target:.2f}× | {"yes" if ratio <= target else "NO"} |')


if __name__ == '__main__':
  main()
