"""Suite 1 (MomSPS paper): untuned Polyak methods vs tuned baselines, ResNet on MNIST-1D.

MomSPS, MomSPS_smooth, SPS_max, MomDecSPS and the preconditioned Polyak steps PSPS and
SANIA at their library defaults (one config each)
against baselines whose learning rate is chosen on validation: SGD-momentum over 5 rates
with a constant AND with a warm-up + cosine schedule, Adam over 5 rates with warm-up +
cosine, and optax.contrib.momo over 4. 1-D ResNet (32, 64), batch 64, 1,250 steps (~22
epochs of the 3,600 training signals), 5 paired seeds.
"""

from configs import default

SGD_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
MOMO_LEARNING_RATES = (0.3, 1.0, 3.0, 10.0)
DESCRIPTION = (
    "Untuned methods at their library defaults (momsps: c=1, γ_b=10, β=0.9; "
    "momsps_smooth: c=1, τ=2, initial step 1; sps: c=0.5, γ_b=1; momdecsps: c=1, "
    "γ_b=10, β=0.9; psps: Adam preconditioner, c=1, γ_b=1, β=0; sania: Adam-SQR "
    "preconditioner, β=0). Tuned: SGD with momentum 0.9, constant or warm-up + cosine "
    "(linear warm-up over the first 5% of the steps, cosine decay to 0); Adam, warm-up + "
    "cosine; optax.contrib.momo (β=0.9). The grid of each tuned arm is the cost an untuned "
    "method replaces.")


def untuned_arms():
  return [dict(label=name, optimizer=dict(name=name))
          for name in ("momsps", "momsps_smooth", "sps", "momdecsps", "psps", "sania")]


def tuned_arms(sgd=SGD_LEARNING_RATES, adam=ADAM_LEARNING_RATES, momo=MOMO_LEARNING_RATES):
  lr = "optimizer.learning_rate"
  cosine = {"schedule": "cosine"}
  return [
      dict(label="sgd-momentum constant", optimizer=dict(name="sgd", momentum=0.9),
           grid=((lr, sgd),)),
      dict(label="sgd-momentum cosine", optimizer=dict(name="sgd", momentum=0.9),
           overrides=cosine, grid=((lr, sgd),)),
      dict(label="adam cosine", optimizer=dict(name="adam"), overrides=cosine,
           grid=((lr, adam),)),
      dict(label="momo", optimizer=dict(name="momo"), grid=((lr, momo),)),
  ]


def suite_sweep(name: str, seeds: tuple, metric: str, extra_untuned: tuple = (),
                description: str = DESCRIPTION, **grids):
  """Suite 1's sweep block: the untuned arms (and ``extra_untuned``) against the tuned
  arms, whose learning-rate grids ``grids`` may override (see ``tuned_arms``)."""
  untuned = untuned_arms() + list(extra_untuned)
  return default.sweep_block(
      name=name, seeds=seeds, metric=metric, reference="sgd-momentum cosine",
      untuned=tuple(a["label"] for a in untuned), description=description,
      arms=untuned + tuned_arms(**grids))


def get_config():
  config = default.get_config()
  config.num_steps = 1250
  config.eval_every = 250
  config.checkpoint_every = 250
  config.sweep = suite_sweep("no_tuning", seeds=(0, 1, 2, 3, 4), metric="accuracy")
  return config
