"""Per-device bytes of a transformer LM's train state, and the all-gathers its update holds.

    python -m benchmarks.bench_fsdp [--width 256 --depth 4 --optimizers momsps,alto]

Runs on 8 devices (8 simulated CPU devices unless ``XLA_FLAGS`` already sets a device
count) and compares two layouts of the same train state: ``(8 data)``, the state
replicated, and ``(2 data x 4 fsdp)``, the state split by
``optaxplus.parallel.fsdp_sharding`` (default ``min_size``). For each optimizer it reports

- the per-device bytes of params + optimizer state, from each leaf's shard shape, and
  XLA's per-device argument bytes of the compiled train step (state + batch);
- the all-gathers of param-sized arrays (the full shape of a sharded param) in the
  compiled train step (``data_parallel(make_train_step(...), state_sharding=...)``,
  lowered with ``step.lower``), which the forward and backward passes need (one per
  sharded param: the loss computes with the gathered weights), and in the compiled
  optimizer update alone
  (``tx.update`` on sharded gradients), which must hold none: the update works on each
  device's shard, norms reduce scalars; and the other all-gathers of at least
  ``min_size`` elements in the train step (activations the partitioner gathers).

Nothing is executed: the steps are compiled from abstract shapes.
"""

import argparse
import os
import re

if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_force_host_platform_device_count=8')

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

from experiments.models import TransformerLM  # noqa: E402
from optaxplus import parallel, polyak, training  # noqa: E402
from optaxplus.exploration import alto, eadam  # noqa: E402
from optaxplus.sharpness import unified_sam  # noqa: E402

OPTIMIZERS = {
    'momsps': polyak.momsps,
    'sam(momsps)': lambda: unified_sam(polyak.momsps(), rho=0.05),
    'alto': lambda: alto(1e-3),
    'eadam': lambda: eadam(1e-3),
}
MIN_SIZE = 2 ** 14  # fsdp_sharding's default
LAYOUTS = {'8 data': (8, 1), '2 data x 4 fsdp': (2, 4)}
GATHER = re.compile(r'=\s*(.*?)\s+all-gather(?:-start)?\(')
SHAPE = re.compile(r'\w+\[([\d,]*)\]')


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--depth', type=int, default=4)
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--vocab', type=int, default=128)
  parser.add_argument('--context', type=int, default=64)
  parser.add_argument('--batch', type=int, default=16, help='global batch (sequences)')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS))
  return parser.parse_args()


def per_device_bytes(tree, shardings):
  return sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def all_gathers(hlo: str) -> list[tuple[int, ...]]:
  """The result shape of every all-gather in an HLO text (the last array of a tuple)."""
  shapes = []
  for match in GATHER.finditer(hlo):
    results = SHAPE.findall(match.group(1))
    shapes.append(tuple(int(d) for d in results[-1].split(',') if d) if results else ())
  return shapes


def count_gathers(hlo: str, shapes: set, min_size: int) -> tuple[int, int]:
  """All-gathers whose result has the full shape of a sharded param, and other large ones."""
  gathered = all_gathers(hlo)
  params = sum(shape in shapes for shape in gathered)
  others = sum(shape not in shapes and np.prod(shape) >= min_size for shape in gathered)
  return params, others


def main():
  args = parse_args()
  assert jax.device_count() == 8, f'needs 8 devices, got {jax.devices()}'
  model = TransformerLM(vocab_size=args.vocab, context_length=args.context,
                        width=args.width, depth=args.depth, num_heads=args.heads)
  tokens = jax.ShapeDtypeStruct((args.batch, args.context + 1), jnp.int32)

  def loss_fn(params, batch):
    logits = model.apply({'params': params}, batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, args.context), jnp.int32))['params'])
  print(f'transformer LM: width {args.width}, depth {args.depth}, '
        f'{optax.tree.size(params) / 1e6:.2f}M params, global batch {args.batch} x '
        f'{args.context} tokens, {jax.device_count()} {jax.devices()[0].platform} devices')
  print('| optimizer | layout | state MiB/device | ratio | XLA argument MiB/device '
        '| sharded params | param-sized all-gathers: train step | optimizer update '
        '| other large all-gathers: train step |')
  print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
  for name in args.optimizers.split(','):
    make_tx = OPTIMIZERS[name]
    create = lambda: training.TrainState.create(apply_fn=None, params=params, tx=make_tx())
    state = jax.eval_shape(create)
    baseline = None
    for layout, (data, fsdp) in LAYOUTS.items():
      mesh = jax.make_mesh((data, fsdp), ('data', 'fsdp'), axis_types=(AxisType.Auto,) * 2)
      sharding = parallel.fsdp_sharding(state, mesh, min_size=MIN_SIZE)
      state_bytes = per_device_bytes(state, sharding)
      baseline = baseline or state_bytes
      sharded = [tuple(x.shape) for x, s in zip(jax.tree.leaves(state.params),
                                                jax.tree.leaves(sharding.params))
                 if not s.is_fully_replicated]
      step = parallel.data_parallel(training.make_train_step(loss_fn), mesh,
                                    axis_name=('data', 'fsdp'), state_sharding=sharding)
      compiled = step.lower(state, tokens).compile()
      arguments = compiled.memory_analysis().argument_size_in_bytes
      tx = optax.with_extra_args_support(make_tx())
      update = jax.jit(
          lambda grads, opt_state, params, tx=tx: tx.update(
              grads, opt_state, params, value=jnp.ones(()), grad_fn=lambda p: grads),
          in_shardings=(sharding.params, sharding.opt_state, sharding.params),
          out_shardings=(sharding.params, sharding.opt_state))
      update_hlo = update.lower(state.params, state.opt_state, state.params).compile()
      step_params, step_others = count_gathers(compiled.as_text(), set(sharded), MIN_SIZE)
      update_params, _ = count_gathers(update_hlo.as_text(), set(sharded), MIN_SIZE)
      print(f'| {name} | {layout} | {state_bytes / 2**20:.2f} | '
            f'{state_bytes / baseline:.3f} | {arguments / 2**20:.2f} | {len(sharded)} | '
            f'{step_params} | {update_params} | {step_others} |')


if __name__ == '__main__':
  main()
