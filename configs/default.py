"""Default config: a small 1-D ResNet on MNIST-1D, and the default suite.

``python -m experiments.train --config configs/default.py`` trains the base run below;
``python -m experiments.sweep --config configs/default.py`` runs the default suite in
``config.sweep``, a slice of suite 1 (``configs/no_tuning.py``): MomSPS at its defaults
against SGD-momentum and Adam with warm-up + cosine schedules over small learning-rate
grids chosen on validation, 3 seeds. Every other config imports this one and overrides a
few keys.
"""

import ml_collections

from experiments import optimizers


def get_config(optimizer: str = ""):
  """The default hyperparameter configuration; ``optimizer`` picks another optimizer.

  ``--config configs/default.py:adam`` calls ``get_config("adam")``: the optimizer block
  then holds Adam's hyperparameters at their defaults.
  """
  config = ml_collections.ConfigDict()

  # Data. The validation split (for choosing hyperparameters) is carved from the training
  # data with `data_seed`; the test split is fixed. See experiments/data.py.
  # 'mnist1d' (4,000 train) | 'mnist1d_40k' | 'teacher_student' | 'digits' | 'stdlib_chars'
  config.dataset = "mnist1d"
  config.data_seed = 0
  config.context_length = 64  # characters per example of 'stdlib_chars'
  config.max_chars = 0  # truncate the character corpus (0: all of it)

  # Model: 'mlp' uses `hidden`, 'cnn' `stage_features`, 'transformer' width/depth/num_heads.
  config.model = ml_collections.ConfigDict(dict(
      name="cnn", hidden=(64, 64), stage_features=(32, 64), width=64, depth=2,
      num_heads=4))

  # Optimizer: `name` plus that optimizer's hyperparameters (see
  # experiments.optimizers.hyperparameters). Switch optimizer with a config string:
  # --config configs/default.py:momsps
  config.optimizer = optimizers.default_config("sgd", learning_rate=0.1, momentum=0.9)
  if optimizer:
    config.optimizer = optimizers.default_config(optimizer)
  # 'constant' | 'cosine': linear warm-up over the first 5% of the steps, then cosine
  # decay to 0 (applied where the optimizer has a learning_rate).
  config.schedule = "constant"
  # Unified SAM around the optimizer (lam: a number, '1/t' or '1-1/t').
  config.sam = ml_collections.ConfigDict(dict(
      enabled=False, rho=0.05, lam="1.0", adaptive=False, every_k=1))

  # Training.
  config.batch_size = 64  # global batch, split over `num_devices`
  config.num_devices = 1  # 0: all local devices
  config.num_steps = 300  # ~5 epochs of the 3,600 MNIST-1D training examples
  config.seed = 0  # initialisation and batch order (paired across the arms of a suite)
  config.log_every = 25  # steps per logged (averaged) train record
  config.eval_every = 150  # steps between validation/test evaluations (and at the end)
  config.eval_batch_size = 1000
  config.train_eval_examples = 1000  # fixed training subset for the final train loss
  # Diverged: a logged train loss (mean over log_every steps) not finite or above this;
  # training stops there. Cross-entropy starts at ln(classes) <= 4.9 here.
  config.divergence_threshold = 1000.0
  config.checkpoint_every = 150  # 0: never checkpoint (then Ctrl-C cannot resume)
  config.stop_after_steps = 0  # >0: stop there as if killed (resume testing)
  config.progress_bar = True  # shown only on a TTY

  # Flatness probe at the end: top Hessian eigenvalue on a fixed training batch.
  config.hessian = ml_collections.ConfigDict(dict(
      num_iterations=20, batch_size=512, tol=1e-3))

  # The default suite (experiments.sweep). Arms: `label`, an `optimizer` block (name and
  # the keys that differ from its defaults), optional `sam` keys, `overrides` (dotted key
  # -> value), `grid` ((dotted key, values) pairs, Cartesian product; the grid point is
  # chosen on validation) and `reference` (the arm it is compared with: default
  # sweep.reference, "" for none).
  config.sweep = sweep_block(
      name="default",
      untuned=("momsps (defaults)",),
      reference="sgd-momentum",
      description="A slice of suite 1 (configs/no_tuning.py): MomSPS at its defaults "
                  "against SGD-momentum (3 learning rates) and Adam (2), both with "
                  "warm-up + cosine schedules, each rate chosen on validation.",
      arms=[
          dict(label="momsps (defaults)", optimizer=dict(name="momsps")),
          dict(label="sgd-momentum", optimizer=dict(name="sgd", momentum=0.9),
               overrides={"schedule": "cosine"},
               grid=(("optimizer.learning_rate", (0.03, 0.1, 0.3)),)),
          dict(label="adam", optimizer=dict(name="adam"), overrides={"schedule": "cosine"},
               grid=(("optimizer.learning_rate", (1e-3, 3e-3)),)),
      ],
  )
  return config


def sweep_block(**kwargs) -> ml_collections.ConfigDict:
  """A `sweep` block with every key a suite may set or a command line may override."""
  block = dict(
      name="sweep",
      seeds=(0, 1, 2),
      # 'accuracy' (higher is better) | 'perplexity' (lower is better): each arm's config
      # is chosen by its mean over seeds on the validation split, reported on test.
      metric="accuracy",
      reference="",  # arm every other arm is compared with (paired over seeds)
      untuned=(),  # arms run at defaults, also compared with the best tuned arm
      description="",
      max_grid_points=0,  # >0: only the first values of every grid axis (smoke tests)
      keep_checkpoints=False,  # keep each finished run's orbax checkpoints
      curve_points=60,  # points per curve kept in the suite's summary.json
      arms=[],
  )
  unknown = set(kwargs) - set(block)
  if unknown:
    raise KeyError(f"unknown sweep keys {sorted(unknown)}; valid: {sorted(block)}")
  block.update(kwargs)
  return ml_collections.ConfigDict(block)
