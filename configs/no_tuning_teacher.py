"""Suite 1 (MomSPS paper), teacher-student regression: the interpolation case.

A wider one-hidden-layer student (128 ReLU units) learns a fixed random teacher (32
units) from its exact outputs, so the squared-error minimum is exactly 0, the setting in
which Polyak steps with f* = 0 are exact. The arms of ``configs/no_tuning.py``; chosen
and compared on mean squared error (lower is better), 5 paired seeds.
"""

from configs import default
from configs import no_tuning


def get_config():
  config = default.get_config()
  config.dataset = "teacher_student"
  config.model.name = "mlp"
  config.model.hidden = (128,)
  config.num_steps = 1500
  config.eval_every = 500
  config.checkpoint_every = 0  # a suite resumes run by run; saves CPU time here
  config.train_eval_examples = 4096
  config.sweep = no_tuning.suite_sweep("no_tuning_teacher", seeds=(0, 1, 2, 3, 4),
                                       metric="loss")
  return config
