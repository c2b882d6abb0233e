"""Name -> optimizer factory registry, driven by the ``optimizer`` and ``sam`` config blocks.

Each registered factory is a function whose keyword arguments ARE its config keys (with
their defaults); ``default_config(name)`` turns that signature into the config block, and
``create_optimizer`` refuses keys the chosen optimizer does not take. Arguments the runner
knows and the user should not set (``batches_per_epoch``) are injected by
``create_optimizer``; arguments that take code (``mask``) keep the factory's default.

Baselines come from optax (``sgd``, ``adam``, ``adamw``, ``lamb``, ``momo``); the methods
are ``optaxplus``'s public factories (the preconditioned Polyak steps ``psps`` and
``sania`` among them), registered as they are (the exploration family with
a default learning rate, which the library leaves to the user). Every hyperparameter is
checked when the optimizer is built, the optax baselines' here with the library's checker:
a bad value is a ``TypeError``/``ValueError`` naming the config key (``optimizer.<key>``,
``sam.<key>``) and its valid range. ``sps_naive_momentum`` is the unstable baseline of the
MomSPS paper, SPS_max fed into heavy ball WITHOUT the ``(1 - momentum)`` factor; it is NOT
MomSPS.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

import optaxplus
from optaxplus._checks import check_bool, check_range

_REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {}
# Keys filled in by the runner, never by a config.
INJECTED = ("batches_per_epoch",)
# Arguments that take code, not numbers: a config cannot hold them.
CODE_ARGUMENTS = ("mask",)
POLYAK = ("sps", "decsps", "adasps", "momsps", "momsps_smooth", "momdecsps", "momadasps",
          "psps", "sania", "sps_naive_momentum", "momo")


def register(fn, name: str | None = None):
  _REGISTRY[name or fn.__name__] = fn
  return fn


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def _lookup(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(names())}")
  return _REGISTRY[name]


def hyperparameters(name: str) -> dict:
  """The config keys of optimizer ``name`` and their defaults."""
  sig = inspect.signature(_lookup(name))
  return {k: p.default for k, p in sig.parameters.items()
          if k not in INJECTED + CODE_ARGUMENTS}


def default_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """The ``optimizer`` config block for ``name`` at its defaults, with ``overrides``."""
  block = {"name": name, **hyperparameters(name)}
  unknown = set(overrides) - set(block)
  if unknown:
    raise ValueError(f"optimizer {name!r} has no hyperparameter(s) {sorted(unknown)}; "
                     f"valid: {', '.join(sorted(hyperparameters(name)))}")
  block.update(overrides)
  return ml_collections.ConfigDict(block)


def _decay_mask(params):
  """Weight decay on matrices and kernels only, not on biases or normalisation scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _with_decay(weight_decay: float, tx):
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay, _decay_mask), tx)
  return tx


# --- optax baselines ---------------------------------------------------------------------
def _check_fraction(name: str, value) -> None:
  """A decay or momentum coefficient: in [0, 1)."""
  check_range(name, value, 0.0, 1.0, high_open=True)


def _check_nonnegative(name: str, value) -> None:
  check_range(name, value, 0.0)


@register
def sgd(learning_rate: float = 0.1, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0):
  """SGD with heavy-ball momentum (``momentum=0`` is plain SGD), coupled weight decay."""
  _check_fraction("momentum", momentum)
  check_bool("nesterov", nesterov)
  _check_nonnegative("weight_decay", weight_decay)
  return _with_decay(weight_decay,
                     optax.sgd(learning_rate, momentum or None, nesterov=nesterov))


def _check_adam(b1, b2, eps) -> None:
  _check_fraction("b1", b1)
  _check_fraction("b2", b2)
  _check_nonnegative("eps", eps)


@register
def adam(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
  _check_adam(b1, b2, eps)
  return optax.adam(learning_rate, b1, b2, eps)


@register
def adamw(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-4):
  _check_adam(b1, b2, eps)
  _check_nonnegative("weight_decay", weight_decay)
  return optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=_decay_mask)


