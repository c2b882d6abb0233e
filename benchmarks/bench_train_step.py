"""Times full Flax train steps: momsps vs SGD with momentum, alto vs LAMB, builder vs hand-written.

    python -m benchmarks.bench_train_step [--width 32 --batch 64 --image 32 --repeats 10]

The model is a small ResNet-style Linen CNN (three stages of two residual blocks, conv
→ BatchNorm → ReLU, widths ``width``, ``2·width``, ``4·width``, then a dense classifier)
on a fixed random CIFAR-shaped batch with a softmax cross-entropy loss. Each candidate is
``optaxplus.training.make_train_step`` (forward, backward, BatchNorm update, optimizer,
metrics) under ``jax.jit``; the figure is the fastest call over interleaved repeats. Every
call starts from the same initial state (not donated), so all candidates compute on the
same values: a state that trains on while timed drifts differently per optimizer, and
the CPU's speed depends on the values it meets (denormals), which swamped the optimizer. The targets (issue 5): momsps ≤ 1.03× SGD-momentum and alto ≤ 1.00×
LAMB, i.e. the optimizer vanishes inside the step. A hand-written Flax step with
``optax.sgd`` (``flax.training.train_state.TrainState``, no metrics) shows what the builder
itself costs.
"""

import argparse

import flax.linen as nn
import jax
import optax
from flax.training import train_state

from benchmarks import update_timing
from optaxplus import polyak, training
from optaxplus.exploration import alto


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

  runs = {
      'hand-written Flax step, optax.sgd(momentum=0.9)':
          handwritten_run(optax.sgd(0.1, momentum=0.9)),
      'make_train_step, optax.sgd(momentum=0.9)': builder_run(optax.sgd(0.1, momentum=0.9)),
      'make_train_step, optaxplus momsps': builder_run(polyak.momsps()),
      'make_train_step, optax.lamb': builder_run(optax.lamb(1e-3)),
      'make_train_step, optaxplus alto': builder_run(alto(1e-3)),
  }
  best, _ = update_timing.interleaved_best(runs, args.repeats)
  sizes = sum(x.size for x in jax.tree.leaves(params))
  print(f'{jax.devices()[0].platform}: {jax.devices()[0].device_kind}, jax {jax.__version__}, '
        f'ResNet width {args.width}, {sizes / 1e6:.2f}M params, batch {args.batch} × '
        f'{args.image}×{args.image}×3')
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

if __name__ == '__main__':
  main()
