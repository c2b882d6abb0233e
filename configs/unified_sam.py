"""Suite 2 (Unified SAM paper): rho x lambda grid around SGD-momentum on the digits CNN.

lambda in {0 (USAM), 0.5, 1 (SAM), 1/t, 1-1/t} x rho, against the base optimizer
(rho=0 is exactly the base, so it runs without the wrapper), plus SAM every k steps.
Base: SGD momentum 0.9, lr 0.1, weight decay 5e-4 as in the paper.
"""

from configs import default
from experiments import optimizers

RHOS = (0.05, 0.1, 0.2)
LAMBDAS = ("0", "0.5", "1", "1/t", "1-1/t")


def get_config():
  config = default.get_config()
  config.optimizer = optimizers.default_config(
      "sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
  config.sweep = default.sweep_block(
      name="unified_sam",
      seeds=(0, 1, 2, 3, 4),
      metric="accuracy",
      reference="sgd-momentum (base)",
      description=("Base: SGD momentum 0.9, lr 0.1, weight decay 5e-4, constant lr. "
                   "λ=1 is SAM, λ=0 USAM; `every_k`: the perturbation is applied every "
                   "k-th step (the other steps are plain base steps)."),
      arms=[dict(label="sgd-momentum (base)")] + [
          dict(label=f"λ={lam}", sam=dict(enabled=True, lam=lam),
               grid=(("sam.rho", RHOS),))
          for lam in LAMBDAS
      ] + [
          dict(label=f"SAM every_k={k}", sam=dict(enabled=True, lam="1", rho=0.1,
                                                  every_k=k))
          for k in (2, 4)
      ],
  )
  return config
