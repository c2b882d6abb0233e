"""Checks of a train config before anything is built or compiled.

Every key with a valid range is checked with the library's checker
(``optaxplus._checks``), the optimizer and SAM blocks by building them (optaxplus's
factories check their hyperparameters at construction; :mod:`experiments.optimizers`
checks the optax baselines'). A bad value is a :class:`ConfigError` whose one-line message
names the key as typed on the command line and its valid range, e.g.
``optimizer.momentum must be a finite number in [0.0, 1.0), got 1.5.``
"""

from __future__ import annotations

import jax
import ml_collections

from experiments import data as data_lib
from experiments import models as models_lib
from experiments import optimizers as optimizers_lib
from optaxplus._checks import check_bool, check_range

# Whole numbers >= 1, and >= 0.
POSITIVE = ("batch_size", "num_steps", "log_every", "eval_every", "eval_batch_size",
            "train_eval_examples", "context_length", "hessian.batch_size", "model.width",
            "model.depth", "model.num_heads")
NON_NEGATIVE = ("seed", "data_seed", "num_devices", "checkpoint_every", "stop_after_steps",
                "max_chars", "hessian.num_iterations")


class ConfigError(ValueError):
  """A config value out of its range; the one-line message names the key."""


def _get(config, dotted: str):
  for key in dotted.split("."):
    config = config[key]
  return config


def _one_of(key: str, value, valid) -> None:
  if value not in valid:
    raise ValueError(f"{key} must be one of {', '.join(valid)}, got {value!r}.")


def _check(config: ml_collections.ConfigDict) -> None:
  """Raises TypeError/ValueError naming the first bad key."""
  _one_of("dataset", config.dataset, data_lib.DATASETS)
  _one_of("model.name", config.model.name, models_lib.MODELS)
  _one_of("schedule", config.schedule, optimizers_lib.SCHEDULES)
  if (config.dataset == "stdlib_chars") != (config.model.name == "transformer"):
    raise ValueError("the transformer goes with the stdlib_chars dataset, the other models "
                     f"with the others; got {config.model.name!r} on {config.dataset!r}.")
  for key in POSITIVE + NON_NEGATIVE:
    check_range(key, _get(config, key), 1 if key in POSITIVE else 0, integer=True)
  for key in ("model.hidden", "model.stage_features"):
    for width in _get(config, key):
      check_range(key, width, 1, integer=True)
  if config.model.width % config.model.num_heads:
    raise ValueError(f"model.width ({config.model.width}) must be divisible by "
                     f"model.num_heads ({config.model.num_heads}).")
  check_range("hessian.tol", config.hessian.tol, 0.0, low_open=True)
  check_range("divergence_threshold", config.divergence_threshold, 0.0, low_open=True,
              allow_inf=True)
  check_bool("progress_bar", config.progress_bar)
  check_bool("sam.enabled", config.sam.enabled)
  # Built once with the SAM wrapper on, so its keys are checked even when it is off.
  optimizers_lib.create_optimizer(
      config.optimizer, ml_collections.ConfigDict({**config.sam.to_dict(), "enabled": True}))
  available = jax.device_count()
  devices = config.num_devices or available
  if devices > available:
    raise ValueError(
        f"num_devices={devices} but only {available} {jax.devices()[0].platform} "
        f"device(s) are visible; on CPU run with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} (experiments.train "
        "sets this itself when started from the command line).")
  if config.batch_size % devices:
    raise ValueError(f"batch_size must be divisible by the {devices} devices, got "
                     f"{config.batch_size}.")
  if config.get("mesh") is not None:
    check_range("mesh.fsdp", config.mesh.fsdp, 1, integer=True)
    if devices % config.mesh.fsdp:
      raise ValueError(f"mesh.fsdp must divide the {devices} devices (the others are on "
                       f"the data axis), got {config.mesh.fsdp}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` for a bad config, before anything is built or compiled."""
  try:
    _check(config)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None
