"""Suite 3a (ALTO paper): ALTO vs LAMB vs Adam at the largest batch the digits allow.

The whole 1,152-image training split is one batch (full-batch training); ALTO at its
large-batch defaults (alpha=-5, explore_b1=0.99), LAMB with the same global-norm clipping
(1.0), each over a learning-rate grid, each arm's rate chosen on validation.
"""

from configs import default

LAMB_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def get_config():
  config = default.get_config()
  config.batch_size = 1152
  config.num_steps = 150
  config.log_every = 5
  config.eval_every = 50
  config.checkpoint_every = 50
  config.sweep = default.sweep_block(
      name="large_batch",
      seeds=(0, 1, 2, 3, 4),
      metric="accuracy",
      reference="lamb",
      description=("Batch 1,152 = the whole training split, 150 steps. ALTO = E "
                   "(alpha=-5, explore_b1=0.99) inside LAMB (b1=0.9, b2=0.99, wd 1e-4 "
                   "on matrices), clip 1.0; LAMB: optax.lamb (b1=0.9, b2=0.999, wd 1e-4 "
                   "on matrices) after the same clipping; Adam: optax.adam."),
      arms=[
          dict(label="alto", optimizer=dict(name="alto"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="lamb", optimizer=dict(name="lamb"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3, 1e-2)),)),
      ],
  )
  return config
