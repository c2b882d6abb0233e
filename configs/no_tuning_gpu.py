"""Suite 1 at GPU scale (MomSPS paper): the MNIST-1D-40k ResNet, batch 256, for one GPU.

The arms of ``configs/no_tuning.py`` (untuned Polyak methods at their defaults against
SGD-momentum, constant and warm-up + cosine, Adam and momo, each rate chosen on
validation) on 36,000 training signals with a wider 1-D ResNet (64, 128, 256), 20
epochs, 5 paired seeds, split over `num_devices` (0: all local devices). Not run here (no
GPU); on a CPU it is slow.
"""

from configs import no_tuning


def get_config():
  config = no_tuning.get_config()
  config.dataset = "mnist1d_40k"
  config.model.stage_features = (64, 128, 256)
  config.batch_size = 256
  config.num_devices = 0
  config.num_steps = 2800  # 20 epochs of 140 batches
  config.log_every = 50
  config.eval_every = 700
  config.checkpoint_every = 700
  config.eval_batch_size = 2000
  config.train_eval_examples = 4000
  config.sweep.name = "no_tuning_gpu"
  return config
