"""Suite 1 (MomSPS paper), character transformer on stdlib source: untuned vs tuned."""

from configs import no_tuning_cnn
from configs import stdlib_lm


def get_config():
  config = stdlib_lm.get_config()
  config.num_steps = 300
  config.eval_every = 100
  config.checkpoint_every = 100
  config.sweep = no_tuning_cnn.get_config().sweep
  config.sweep.name = "no_tuning_lm"
  config.sweep.seeds = (0, 1, 2, 3, 4)
  config.sweep.metric = "perplexity"
  config.sweep.arms[-2]["grid"] = (("optimizer.learning_rate", (0.03, 0.1, 0.3, 1.0, 3.0)),)
  config.sweep.arms[-1]["grid"] = (("optimizer.learning_rate", (3e-4, 1e-3, 3e-3, 1e-2)),)
  return config
