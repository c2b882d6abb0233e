"""Does the input pipeline starve the device? Train-step time with and without data loading.

    python -m benchmarks.bench_input_pipeline [--steps 200 --repeats 5]

For the experiment configs ``default`` (1-D ResNet on MNIST-1D, batch 64),
``large_batch`` (MLP on MNIST-1D-40k, batch 4,096) and ``stdlib_lm`` (character
transformer, batch 32) it times,
in interleaved repeats of ``--steps`` steps each (best repeat reported):

* ``compute``: the jitted train step of ``experiments.train`` on one batch already on the
  device, the state carried from step to step;
* ``loader``: producing the batches alone (``BatchIterator.batch`` + ``jax.device_put``);
* ``train loop``: both, as ``experiments.train`` runs them (asynchronous dispatch: the
  host prepares batch t+1 while the device computes step t; metrics are not fetched).

``overhead`` = train loop / compute - 1: what data loading adds to a step.
"""

import argparse
import time

import jax

from configs import default, large_batch, stdlib_lm
from experiments import data as data_lib
from experiments import train as train_lib


def _setup(config):
  setup = train_lib.create_run(config, data_lib.load(config))
  return setup.batches, setup.fns.train_step, setup.state


def _time(fn, steps):
  start = time.perf_counter()
  out = fn(steps)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps * 1e3


def bench(name, config, steps, repeats):
  batches, train_step, state = _setup(config)
  fixed = jax.device_put(batches.batch(0))
  holder = {"state": train_step(state, fixed)[0]}  # compile
  jax.block_until_ready(holder["state"])

  def compute(n):
    s = holder["state"]
    for _ in range(n):
      s, metrics = train_step(s, fixed)
    holder["state"] = s
    return metrics

  def loader(n):
    out = None
    for t in range(n):
      out = jax.device_put(batches.batch(t))
    return out

  def loop(n):
    s = holder["state"]
    for t in range(n):
      s, metrics = train_step(s, jax.device_put(batches.batch(t)))
    holder["state"] = s
    return metrics

  best = {"compute": float("inf"), "loader": float("inf"), "train loop": float("inf")}
  for _ in range(repeats):  # interleaved, so slow phases of a shared machine hit all three
    for label, fn in (("compute", compute), ("loader", loader), ("train loop", loop)):
      best[label] = min(best[label], _time(fn, steps))
  overhead = best["train loop"] / best["compute"] - 1
  print(f"| {name} | {config.batch_size} | {best['compute']:.2f} | {best['loader']:.2f} | "
        f"{best['train loop']:.2f} | {overhead:+.0%} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"JAX {jax.__version__}, devices {jax.devices()}; best of {args.repeats} "
        f"repeats of {args.steps} steps; ms per step\n")
  print("| config | batch | compute | loader | train loop | overhead |")
  print("|---|---|---|---|---|---|")
  for name, module in (("default (resnet)", default), ("large_batch (mlp)", large_batch),
                       ("stdlib_lm (transformer)", stdlib_lm)):
    config = module.get_config()
    steps = max(10, args.steps // 10) if config.batch_size > 1000 else args.steps
    bench(name, config, steps, args.repeats)


if __name__ == "__main__":
  main()
