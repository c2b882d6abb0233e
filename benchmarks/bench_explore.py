"""Times ALTO, E + Adam and their optax neighbours against each update's byte floor.

    python -m benchmarks.bench_explore [--d_model 768 --layers 8 --vocab 32000 --repeats 15]

Param-sized passes each jitted, donated update + apply_updates must make (the floor),
counting a read or a write of one fp32 tree as one pass:
  optax.adam                read g, mu, nu, p; write mu, nu, p                         = 7
  optaxplus.eadam           adam + E's one buffer: read m, write m                     = 9
  optax.lamb                read g, mu, nu, p; write mu, nu (and ‖p‖, ‖r‖ per tensor);
                            read mu, nu, p (r again, or a stored r); write p           = 10
  optaxplus.alto            read g (the clip needs the global ‖g‖ first);
                            read g, m, mu, nu, p; write m, mu, nu (‖p‖, ‖r‖);
                            read mu, nu, p; write p                                    = 13
The trust ratio needs ‖r‖ of the finished update before any parameter of that tensor
can be written, hence lamb's and alto's second pass; ALTO's clip adds one read of g.
E's own cost is eadam − adam: the target is ≤ 2 passes (one read + one write of m).
"""

import argparse

import optax

from benchmarks import update_timing
from optaxplus.explore import alto, eadam


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--d_model', type=int, default=768)
  parser.add_argument('--layers', type=int, default=8)
  parser.add_argument('--vocab', type=int, default=32000)
  parser.add_argument('--repeats', type=int, default=15)
  args = parser.parse_args()

  params = update_timing.transformer_params(args.d_model, args.layers, args.vocab)
  grads = params  # any tree of the right shapes will do
  candidates = [
      ('optax.adam', 7, optax.adam(1e-3)),
      ('optaxplus.eadam (explore + optax.adam)', 9, eadam(1e-3)),
      ('optax.lamb', 10, optax.lamb(1e-3, weight_decay=1e-4)),
      ('optaxplus.alto', 13, alto(1e-3)),
  ]
  runs = {'copy': update_timing.copy_run(params)}
  runs.update({name: update_timing.update_run(tx, params, grads)
               for name, _, tx in candidates})
  seconds = update_timing.interleaved_best_seconds(runs, args.repeats)
  param_bytes = update_timing.tree_bytes(params)
  bandwidth = 2 * param_bytes / seconds['copy']
  rows = [(name, passes, seconds[name]) for name, passes, _ in candidates]
  print(update_timing.describe_machine(params))
  print(f'copy bandwidth: {bandwidth / 1e9:.1f} GB/s')
  print(update_timing.markdown_table(rows, param_bytes, bandwidth))
  explore_passes = (seconds[candidates[1][0]] - seconds['optax.adam']) * bandwidth / param_bytes
  print(f'E on top of adam: {explore_passes:.2f} param-sized passes (floor 2)')


if __name__ == '__main__':
  main()
