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

Each figure is the fastest of interleaved repeats, in wall-clock and in process CPU time
(all threads); the floor divides by the copy pass's bandwidth measured the same way. On
a machine shared with other jobs the CPU-time ratios are the steadier estimate. XLA's own
count of the bytes the compiled, donated ``update + apply_updates`` accesses follows the
table (``benchmarks/bytes_accessed.py``, which explains XLA:CPU's floors); it does not
depend on the machine's load.
"""


import optax

from benchmarks import bytes_accessed
from benchmarks import update_timing
from optaxplus.exploration import alto, eadam


def main():
  args = update_timing.tree_arguments(__doc__, 768, 8, 32000)

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
  wall, cpu = update_timing.interleaved_best(runs, args.repeats)
  param_bytes = update_timing.tree_bytes(params)
  print(update_timing.describe_machine(params))
  print(f'copy bandwidth: {2 * param_bytes / wall["copy"] / 1e9:.1f} GB/s (wall clock)')
  print('| optimizer | param-sized passes | floor (ms) | wall (ms) | wall / floor '
        '| CPU time / CPU floor |')
  print('|---|---:|---:|---:|---:|---:|')
  for name, passes, _ in candidates:
    floor_wall = passes / 2 * wall['copy']
    floor_cpu = passes / 2 * cpu['copy']
    print(f'| {name} | {passes} | {1e3 * floor_wall:.1f} | {1e3 * wall[name]:.1f} | '
          f'{wall[name] / floor_wall:.2f}× | {cpu[name] / floor_cpu:.2f}× |')
  adam, eadam_name = candidates[0][0], candidates[1][0]
  print(f'E on top of adam: {2 * (wall[eadam_name] - wall[adam]) / wall["copy"]:.2f} '
        f'param-sized passes by wall clock, '
        f'{2 * (cpu[eadam_name] - cpu[adam]) / cpu["copy"]:.2f} by CPU time (floor 2)')
  for name, _, tx in candidates:
    print(f'XLA bytes accessed by the {name} update + apply_updates: '
          f'{bytes_accessed.measure(tx, params, {}).passes:.2f} param-sized passes')

if __name__ == '__main__':
  main()
