"""Times each Polyak update against its byte floor and against the closest optax chains.

    python -m benchmarks.bench_polyak [--d_model 512 --layers 8 --vocab 8192 --repeats 15]

Param-sized passes each update must make (the floor), counting a read or a write of one
tree as one pass; the Polyak step needs the global ‖g‖² before it can scale anything, so
the gradient is read twice:
  optax.sgd(momentum)        read g, m, p; write m, p                          = 5
  optax.polyak_sgd / sps     read g (norm); read g, p; write p                 = 4
  momsps & variants          read g (norm); read g, m, p; write m, p           = 6
  optax polyak + trace       as momsps                                          = 6
  optax.contrib.momo         read g, m, p, write m (+ dots); read m, p, write p = 7
"""


import jax.numpy as jnp
import optax

import optaxplus
from benchmarks import update_timing


def main():
  args = update_timing.tree_arguments(__doc__, 512, 8, 8192)

  params = update_timing.transformer_params(args.d_model, args.layers, args.vocab)
  grads = params  # any tree of the right shapes will do
  value = jnp.float32(2.0)
  candidates = [
      ('optax.sgd(momentum=0.9)', 5, optax.sgd(0.01, momentum=0.9)),
      ('optax.polyak_sgd', 4, optax.polyak_sgd()),
      ('optax polyak + trace (closest chain to momsps)', 6,
       optax.chain(optax.scale_by_polyak(), optax.trace(0.9), optax.scale(-1.0))),
      ('optax.contrib.momo', 7, optax.contrib.momo()),
      ('optaxplus.sps', 4, optaxplus.sps()),
      ('optaxplus.momsps', 6, optaxplus.momsps()),
      ('optaxplus.momsps_smooth', 6, optaxplus.momsps_smooth(batches_per_epoch=100)),
      ('optaxplus.momdecsps', 6, optaxplus.momdecsps()),
      ('optaxplus.momadasps', 6, optaxplus.momadasps()),
  ]
  runs = {'copy': update_timing.copy_run(params)}
  runs.update({name: update_timing.update_run(tx, params, grads, value=value)
               for name, _, tx in candidates})
  seconds, _ = update_timing.interleaved_best(runs, args.repeats)
  bandwidth = 2 * update_timing.tree_bytes(params) / seconds['copy']
  rows = [(name, passes, seconds[name]) for name, passes, _ in candidates]
  print(update_timing.describe_machine(params))
  print(f'copy bandwidth: {bandwidth / 1e9:.1f} GB/s')
  print(update_timing.markdown_table(rows, update_timing.tree_bytes(params), bandwidth))


if __name__ == '__main__':
  main()
