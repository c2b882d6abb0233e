"""Timing of one optimizer update against its byte floor, shared by the benchmark scripts.

An update reads and writes whole parameter-sized trees; on any machine its floor is
``bytes moved / copy bandwidth``. The bandwidth is measured here, in the same process and
run, by a jitted, donated ``p * c`` over the same tree (one read + one write per byte).
"""

import argparse
import random
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


def transformer_params(d_model: int, layers: int, vocab: int, dtype=jnp.float32) -> dict:
  """A GPT-shaped parameter tree: embeddings, attention and MLP kernels, biases, norms."""
  def block(key):
    k = jax.random.split(key, 4)
    dense = lambda key, n, m: jax.random.normal(key, (n, m), dtype) * 0.02
    return {
        'attn': {'qkv': dense(k[0], d_model, 3 * d_model), 'qkv_bias': jnp.zeros(3 * d_model, dtype),
                 'out': dense(k[1], d_model, d_model), 'out_bias': jnp.zeros(d_model, dtype)},
        'mlp': {'up': dense(k[2], d_model, 4 * d_model), 'up_bias': jnp.zeros(4 * d_model, dtype),
                'down': dense(k[3], 4 * d_model, d_model), 'down_bias': jnp.zeros(d_model, dtype)},
        'norm1': jnp.ones(d_model, dtype), 'norm2': jnp.ones(d_model, dtype),
    }
  keys = jax.random.split(jax.random.PRNGKey(0), layers + 1)
  return {
      'embed': jax.random.normal(keys[0], (vocab, d_model), dtype) * 0.02,
      'blocks': [block(k) for k in keys[1:]],
      'final_norm': jnp.ones(d_model, dtype),
  }


def tree_arguments(doc: str, d_model: int, layers: int, vocab: int,
                   repeats: Optional[int] = 15) -> argparse.Namespace:
  """The command line of a script timing updates on :func:`transformer_params`' tree."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument('--d_model', type=int, default=d_model)
  parser.add_argument('--layers', type=int, default=layers)
  parser.add_argument('--vocab', type=int, default=vocab)
  if repeats is not None:
    parser.add_argument('--repeats', type=int, default=repeats)
  return parser.parse_args()


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def interleaved_best(runs: dict[str, Callable[[], object]], rounds: int) -> tuple[dict, dict]:
  """The fastest wall-clock and process-CPU seconds of each run, one call of each per round.

  Interleaving spreads the noise of a shared machine evenly over the candidates, so their
  ratios, all measured in this one run, stay comparable. Each round takes the runs in a
  new (seeded) order: a run timed right after one that sweeps far more memory is slowed
  (8% for a 25 ms update after ``optax.lamb`` on the 29M-param tree), and a fixed order
  would charge that to the same candidate every round. The CPU time sums all of XLA's
  threads: on a shared machine it is less disturbed than the wall clock by threads waiting
  for a core, so its ratios are the steadier estimate of the work each run does.
  """
  for run in runs.values():
    jax.block_until_ready(run())
  wall = {name: float('inf') for name in runs}
  cpu = dict(wall)
  order = list(runs)
  shuffle = random.Random(0).shuffle
  for _ in range(rounds):
    shuffle(order)
    for name in order:
      run = runs[name]
      start_wall, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(run())
      wall[name] = min(wall[name], time.perf_counter() - start_wall)
      cpu[name] = min(cpu[name], time.process_time() - start_cpu)
  return wall, cpu


def copy_run(params) -> Callable[[], object]:
  """A jitted, donated elementwise pass over ``params``: one read + one write (2 passes)."""
  scale = jax.jit(lambda p: jax.tree.map(lambda x: x * 1.0001, p), donate_argnums=0)
  holder = [jax.tree.map(jnp.copy, params)]

  def run():
    holder[0] = scale(holder[0])
    return holder[0]

  return run


def update_run(tx: optax.GradientTransformation, params, grads,
               **extra_args) -> Callable[[], object]:
  """One jitted ``update`` + ``apply_updates`` with params and state donated."""
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **extra_args)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  holder = [jax.tree.map(jnp.copy, params), tx.init(params)]

  def run():
    holder[0], holder[1] = step(holder[0], holder[1], grads)
    return holder[0]

  return run


def markdown_table(rows, param_bytes: int, bandwidth: float) -> str:
  """Rows of (name, passes over a param-sized tree, seconds) as a Markdown table."""
  lines = ['| optimizer | param-sized passes | floor (ms) | measured (ms) | measured / floor |',
           '|---|---:|---:|---:|---:|']
  for name, passes, seconds in rows:
    floor = passes * param_bytes / bandwidth
    lines.append(f'| {name} | {passes} | {1e3 * floor:.2f} | {1e3 * seconds:.2f} | '
                 f'{seconds / floor:.2f}× |')
  return '\n'.join(lines)


def describe_machine(params) -> str:
  device = jax.devices()[0]
  count = sum(x.size for x in jax.tree.leaves(params))
  return (f'{device.platform}: {device.device_kind}, jax {jax.__version__}, '
          f'{count / 1e6:.1f}M params ({np.dtype(jax.tree.leaves(params)[0].dtype).name})')
