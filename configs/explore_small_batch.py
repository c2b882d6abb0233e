"""Suite 4 (ALTO paper): the E adaptor on SGD-momentum and Adam at small batch.

E with the paper's small-batch setting (alpha=0.5, explore_b1=0.01; the library's
defaults are the large-batch ones) on top of the base optimizer, against the base alone,
at batch 64 on the MNIST-1D ResNet, 1,250 steps, warm-up + cosine, each at two learning
rates chosen on validation, 5 paired seeds. E-SGD is compared with SGD-momentum and
E-Adam with Adam.
"""

from configs import default

SMALL_BATCH_E = dict(alpha=0.5, explore_b1=0.01)


def get_config():
  config = default.get_config()
  config.schedule = "cosine"
  config.num_steps = 1250
  config.eval_every = 250
  config.checkpoint_every = 0  # a suite resumes run by run; saves CPU time here
  lr = "optimizer.learning_rate"
  config.sweep = default.sweep_block(
      name="explore_small_batch",
      seeds=(0, 1, 2, 3, 4),
      metric="accuracy",
      reference="sgd-momentum",
      description=("Batch 64, warm-up (5%) + cosine. E (alpha=0.5, explore_b1=0.01) "
                   "rewrites the gradient before the base optimizer; alpha=0 would be the "
                   "base exactly. E-SGD is compared with SGD-momentum, E-Adam with Adam."),
      arms=[
          dict(label="sgd-momentum", optimizer=dict(name="sgd", momentum=0.9),
               grid=((lr, (0.1, 0.3)),)),
          dict(label="esgd", optimizer=dict(name="esgd", momentum=0.9, **SMALL_BATCH_E),
               grid=((lr, (0.1, 0.3)),)),
          dict(label="adam", optimizer=dict(name="adam"), reference="",
               grid=((lr, (1e-3, 3e-3)),)),
          dict(label="eadam", optimizer=dict(name="eadam", **SMALL_BATCH_E),
               reference="adam", grid=((lr, (1e-3, 3e-3)),)),
      ],
  )
  return config
