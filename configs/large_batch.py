"""Suite 3a (ALTO paper): ALTO vs LAMB vs Adam at the largest batch the digits allow.

The whole 1,152-image training split is one batch (full-batch training); ALTO at its
large-batch defaults (alpha=-5, explore_b1=0.99), LAMB with the same global-norm clipping
(1.0), each over a learning-rate grid, each arm's rate chosen on validation; then each
trained 3x longer at that rate.
"""

from configs import default

LAMB_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
# The rate each arm's 150-step grid chose on validation (the same for all three), for
# the 450-step arms: an arm's config of a suite cannot depend on another's results.
CHOSEN_AT_150_STEPS = {"alto": 3e-3, "lamb": 3e-3, "adam": 3e-3}


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
                   "on matrices) after the same clipping; Adam: optax.adam. The "
                   "`450 steps` arms train 3x longer at the rate each arm's grid chose "
                   "on validation, and are compared with LAMB at 450 steps."),
      arms=[
          dict(label="alto", optimizer=dict(name="alto"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="lamb", optimizer=dict(name="lamb"),
               grid=(("optimizer.learning_rate", LAMB_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3, 1e-2)),)),
      ] + [  # 3x longer at the rates chosen on validation; compared with LAMB's
          dict(label=f"{name} 450 steps", reference="" if name == "lamb" else
               "lamb 450 steps", optimizer=dict(name=name, learning_rate=rate),
               overrides={"num_steps": 450, "eval_every": 150, "checkpoint_every": 150})
          for name, rate in CHOSEN_AT_150_STEPS.items()
      ],
  )
  return config
