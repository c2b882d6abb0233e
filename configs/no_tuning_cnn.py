"""Suite 1 (MomSPS paper), CNN on digits: untuned Polyak methods vs tuned baselines.

MomSPS and MomSPS_smooth at their defaults (one run per seed) against SGD-momentum over a
learning-rate grid and Adam over a grid, plus SPS_max, the naive SPS_max + heavy ball
(NOT MomSPS: no (1 - momentum) factor) and optax.contrib.momo, all at defaults.
"""

from configs import default

SGD_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def untuned_arms():
  return [
      dict(label="momsps", optimizer=dict(name="momsps")),
      dict(label="momsps_smooth", optimizer=dict(name="momsps_smooth")),
      dict(label="momsps_smooth c=0.4", optimizer=dict(name="momsps_smooth", c=0.4)),
      dict(label="sps", optimizer=dict(name="sps")),
      dict(label="sps+heavy-ball (naive)", optimizer=dict(name="sps_naive_momentum")),
      dict(label="momo", optimizer=dict(name="momo")),
  ]


def get_config():
  config = default.get_config()
  config.sweep = default.sweep_block(
      name="no_tuning_cnn",
      seeds=(0, 1, 2, 3, 4),
      metric="accuracy",
      reference="sgd-momentum",
      untuned=tuple(a["label"] for a in untuned_arms()),
      description=(
          "Untuned methods run at their library defaults (momsps: c=1, γ_b=10, β=0.9; "
          "momsps_smooth: c=1 or the paper's deep-learning c=0.4, τ=2, init step 1; "
          "sps: c=0.5, γ_b=1; naive: sps + trace(0.9); momo: lr 1, β=0.9). "
          "Baselines: SGD with momentum 0.9 and Adam, constant learning rates."),
      arms=untuned_arms() + [
          dict(label="sgd-momentum", optimizer=dict(name="sgd", momentum=0.9),
               grid=(("optimizer.learning_rate", SGD_LEARNING_RATES),)),
          dict(label="adam", optimizer=dict(name="adam"),
               grid=(("optimizer.learning_rate", ADAM_LEARNING_RATES),)),
      ],
  )
  return config
