"""Suite 3 (ALTO paper): large batch on MNIST-1D-40k, ALTO vs ALTO without E.

Batch 4,096 of the 36,000 training signals (8 steps an epoch) against a batch-256
reference, the same 20-epoch budget (160 and 2,800 steps), warm-up + cosine schedules
for every arm, an MLP (256, 256). Arms, each over 4 learning rates (5 for Adam and
E-Adam) chosen on validation: ``alto`` at its defaults (E with alpha=-5,
explore_b1=0.99, inside its LAMB: b1=0.9, b2=0.99, weight decay 1e-4 on matrices, trust
ratio on matrices, clip 1), ``alto`` with alpha=-10, ``alto`` with
alpha=0 (E off: the same LAMB, the ablation the headline compares with), optax.lamb
(b1=0.9, b2=0.999, trust ratio on every tensor) after the same clipping, Adam and E-Adam
(alpha=-5) at batch 4,096, and Adam at batch 256. 5 paired seeds.
"""

from configs import default

LAMB_LEARNING_RATES = (3e-3, 1e-2, 3e-2, 1e-1)
ADAM_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
NO_E = "alto α=0 (no E)"


def get_config():
  config = default.get_config()
  config.dataset = "mnist1d_40k"
  config.model.name = "mlp"
  config.model.hidden = (256, 256)
  config.schedule = "cosine"
  config.batch_size = 4096
  config.num_steps = 160  # 20 epochs of 8 batches
  config.log_every = 5
  config.eval_every = 40
  config.checkpoint_every = 0  # a suite resumes run by run; saves CPU time here
  config.eval_batch_size = 2000
  config.train_eval_examples = 4000
  lr = "optimizer.learning_rate"
  small_batch = {"batch_size": 256, "num_steps": 2800, "log_every": 50,
                 "eval_every": 700}
  config.sweep = default.sweep_block(
      name="large_batch",
      seeds=(0, 1, 2, 3, 4),
      metric="accuracy",
      reference=NO_E,
      description=("Batch 4,096 (160 steps) vs 256 (2,800 steps), 20 epochs of "
                   "MNIST-1D-40k, warm-up (5%) + cosine. ALTO and ALTO α=-10 are "
                   "compared with ALTO α=0 (E off, the same LAMB); optax.lamb too (the "
                   "LAMB variant); E-Adam with Adam; Adam at 4,096 with Adam at 256."),
      arms=[
          dict(label="alto", optimizer=dict(name="alto"), grid=((lr, LAMB_LEARNING_RATES),)),
          dict(label="alto α=-10", optimizer=dict(name="alto", alpha=-10.0),
               grid=((lr, LAMB_LEARNING_RATES),)),
          dict(label=NO_E, optimizer=dict(name="alto", alpha=0.0),
               grid=((lr, LAMB_LEARNING_RATES),)),
          dict(label="lamb", optimizer=dict(name="lamb"), grid=((lr, LAMB_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"), reference="adam batch 256",
               grid=((lr, ADAM_LEARNING_RATES),)),
          dict(label="eadam", optimizer=dict(name="eadam"), reference="adam",
               grid=((lr, ADAM_LEARNING_RATES),)),
          dict(label="adam batch 256", optimizer=dict(name="adam"), reference="",
               overrides=small_batch, grid=((lr, (1e-3, 3e-3, 1e-2, 3e-2)),)),
      ],
  )
  return config
