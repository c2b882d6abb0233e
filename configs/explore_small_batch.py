"""Suite 3b (ALTO paper): the E adaptor on SGD-momentum and Adam at small batch.

E's small-batch defaults (alpha=0.5, b1=0.01) on top of the base optimizer, against the
base alone, at batch 32 on the digits CNN, each at two learning rates.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 32
  config.num_steps = 450  # 10 epochs of 45 steps
  config.eval_every = 150
  config.checkpoint_every = 150
  config.sweep = default.sweep_block(
      name="explore_small_batch",
      seeds=(0, 1, 2),
      metric="test_accuracy",
      reference="sgd-momentum",
      description=("Batch 32. E (alpha=0.5, b1=0.01) rewrites the gradient before "
                   "the base optimizer; alpha=0 would be the base exactly."),
      arms=[
          dict(label="sgd-momentum", optimizer=dict(name="sgd", momentum=0.9),
               grid=(("optimizer.learning_rate", (0.03, 0.1)),)),
          dict(label="esgd", optimizer=dict(name="esgd", momentum=0.9),
               grid=(("optimizer.learning_rate", (0.03, 0.1)),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3)),)),
          dict(label="eadam", optimizer=dict(name="eadam"),
               grid=(("optimizer.learning_rate", (1e-3, 3e-3)),)),
      ],
  )
  return config
