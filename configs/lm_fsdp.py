"""Large-batch character LM with FSDP: params and optimizer state split over 4 devices.

``python -m experiments.train --config configs/lm_fsdp.py`` runs on every visible
device, a GPU/TPU host whose device count 4 divides or, on CPU, simulated devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``): ``mesh.fsdp = 4`` devices hold one quarter of each
large weight and of its optimizer state (``optaxplus.parallel.fsdp_sharding``), the
other devices form the ``data`` axis, and the global batch of 512 windows is split over
all of them. ALTO, the large-batch optimizer, with a wider transformer than
``stdlib_lm``.
"""

import ml_collections

from configs import stdlib_lm
from experiments import optimizers


def get_config(optimizer: str = ""):
  config = stdlib_lm.get_config(optimizer)
  config.model.width = 256
  config.model.depth = 4
  if not optimizer:
    config.optimizer = optimizers.default_config("alto", learning_rate=1e-3)
  config.batch_size = 512
  config.num_devices = 0  # all of them
  config.mesh = ml_collections.ConfigDict({"fsdp": 4})
  config.num_steps = 200
  config.sweep.name = "lm_fsdp"
  return config