@register
def lamb(learning_rate: float = 1e-2, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
         weight_decay: float = 1e-4, clip_norm: float = 1.0):
  """``optax.lamb`` after global-norm clipping (as ALTO clips; ``clip_norm=0``: none)."""
  _check_adam(b1, b2, eps)
  _check_nonnegative("weight_decay", weight_decay)
  _check_nonnegative("clip_norm", clip_norm)
  tx = optax.lamb(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=_decay_mask)
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if clip_norm else tx


@register
def momo(learning_rate: float = 1.0, beta: float = 0.9, lower_bound: float = 0.0,
         weight_decay: float = 0.0):
  """``optax.contrib.momo`` (Schaipp et al., 2024): model-based momentum with a Polyak cap."""
  _check_fraction("beta", beta)
  check_range("lower_bound", lower_bound)
  _check_nonnegative("weight_decay", weight_decay)
  return optax.contrib.momo(learning_rate, beta, lower_bound, weight_decay)


# --- optaxplus.polyak ---------------------------------------------------------------------
# The library's factories themselves: their signatures (and defaults) are the config keys.
for _polyak_factory in (optaxplus.sps, optaxplus.decsps, optaxplus.adasps, optaxplus.momsps,
                        optaxplus.momsps_smooth, optaxplus.momdecsps, optaxplus.momadasps,
                        optaxplus.psps, optaxplus.sania):
  register(_polyak_factory)


@register
def sps_naive_momentum(c: float = 0.5, max_learning_rate: float = 1.0,
                       momentum: float = 0.9, f_min: float = 0.0):
  """NOT MomSPS: SPS_max steps fed into heavy ball without the ``(1 - momentum)`` factor.

  ``u_t = -gamma_t g_t + momentum * u_{t-1}`` with ``gamma_t`` the plain SPS_max step; the
  MomSPS paper shows this naive combination is unstable.
  """
  _check_fraction("momentum", momentum)
  return optax.chain(optaxplus.sps(c=c, max_learning_rate=max_learning_rate, f_min=f_min),
                     optax.trace(decay=momentum))


# --- optaxplus.exploration ------------------------------------------------------------------
# The library's factories with a default learning rate (and heavy-ball momentum for E-SGD,
# which the library leaves off); every other key and default is the library's.
register(functools.partial(optaxplus.esgd, learning_rate=0.1, momentum=0.9), "esgd")
register(functools.partial(optaxplus.eadam, learning_rate=1e-3), "eadam")
register(functools.partial(optaxplus.alto, learning_rate=1e-2), "alto")


SCHEDULES = ("constant", "cosine")
WARMUP_FRACTION = 0.05  # of the run's steps, the linear warm-up of the 'cosine' schedule


def learning_rate_schedule(learning_rate: float, schedule: str, total_steps: int):
  """The learning rate of step ``t`` (0-based) as an optax schedule.

  ``'constant'``: ``learning_rate``. ``'cosine'``: linear warm-up from 0 over the first
  ``WARMUP_FRACTION`` of the ``total_steps`` (at least one step), then cosine decay to 0
  at ``total_steps``.
  """
  if schedule == "constant":
    return optax.constant_schedule(learning_rate)
  if schedule == "cosine":
    total = max(total_steps, 2)
    warmup = min(max(1, round(WARMUP_FRACTION * total)), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total)
  raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}.")


class ScheduleLogState(NamedTuple):
  """The step count and the learning rate the schedule gave the last step."""
  count: jax.Array  # shape=(), dtype=int32
  step_size: jax.Array  # shape=(), dtype=float32


