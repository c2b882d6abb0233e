"""Suite 3 at GPU scale (ALTO paper): batch 4,096 on the character language model.

ALTO vs ALTO without E (alpha=0, the same LAMB) vs optax.lamb vs Adam at a global batch
of 4,096 windows of 64 characters of the standard-library corpus (about 800,000 training
characters, each read about 95 times in 300 steps), split over `num_devices` (0: all local
devices). Sized for one accelerator; on a CPU it is slow. For MNIST-1D at this batch see
``configs/large_batch.py``.
"""

from configs import default
from configs import stdlib_lm

LAMB_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def get_config():
  config = stdlib_lm.get_config()
  config.batch_size = 4096
  config.num_devices = 0
  config.num_steps = 300
  config.eval_every = 100
  config.checkpoint_every = 100
  config.hessian.batch_size = 256
  config.schedule = "cosine"
  config.sweep = default.sweep_block(
      name="large_batch_gpu",
      seeds=(0, 1, 2),
      metric="perplexity",
      reference="alto α=0 (no E)",
      description=("Batch 4,096 windows × 64 characters, warm-up (5%) + cosine. ALTO "
                   "(alpha=-5, explore_b1=0.99, clip 1) vs ALTO alpha=0 (E off, the same "
                   "LAMB) vs optax.lamb after the same clipping vs Adam."),
      arms=[
          dict(label="alto", optimizer=dict(name="alto"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="alto α=0 (no E)", optimizer=dict(name="alto", alpha=0.0),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="lamb", optimizer=dict(name="lamb"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3, 1e-2)),)),
      ],
  )
  return config
