"""Times full Flax train steps: momsps vs SGD with momentum, alto vs LAMB, builder vs hand-written.

    python -m benchmarks.bench_train_step [--width 32 --batch 64 --image 32 --repeats 10]
    python -m benchmarks.bench_train_step --every_k 5 [--width 16 --image 16 --batch 32]

The model is a small ResNet-style Linen CNN (three stages of two residual blocks, conv
→ BatchNorm → ReLU, widths ``width``, ``2·width``, ``4·width``, then a dense classifier)
on a fixed random CIFAR-shaped batch with a softmax cross-entropy loss. Each candidate is
``optaxplus.training.make_train_step`` (forward, backward, BatchNorm update, optimizer,
metrics) under ``jax.jit``; the figure is the fastest call over interleaved repeats. Every
call starts from the same initial state (not donated), so all candidates compute on the
same values: a state that trains on while timed drifts differently per optimizer, and
the CPU's speed depends on the values it meets (denormals), which swamped the optimizer.
The targets (issue 5): momsps ≤ 1.03× SGD-momentum and alto ≤ 1.00× LAMB, i.e. the
optimizer vanishes inside the step. A hand-written Flax step with ``optax.sgd``
(``flax.training.train_state.TrainState``, no metrics) shows what the builder itself costs.

``--every_k k`` times ``unified_sam(sgd momentum, every_k=k)`` instead: one call runs k
chained steps from the initial state (one SAM step and k − 1 plain ones), with
``sam_step`` chosen in Python (two compiled steps) and with the in-graph ``lax.cond``,
against k plain SGD-momentum steps and k SAM steps. Target (issue 12): the Python
schedule at k = 5 ≤ 1.3× the plain steps by CPU time.
"""

import argparse

import flax.linen as nn
import jax
import optax
from flax.training import train_state

from benchmarks import update_timing
from optaxplus import polyak, training
from optaxplus.exploration import alto
from optaxplus.sharpness import unified_sam


class ResidualBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train=True):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
    if x.shape != y.shape:
      x = norm()(nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  width: int = 32
  classes: int = 10

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
        nn.Conv(self.width, (3, 3), use_bias=False)(x)))
    for stage, features in enumerate((self.width, 2 * self.width, 4 * self.width)):
      for block in range(2):
        x = ResidualBlock(features, 2 if stage and not block else 1)(x, train)
    return nn.Dense(self.classes)(x.mean(axis=(1, 2)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=32)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--every_k', type=int, default=0,
                      help='time unified_sam(every_k=k) against plain steps instead')
  args = parser.parse_args()

  model = ResNet(args.width)
  key_x, key_y, key_init = jax.random.split(jax.random.key(0), 3)
  batch = {'image': jax.random.normal(key_x, (args.batch, args.image, args.image, 3)),
           'label': jax.random.randint(key_y, (args.batch,), 0, 10)}
  variables = model.init(key_init, batch['image'])
  params, model_state = variables['params'], {'batch_stats': variables['batch_stats']}

  def loss_fn(params, model_state, batch):
    logits, model_state = model.apply({'params': params, **model_state}, batch['image'],
                                      mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    return loss, model_state

  def builder_run(tx):
    step = jax.jit(training.make_train_step(loss_fn, has_state=True))
    state = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                       model_state=model_state)
    return lambda: step(state, batch)

  def handwritten_run(tx):
    class State(train_state.TrainState):
      batch_stats: dict

    def step(state, batch):
      def loss(params):
        return loss_fn(params, {'batch_stats': state.batch_stats}, batch)
      (value, new_model_state), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
      return state.apply_gradients(
          grads=grads, batch_stats=new_model_state['batch_stats']), value
    step = jax.jit(step)
    state = State.create(apply_fn=model.apply, params=params, tx=tx,
                         batch_stats=model_state['batch_stats'])
    return lambda: step(state, batch)

  if args.every_k:
    every_k_table(model, params, model_state, loss_fn, batch, args)
    return

  runs = {
      'hand-written Flax step, optax.sgd(momentum=0.9)':
          handwritten_run(optax.sgd(0.1, momentum=0.9)),
      'make_train_step, optax.sgd(momentum=0.9)': builder_run(optax.sgd(0.1, momentum=0.9)),
      'make_train_step, optaxplus momsps': builder_run(polyak.momsps()),
      'make_train_step, optax.lamb': builder_run(optax.lamb(1e-3)),
      'make_train_step, optaxplus alto': builder_run(alto(1e-3)),
  }
  best, _ = update_timing.interleaved_best(runs, args.repeats)
  print(describe_setup(params, args))
  print('| train step | ms | compared with | ratio |')
  print('|---|---:|---|---:|')
  baselines = {'make_train_step, optaxplus momsps': 'make_train_step, optax.sgd(momentum=0.9)',
               'make_train_step, optaxplus alto': 'make_train_step, optax.lamb',
               'make_train_step, optax.sgd(momentum=0.9)':
                   'hand-written Flax step, optax.sgd(momentum=0.9)'}
  for name, seconds in best.items():
    baseline = baselines.get(name)
    compared = f'{baseline} | {seconds / best[baseline]:.3f}×' if baseline else ' | '
    print(f'| {name} | {1e3 * seconds:.2f} | {compared} |')


def describe_setup(params, args) -> str:
  """One line: the device, JAX, the model's size and the batch."""
  sizes = sum(x.size for x in jax.tree.leaves(params))
  return (f'{jax.devices()[0].platform}: {jax.devices()[0].device_kind}, jax {jax.__version__}, '
          f'ResNet width {args.width}, {sizes / 1e6:.2f}M params, batch {args.batch} × '
          f'{args.image}×{args.image}×3')


def every_k_table(model, params, model_state, loss_fn, batch, args):
  """k chained steps per call: plain, SAM every step, and every_k=k both ways."""
  k = args.every_k
  step = training.make_train_step(loss_fn, has_state=True)
  in_graph, from_python = jax.jit(step), jax.jit(step, static_argnames='sam_step')
  base = optax.sgd(0.1, momentum=0.9)

  def block(tx, jitted, schedule):
    start = training.TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                       model_state=model_state)

    def run():
      state = start
      for i in range(k):
        state, _ = jitted(state, batch, **schedule(i))
      return state

    return run

  runs = {
      f'{k} plain SGD-momentum steps': block(base, in_graph, lambda i: {}),
      f'{k} SAM steps (unified_sam, every_k=1)':
          block(unified_sam(base, 0.05), in_graph, lambda i: {}),
      f'unified_sam every_k={k}, sam_step from Python':
          block(unified_sam(base, 0.05, every_k=k), from_python,
                lambda i: {'sam_step': i % k == 0}),
      f'unified_sam every_k={k}, lax.cond in the step':
          block(unified_sam(base, 0.05, every_k=k), in_graph, lambda i: {}),
  }
  wall, cpu = update_timing.interleaved_best(runs, args.repeats)
  print(describe_setup(params, args) + f', {k} chained steps per call')
  print('| steps | wall ms / step | × plain (wall) | CPU ms / step | × plain (CPU) |')
  print('|---|---:|---:|---:|---:|')
  plain = next(iter(runs))
  for name in runs:
    print(f'| {name} | {1e3 * wall[name] / k:.2f} | {wall[name] / wall[plain]:.2f}× | '
          f'{1e3 * cpu[name] / k:.2f} | {cpu[name] / cpu[plain]:.2f}× |')


if __name__ == '__main__':
  main()