def log_schedule(schedule) -> optax.GradientTransformation:
  """Leaves the updates unchanged and keeps ``schedule(count)`` as the state's ``step_size``.

  The training layer reports a state's one scalar ``step_size`` field, so a scheduled
  optimizer's records show the learning rate each step used (warm-up included).
  """
  def init_fn(params):
    del params
    return ScheduleLogState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    return updates, ScheduleLogState(state.count + 1,
                                     jnp.asarray(schedule(state.count), jnp.float32))

  return optax.GradientTransformation(init_fn, update_fn)


def parse_lam(lam: str):
  """The SAM ``lam`` config string: a float, or one of the schedules ``'1/t'``, ``'1-1/t'``."""
  if lam in ("1/t", "1-1/t"):
    return lam
  try:
    return float(lam)
  except ValueError:
    raise ValueError(f"sam.lam must be a number in [0.0, 1.0], '1/t' or '1-1/t', got "
                     f"{lam!r}.") from None


def _qualified(block: str, keys, error: Exception) -> Exception:
  """A factory's ``'rho must be ...'`` as ``'sam.rho must be ...'`` (same exception type)."""
  message = str(error)
  if message.split(" ", 1)[0] in keys:
    return type(error)(f"{block}.{message}")
  return type(error)(f"{block}: {message}")


def create_optimizer(optimizer_config, sam_config=None, *, batches_per_epoch: int = 1,
                     total_steps: int = 1, schedule: str = "constant"
                     ) -> optax.GradientTransformation:
  """The optimizer of a config's ``optimizer`` block, wrapped in Unified SAM if enabled.

  Args:
    optimizer_config: ``name`` plus any of ``hyperparameters(name)``.
    sam_config: optional block with ``enabled``, ``rho``, ``lam`` (string, see
      ``parse_lam``), ``adaptive`` and ``every_k``.
    batches_per_epoch: injected into optimizers that take it (``momsps_smooth``).
    total_steps: length of the run, for the ``cosine`` schedule.
    schedule: ``'constant'`` or ``'cosine'`` (warm-up, then cosine decay; see
      :func:`learning_rate_schedule`), applied to ``learning_rate`` where there is one.

  Raises:
    ValueError: unknown optimizer, a key the optimizer does not take (the message lists
      the valid ones), or a hyperparameter out of its range (the message names the
      config key, e.g. ``optimizer.learning_rate``, and the range).
    TypeError: a hyperparameter of the wrong type (named the same way).
  """
  cfg = dict(optimizer_config)
  name = cfg.pop("name")
  fn = _lookup(name)
  valid = hyperparameters(name)
  unknown = sorted(set(cfg) - set(valid))
  if unknown:
    raise ValueError(f"optimizer {name!r} does not take {unknown}; "
                     f"valid: {', '.join(sorted(valid))} (to switch optimizer from the "
                     f"command line use --config <config file>:{name})")
  lr_schedule = None
  if "learning_rate" in cfg:
    # The runner's rule for every optimizer (some factories accept 0: a frozen model).
    check_range("optimizer.learning_rate", cfg["learning_rate"], 0.0, low_open=True)
    if schedule != "constant":
      lr_schedule = learning_rate_schedule(cfg["learning_rate"], schedule, total_steps)
      cfg["learning_rate"] = lr_schedule
  if "batches_per_epoch" in inspect.signature(fn).parameters:
    cfg["batches_per_epoch"] = batches_per_epoch
  try:
    tx = fn(**cfg)
  except (TypeError, ValueError) as e:
    raise _qualified("optimizer", valid, e) from None
  if lr_schedule is not None and name not in POLYAK:  # Polyak methods log their own step
    tx = optax.chain(tx, log_schedule(lr_schedule))
  if sam_config is not None and sam_config.enabled:
    try:
      tx = optaxplus.unified_sam(tx, rho=sam_config.rho, lam=parse_lam(sam_config.lam),
                                 adaptive=sam_config.adaptive, every_k=sam_config.every_k)
    except (TypeError, ValueError) as e:
      raise _qualified("sam", sam_config, e) from None
  return tx
