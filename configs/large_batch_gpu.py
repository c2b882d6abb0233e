"""Suite 3 at GPU scale (ALTO paper): batch 4,096 on the character language model.

Digits have only 1,440 training images, so the GPU-sized large-batch comparison uses the
standard-library corpus (about 230,000 window starts): ALTO vs LAMB vs Adam at a global
batch of 4,096 windows of 64 characters, split over `num_devices` (0: all local devices).
Sized for one accelerator (about 17 epochs-worth of characters in 300 steps); on a CPU
it is slow.
"""

from configs import default
from configs import large_batch
from configs import stdlib_lm


def get_config():
  config = stdlib_lm.get_config()
  config.batch_size = 4096
  config.num_devices = 0
  config.num_steps = 300
  config.eval_every = 100
  config.checkpoint_every = 100
  config.hessian.batch_size = 256
  config.sweep = default.sweep_block(
      name="large_batch_gpu",
      seeds=(0, 1, 2),
      metric="perplexity",
      reference="lamb",
      description=("Batch 4,096 windows × 64 characters. ALTO (alpha=-5, "
                   "explore_b1=0.99, clip 1) vs optax.lamb after the same clipping vs "
                   "Adam."),
      arms=[
          dict(label="alto", optimizer=dict(name="alto"),
               grid=(("optimizer.learning_rate", large_batch.LAMB_LEARNING_RATES),)),
          dict(label="lamb", optimizer=dict(name="lamb"),
               grid=(("optimizer.learning_rate", large_batch.LAMB_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3, 1e-2)),)),
      ],
  )
  return config
