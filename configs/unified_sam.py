"""Suite 2 (Unified SAM paper): lambda x rho around SGD-momentum, MLP on MNIST-1D.

lambda in {0 (USAM), 0.5, 1 (SAM), 1/t, 1-1/t} x rho in {0.05, ..., 1.6}, rho chosen
on validation per lambda, against the base optimizer (rho=0 is exactly the base, so it
runs without the wrapper); SAM (lambda=1, rho=0.1) every 2 and 5 steps. Base: SGD
momentum 0.9, lr 0.1, weight decay 5e-4 on matrices, warm-up + cosine; MLP (256, 256),
batch 64, 1,250 steps; 10 paired seeds.
"""

from configs import default
from experiments import optimizers

RHOS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
LAMBDAS = ("0", "0.5", "1", "1/t", "1-1/t")


def get_config():
  config = default.get_config()
  config.model.name = "mlp"
  config.model.hidden = (256, 256)
  config.optimizer = optimizers.default_config(
      "sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
  config.schedule = "cosine"
  config.num_steps = 1250
  config.eval_every = 250
  config.checkpoint_every = 0  # a suite resumes run by run; saves CPU time here
  config.sweep = default.sweep_block(
      name="unified_sam",
      seeds=tuple(range(10)),
      metric="accuracy",
      reference="sgd-momentum (base)",
      description=("Base: SGD momentum 0.9, lr 0.1, weight decay 5e-4, warm-up (5%) + "
                   "cosine. λ=1 is SAM, λ=0 USAM; `every_k`: the perturbation is applied "
                   "every k-th step (the other steps are plain base steps)."),
      arms=[dict(label="sgd-momentum (base)")] + [
          dict(label=f"λ={lam}", sam=dict(enabled=True, lam=lam),
               grid=(("sam.rho", RHOS),))
          for lam in LAMBDAS
      ] + [
          dict(label=f"SAM every_k={k}", sam=dict(enabled=True, lam="1", rho=0.1,
                                                  every_k=k))
          for k in (2, 5)
      ],
  )
  return config
