"""An MLP on the scikit-learn digits (flattened 64-pixel inputs)."""

from configs import default


def get_config(optimizer: str = ""):
  config = default.get_config(optimizer)
  config.model.name = "mlp"
  config.model.hidden = (64, 64)
  config.sweep.name = "digits_mlp"
  return config
