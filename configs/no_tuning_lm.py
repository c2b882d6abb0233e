"""Suite 1 (MomSPS paper), character transformer on standard-library source: untuned vs tuned.

The arms of ``configs/no_tuning.py`` (plus SPS_max + heavy ball without the (1 - β)
factor, the unstable combination the MomSPS paper warns against) on the language model,
4 learning rates per tuned arm (1 for momo), 5 paired seeds, 300 steps at batch 32 (the
CPU budget of this suite); no Hessian probe.
"""

from configs import no_tuning
from configs import stdlib_lm


def get_config():
  config = stdlib_lm.get_config()
  config.num_steps = 300
  config.eval_every = 100
  config.checkpoint_every = 0  # a suite resumes run by run; checkpoints cost CPU time here
  config.hessian.num_iterations = 0  # suite 1 compares accuracy; the LM's HVP compiles slowly
  config.sweep = no_tuning.suite_sweep(
      "no_tuning_lm", seeds=(0, 1, 2, 3, 4), metric="perplexity",
      extra_untuned=(dict(label="sps+heavy-ball (naive)",
                          optimizer=dict(name="sps_naive_momentum")),),
      description=no_tuning.DESCRIPTION + " sps+heavy-ball (naive): sps fed into "
                  "trace(0.9), NOT MomSPS.",
      sgd=(0.03, 0.1, 0.3, 1.0), adam=(1e-3, 3e-3, 1e-2, 3e-2), momo=(1.0,))
  return config
