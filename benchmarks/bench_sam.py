"""Times a Unified SAM train step against a plain step, hand-written SAM and optax.contrib.sam.

    python -m benchmarks.bench_sam [--depth 4 --width 1024 --batch 256 --repeats 10]

The model is a ReLU MLP (``depth`` hidden layers of ``width``) with a softmax
cross-entropy loss on a fixed random batch; every step is jitted with params and state
donated and includes the forward and backward passes. A SAM step needs two forward and
backward passes, so ~2× the plain step is the floor; the only extra work on top is the
perturbation (one norm and one axpy over the params). Each candidate runs a block of 5
steps per call (a whole ``every_k=5`` cycle; 10 half-steps for contrib's transparent
mode, which spends one call on the ascent and one on the descent); the figures are the
fastest block over interleaved repeats, divided by 5, in wall-clock and in process CPU
time (all threads).
"""

import argparse

import jax
import jax.numpy as jnp
import optax

from benchmarks import update_timing
from optaxplus.sharpness import unified_sam

STEPS_PER_CALL = 5


def mlp_params(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [{'w': jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), 'b': jnp.zeros(n)}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def loss_fn(params, batch):
  x, labels = batch
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  logits = x @ params[-1]['w'] + params[-1]['b']
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def block_run(step, params, state, batch, calls):
  """``calls`` jitted, donated calls of ``step(params, state, batch)`` per run."""
  step = jax.jit(step, donate_argnums=(0, 1))
  holder = [jax.tree.map(jnp.copy, params), state]

  def run():
    for _ in range(calls):
      holder[0], holder[1] = step(holder[0], holder[1], batch)
    return holder[0]

  return run


def optax_step(tx, **update_kwargs):
  """A train step with ``tx``; ``grad_fn=True`` passes this batch's gradient function."""
  def step(params, state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    kwargs = dict(update_kwargs)
    if kwargs.pop('grad_fn', False):
      kwargs['grad_fn'] = lambda p: jax.grad(loss_fn)(p, batch)
    if kwargs.pop('contrib_grad_fn', False):
      kwargs['grad_fn'] = lambda p, _: jax.grad(loss_fn)(p, batch)
    updates, state = tx.update(grads, state, params, **kwargs)
    return optax.apply_updates(params, updates), state
  return step


def hand_written_sam_step(base, rho):
  """Foret et al.'s two passes written out: e = ρ g/‖g‖, base step with ∇f(x + e)."""
  def step(params, state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    scale = rho / (optax.tree.norm(grads) + 1e-12)
    perturbed = jax.tree.map(lambda p, g: p + scale * g, params, grads)
    updates, state = base.update(jax.grad(loss_fn)(perturbed, batch), state, params)
    return optax.apply_updates(params, updates), state
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--depth', type=int, default=4, help='hidden layers')
  parser.add_argument('--width', type=int, default=1024)
  parser.add_argument('--inputs', type=int, default=256)
  parser.add_argument('--classes', type=int, default=10)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--rho', type=float, default=0.05)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()

  key_params, key_x, key_y = jax.random.split(jax.random.PRNGKey(0), 3)
  params = mlp_params(key_params, [args.inputs] + [args.width] * args.depth + [args.classes])
  batch = (jax.random.normal(key_x, (args.batch, args.inputs)),
           jax.random.randint(key_y, (args.batch,), 0, args.classes))
  base = optax.sgd(0.01, momentum=0.9)
  adversary = optax.chain(optax.contrib.normalize(), optax.sgd(args.rho))
  opaque = optax.contrib.sam(base, adversary, sync_period=2, opaque_mode=True)
  transparent = optax.contrib.sam(base, adversary, sync_period=2)
  usam_tx = unified_sam(base, args.rho)
  usam_k5 = unified_sam(base, args.rho, every_k=5)
  candidates = {
      'plain SGD-momentum step': (optax_step(base), base, 1),
      'hand-written two-pass SAM': (hand_written_sam_step(base, args.rho), base, 1),
      'optaxplus.unified_sam (λ=1)': (optax_step(usam_tx, grad_fn=True), usam_tx, 1),
      'optaxplus.unified_sam every_k=5': (optax_step(usam_k5, grad_fn=True), usam_k5, 1),
      'optax.contrib.sam opaque': (optax_step(opaque, contrib_grad_fn=True), opaque, 1),
      'optax.contrib.sam transparent': (optax_step(transparent), transparent, 2),
  }
  runs = {name: block_run(step, params, tx.init(params), batch, calls * STEPS_PER_CALL)
          for name, (step, tx, calls) in candidates.items()}
  wall, cpu = update_timing.interleaved_best(runs, args.repeats)
  print(update_timing.describe_machine(params)
        + f', {jax.device_count()} device(s), MLP {args.inputs}-'
        + f'{args.depth}×{args.width}-{args.classes}, batch {args.batch}')
  print('| train step | wall ms / step | × plain (wall) | CPU ms / step | × plain (CPU) |')
  print('|---|---:|---:|---:|---:|')
  plain = 'plain SGD-momentum step'
  for name in runs:
    print(f'| {name} | {1e3 * wall[name] / STEPS_PER_CALL:.2f} | '
          f'{wall[name] / wall[plain]:.2f}× | {1e3 * cpu[name] / STEPS_PER_CALL:.2f} | '
          f'{cpu[name] / cpu[plain]:.2f}× |')

if __name__ == '__main__':
  main()
