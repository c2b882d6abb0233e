"""An MLP on the scikit-learn 8x8 digits (flattened 64-pixel inputs)."""

from configs import default


def get_config(optimizer: str = ""):
  config = default.get_config(optimizer)
  config.dataset = "digits"
  config.model.name = "mlp"
  config.model.hidden = (64, 64)
  config.train_eval_examples = 1152
  config.sweep.name = "digits_mlp"
  return config
