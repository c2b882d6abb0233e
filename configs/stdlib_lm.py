"""A tiny decoder-only character transformer on Python standard-library source text.

``python -m experiments.train --config configs/stdlib_lm.py`` trains it with Adam;
the suites on this task import this config.
"""

from configs import default
from experiments import optimizers


def get_config(optimizer: str = ""):
  config = default.get_config(optimizer)
  config.dataset = "stdlib_chars"
  config.context_length = 64
  config.model.name = "transformer"
  config.model.width = 64
  config.model.depth = 2
  config.model.num_heads = 4
  if not optimizer:
    config.optimizer = optimizers.default_config("adam", learning_rate=3e-3)
  config.batch_size = 32
  config.num_steps = 400
  config.log_every = 10
  config.eval_every = 100
  config.checkpoint_every = 100
  config.eval_batch_size = 256
  config.train_eval_examples = 256  # evenly spaced training windows
  config.hessian.batch_size = 64
  config.sweep.name = "stdlib_lm"
  config.sweep.metric = "perplexity"
  return config
