"""Train one run from a config: ``python -m experiments.train --config configs/<name>.py``.

Overrides follow Flax: ``--config.optimizer.learning_rate=0.3 --config.num_steps=50``;
``--config configs/default.py:adam`` picks another optimizer at its defaults. The config is
checked before anything is built (a bad value exits with status 2 and one line naming the
key and its valid range). Outputs in ``--workdir`` (default: a folder named after the
config and its hash, see :mod:`experiments.workdir`): ``config.json`` (the run's config and
hash), ``metrics.jsonl`` (train records averaged over ``log_every`` steps, validation and
test records every ``eval_every`` steps), ``summary.json`` (final metrics and the top
Hessian eigenvalue) and orbax checkpoints. The same command again resumes a killed or
interrupted run from its last checkpoint, or reports a finished one; another config in
the same workdir is refused (``--overwrite`` replaces the old run).

A run has diverged when a logged training loss (the mean over ``log_every`` steps) is not
finite or exceeds ``config.divergence_threshold``; training stops there.

The train step is :func:`optaxplus.training.make_train_step` under ``jax.jit``; with
``num_devices > 1`` the batch is sharded over a 1-D ``data`` mesh (global view) and the
state replicated.
"""

from __future__ import annotations

import functools
import json
import logging as std_logging
import math
import os
import sys
import time
import types
from typing import Any

from absl import app, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import cli
from experiments import data as data_lib
from experiments import hessian as hessian_lib
from experiments import models as models_lib
from experiments import optimizers as optimizers_lib
from experiments import workdir as workdir_lib
from optaxplus import checkpoint as checkpoint_lib
from optaxplus import training
from optaxplus._checks import check_bool, check_range

TRAIN_KEYS = ("loss", "accuracy", "grad_norm", "step_size")
EVAL_SPLITS = ("validation", "test")


class ConfigError(ValueError):
  """A config value out of its range; the one-line message names the key."""


class Interrupted(Exception):
  """SIGINT/SIGTERM stopped training at ``step`` (after a checkpoint, if one was due)."""

  def __init__(self, step: int):
    super().__init__(f"interrupted at step {step}; run the same command again to resume")
    self.step = step


# --- model, loss, evaluation ---------------------------------------------------------------
def _losses(logits, labels):
  """Per-example (per-token) cross-entropy and correctness."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return loss, (jnp.argmax(logits, -1) == labels)


def make_loss_fn(model):
  """``loss_fn(params, model_state, batch) -> (loss, (model_state, {'accuracy'}))``.

  Training mode: BatchNorm uses batch statistics and returns its updated running averages
  (``model_state`` is ``{}`` for models without BatchNorm).
  """
  def loss_fn(params, model_state, batch):
    variables = {"params": params, **model_state}
    if model_state:
      logits, new_state = model.apply(variables, batch["x"], train=True,
                                      mutable=list(model_state))
    else:
      logits, new_state = model.apply(variables, batch["x"], train=True), model_state
    loss, correct = _losses(logits, batch["y"])
    return loss.mean(), (dict(new_state), {"accuracy": correct.mean()})
  return loss_fn


def make_eval_loss(model):
  """``loss(params, model_state, batch)``: mean loss with BatchNorm in eval mode."""
  def loss(params, model_state, batch):
    logits = model.apply({"params": params, **model_state}, batch["x"], train=False)
    return _losses(logits, batch["y"])[0].mean()
  return loss


def _eval_sums(model, params, model_state, batch):
  """Summed loss, correct predictions and count over the real (weight 1) examples."""
  logits = model.apply({"params": params, **model_state}, batch["x"], train=False)
  loss, correct = _losses(logits, batch["y"])
  weight = jnp.broadcast_to(
      batch["weight"].reshape(batch["weight"].shape + (1,) * (loss.ndim - 1)), loss.shape)
  return (loss * weight).sum(), (correct * weight).sum(), weight.sum()


def evaluate(eval_fn, params, model_state, batches) -> dict[str, float]:
  """Mean loss and accuracy over ``batches`` (and perplexity = exp(loss))."""
  total = np.zeros(3)
  for batch in batches:
    total += np.asarray(jax.device_get(eval_fn(params, model_state, batch)), np.float64)
  loss = total[0] / total[2]
  return {"loss": loss, "accuracy": total[1] / total[2],
          "perplexity": math.exp(loss) if loss < 700 else math.inf}


# --- the config --------------------------------------------------------------------------
def _checked(config: ml_collections.ConfigDict) -> None:
  """Every key with a range, named as on the command line; raises TypeError/ValueError."""
  if config.dataset not in data_lib.DATASETS:
    raise ValueError(f"dataset must be one of {', '.join(data_lib.DATASETS)}, got "
                     f"{config.dataset!r}.")
  if config.model.name not in models_lib.MODELS:
    raise ValueError(f"model.name must be one of {', '.join(models_lib.MODELS)}, got "
                     f"{config.model.name!r}.")
  if (config.dataset == "stdlib_chars") != (config.model.name == "transformer"):
    raise ValueError("the transformer goes with the stdlib_chars dataset, the mlp and cnn "
                     f"with digits; got {config.model.name!r} on {config.dataset!r}.")
  positive = ("batch_size", "num_steps", "log_every", "eval_every", "eval_batch_size",
              "train_eval_examples", "context_length", "hessian.batch_size",
              "model.width", "model.depth", "model.num_heads")
  non_negative = ("seed", "data_seed", "num_devices", "checkpoint_every",
                  "stop_after_steps", "max_chars", "hessian.num_iterations")
  for key in positive + non_negative:
    check_range(key, _get(config, key), 1 if key in positive else 0, integer=True)
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
  if config.schedule not in optimizers_lib.SCHEDULES:
    raise ValueError(f"schedule must be one of {', '.join(optimizers_lib.SCHEDULES)}, got "
                     f"{config.schedule!r}.")
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


def _get(config, dotted: str):
  for key in dotted.split("."):
    config = config[key]
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` for a bad config, before anything is built or compiled."""
  try:
    _checked(config)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None


# --- builders ----------------------------------------------------------------------------
def create_mesh(num_devices: int) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (0: all of them)."""
  devices = jax.devices()[:num_devices or jax.device_count()]
  return jax.make_mesh((len(devices),), ("data",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


@functools.lru_cache(maxsize=4)
def _model_functions(model_json: str, context_length: int,
                     num_classes: int) -> types.SimpleNamespace:
  """The model and its jitted init/evaluation, shared by every run of the same model.

  Reusing the same objects lets ``jax.jit`` reuse compiled code across the runs of a
  sweep (and the runs of the tests) instead of compiling it again.
  """
  config = ml_collections.ConfigDict({
      "model": json.loads(model_json), "context_length": context_length})
  model = models_lib.create_model(config, num_classes)
  return types.SimpleNamespace(
      model=model, init=jax.jit(functools.partial(model.init, train=False)),
      eval_fn=jax.jit(functools.partial(_eval_sums, model)),
      eval_loss=make_eval_loss(model), loss_fn=make_loss_fn(model))


@functools.lru_cache(maxsize=8)
def _train_functions(model_key: tuple, optimizer_json: str, sam_json: str, schedule: str,
                     batches_per_epoch: int, total_steps: int) -> types.SimpleNamespace:
  """The optimizer and the jitted train step, shared by runs that differ only in seed."""
  tx = optimizers_lib.create_optimizer(
      ml_collections.ConfigDict(json.loads(optimizer_json)),
      ml_collections.ConfigDict(json.loads(sam_json)),
      batches_per_epoch=batches_per_epoch, total_steps=total_steps, schedule=schedule)
  step = training.make_train_step(_model_functions(*model_key).loss_fn, has_aux=True,
                                  has_state=True)
  return types.SimpleNamespace(tx=tx, train_step=jax.jit(step, donate_argnums=0))


def create_train_state(config, dataset: data_lib.Dataset, mesh, batches):
  """The initial replicated ``TrainState`` and the run's compiled functions."""
  model_key = (config.model.to_json(), config.context_length, dataset.num_classes)
  model_fns = _model_functions(*model_key)
  train_fns = _train_functions(
      model_key, config.optimizer.to_json(), config.sam.to_json(), config.schedule,
      # Only in the key where they change the optimizer (else: needless recompiles).
      batches.batches_per_pass if config.optimizer.name == "momsps_smooth" else 1,
      config.num_steps if config.schedule == "cosine" else 1)
  variables = model_fns.init(jax.random.key(config.seed), batches.batch(0)["x"][:1])
  params = variables.pop("params")
  state = training.TrainState.create(apply_fn=model_fns.model.apply, params=params,
                                     tx=train_fns.tx, model_state=dict(variables))
  # The step donates the state, and donation needs one buffer per leaf: an optimizer
  # state may hold one array in several fields (e.g. equal initial scalars).
  state = jax.tree.map(jnp.copy, state)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  fns = types.SimpleNamespace(train_step=train_fns.train_step, eval_fn=model_fns.eval_fn,
                              eval_loss=model_fns.eval_loss)
  return jax.device_put(state, replicated), fns


# --- checkpoints and records ---------------------------------------------------------------
def _checkpoint(state, elapsed: float, window: np.ndarray, count: int) -> dict[str, Any]:
  """The train state, the wall time so far, and the per-step train metrics of the log
  window in progress (``count`` rows of ``window``), so a resumed run logs exactly the
  records an uninterrupted run logs."""
  return {"state": state, "elapsed": jnp.asarray(elapsed, jnp.float32),
          "window": jnp.asarray(window), "count": jnp.asarray(count, jnp.int32)}


def read_metrics(path: str, up_to_step: int) -> list[dict]:
  """Records of ``metrics.jsonl`` with ``step <= up_to_step``.

  A SIGKILL can cut the last line short; records up to a checkpoint were flushed before
  it was saved, so whatever cannot be parsed lies past it and is dropped.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return [r for r in records if r["step"] <= up_to_step]


def _learning_rate(config, step: int):
  lr = config.optimizer.get("learning_rate")
  if lr is None:
    return None
  if config.schedule == "cosine":
    return float(optax.cosine_decay_schedule(lr, max(config.num_steps, 1))(step))
  return float(lr)


def _progress_bar(config, initial: int):
  from tqdm import auto as tqdm  # pylint: disable=import-outside-toplevel
  enabled = config.progress_bar and sys.stderr.isatty()
  return tqdm.tqdm(total=config.num_steps, initial=initial, disable=not enabled,
                   dynamic_ncols=True, leave=False)


class _Run:
  """The mutable part of a run: state, log window, metrics file, checkpoint schedule."""

  def __init__(self, config, workdir: str, state, keys: tuple[str, ...]):
    self.config, self.state, self.keys = config, state, keys
    self.log_file = None  # metrics.jsonl, opened by the loop
    self.directory = os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINT_DIR)
    self.window: list[dict] = []  # per-step metrics since the last train record
    self.last_record: dict | None = None
    self.elapsed, self.t0, self.saved = 0.0, time.perf_counter(), 0

  def restore(self) -> int:
    """Restores the latest checkpoint, if any; returns the step to start from."""
    template = _checkpoint(self.state, 0.0, self._rows(), 0)
    try:
      restored = checkpoint_lib.restore_checkpoint(self.directory, template)
    except FileNotFoundError:
      return 0
    self.state, self.elapsed = restored["state"], float(restored["elapsed"])
    rows = np.asarray(restored["window"])[:int(restored["count"])]
    self.window = [dict(zip(self.keys, row)) for row in rows]
    self.saved = int(self.state.step)
    return self.saved

  def _matrix(self) -> np.ndarray:
    """The log window, one float32 row of ``keys`` per step."""
    host = jax.device_get(self.window)
    return np.array([[m[k] for k in self.keys] for m in host], np.float32).reshape(
        len(host), len(self.keys))

  def _rows(self) -> np.ndarray:
    """The log window zero-padded to ``(log_every, len(keys))``: fixed checkpoint shape."""
    rows = np.zeros((self.config.log_every, len(self.keys)), np.float32)
    matrix = self._matrix()
    rows[:len(matrix)] = matrix
    return rows

  def time(self) -> float:
    return self.elapsed + time.perf_counter() - self.t0

  def step(self, train_step, batch) -> None:
    self.state, metrics = train_step(self.state, batch)
    flat = {**metrics, **metrics["aux"]}
    self.window.append({k: flat[k] for k in self.keys})

  def log_train(self, step: int) -> dict:
    means = self._matrix().astype(np.float64).mean(0)
    self.window = []
    record = {"step": step, "split": "train", **dict(zip(self.keys, map(float, means)))}
    if "step_size" not in record and (lr := _learning_rate(self.config, step - 1)):
      record["step_size"] = lr
    record["time"] = self.time()
    self.write(record)
    self.last_record = record
    return record

  def write(self, record: dict) -> None:
    self.log_file.write(workdir_lib.dumps(record) + "\n")

  def save(self) -> None:
    """A checkpoint at the current step (records so far flushed first)."""
    step = int(self.state.step)
    self.log_file.flush()
    checkpoint_lib.save_checkpoint(
        self.directory, _checkpoint(self.state, self.time(), self._rows(), len(self.window)),
        step=step, max_to_keep=1)
    self.saved = step

  def stop(self) -> None:
    """Saves a checkpoint if one is due (checkpointing on, progress since the last)."""
    if self.config.checkpoint_every and int(self.state.step) > self.saved:
      self.save()
    raise Interrupted(int(self.state.step))


def _diverged(record: dict, threshold: float) -> bool:
  return not math.isfinite(record["loss"]) or record["loss"] > threshold


# --- the run -----------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: data_lib.Dataset | None = None, *, overwrite: bool = False,
                       stop=None) -> dict[str, Any] | None:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoint) and evaluates it.

  Args:
    config: a train config (see ``configs/default.py``).
    workdir: output folder. A run of the same config there is resumed (or, finished,
      its summary returned without training); a run of another config is refused.
    dataset: the loaded dataset, to share it between the runs of a sweep.
    overwrite: replace a run of another config found in ``workdir``.
    stop: a ``threading.Event``; once set, training stops after the current step (see
      :class:`Interrupted`).

  Returns:
    The summary written to ``summary.json``, or ``None`` when the run stopped at
    ``config.stop_after_steps`` (as if killed) before finishing.

  Raises:
    ConfigError: a bad config value, before anything is built.
    workdir_lib.RunMismatchError: ``workdir`` holds a run of another config.
    Interrupted: ``stop`` was set (a checkpoint was written first if one was due).
  """
  validate(config)
  if workdir_lib.claim(workdir, config, overwrite=overwrite) == "finished":
    logging.info("%s holds this config's finished run: nothing to train", workdir)
    return workdir_lib.read_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  logging.info("process %d/%d, devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  dataset = dataset or data_lib.load(config)
  if config.batch_size > dataset.num_train:
    raise ConfigError(f"batch_size must be at most the {dataset.num_train} training "
                      f"examples of {dataset.name}, got {config.batch_size}.")
  mesh = create_mesh(config.num_devices)
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batches = data_lib.BatchIterator(dataset, config.batch_size, config.seed,
                                   config.context_length)
  state, fns = create_train_state(config, dataset, mesh, batches)
  shapes = jax.eval_shape(fns.train_step, state, batches.batch(0))[1]
  keys = tuple(k for k in TRAIN_KEYS if k in {**shapes, **shapes["aux"]})
  eval_batches = {split: data_lib.split_batches(dataset, split, config.eval_batch_size)
                  for split in EVAL_SPLITS}

  def evaluate_splits(run: _Run, step: int) -> dict[str, dict]:
    results = {}
    for split in EVAL_SPLITS:
      results[split] = evaluate(fns.eval_fn, run.state.params, run.state.model_state,
                                eval_batches[split])
      run.write({"step": step, "split": split, **results[split]})
    return results

  run = _Run(config, workdir, state, keys)
  start = run.restore()
  if start:
    logging.info("resumed %s at step %d", workdir, start)
  metrics_path = os.path.join(workdir, workdir_lib.METRICS_FILE)
  kept = read_metrics(metrics_path, start)  # records past the checkpoint are redone
  with open(metrics_path, "w", encoding="utf-8") as run.log_file:
    for record in kept:
      run.write(record)
    diverged_at = None
    with _progress_bar(config, start) as bar:
      for step in range(start, config.num_steps):
        if stop is not None and stop.is_set():
          run.stop()
        if config.stop_after_steps and step >= config.stop_after_steps:
          return None  # as if killed: no final checkpoint, no summary
        run.step(fns.train_step, jax.device_put(batches.batch(step), sharded))
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
          record = run.log_train(done)
          bar.set_postfix(loss=f"{record['loss']:.4f}")
          if _diverged(record, config.divergence_threshold):
            diverged_at = done
            logging.warning("train loss %s at step %d: diverged, stopping", record["loss"],
                            done)
            break
        if done % config.eval_every == 0 and done != config.num_steps:
          _log_progress(config, done, run.last_record, evaluate_splits(run, done))
        if config.checkpoint_every and done % config.checkpoint_every == 0:
          run.save()
        bar.update(1)
    if stop is not None and stop.is_set() and diverged_at is None:
      run.stop()
    train_time = run.time()
    final_step = int(run.state.step)
    final = evaluate_splits(run, final_step)
  _log_progress(config, final_step, None, final)
  state = run.state
  train = evaluate(fns.eval_fn, state.params, state.model_state, data_lib.batched(
      **_xy(data_lib.fixed_train_examples(dataset, config.train_eval_examples,
                                          config.context_length)),
      batch_size=config.eval_batch_size))
  eigenvalue, iterations, probe = None, 0, "off"
  if diverged_at is not None:
    probe = "skipped: diverged"
  elif config.hessian.num_iterations:
    batch = data_lib.fixed_train_examples(dataset, config.hessian.batch_size,
                                          config.context_length)
    eigenvalue, iterations = hessian_lib.top_hessian_eigenvalue(
        fns.eval_loss, state.params, state.model_state, batch,
        num_iterations=config.hessian.num_iterations, tol=config.hessian.tol,
        seed=config.seed)
    probe = "on"
  summary = {
      "steps": final_step, "diverged": diverged_at is not None,
      "diverged_at_step": diverged_at,
      **{f"{split}_{k}": v for split in EVAL_SPLITS for k, v in final[split].items()},
      "train_loss": train["loss"], "train_accuracy": train["accuracy"],
      "hessian_probe": probe, "hessian_top_eigenvalue": eigenvalue,
      "hessian_iterations": iterations,
      "train_time_s": train_time, "devices": mesh.devices.size,
      "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
      "data_fingerprint": dataset.fingerprint, "num_train": dataset.num_train,
      "num_validation": len(dataset.validation_x), "num_test": len(dataset.test_x),
      "config_hash": workdir_lib.config_hash(config),
  }
  workdir_lib.write_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE), summary)
  return workdir_lib.jsonable(summary)


def _xy(batch: dict) -> dict:
  return {"x": batch["x"], "y": batch["y"]}


def _log_progress(config, step: int, record: dict | None, results: dict) -> None:
  key = "perplexity" if config.dataset == "stdlib_chars" else "accuracy"
  train = f"train loss {record['loss']:.4f}, " if record else ""
  logging.info("step %d/%d: %svalidation %s %.4f", step, config.num_steps, train, key,
               results["validation"][key])


# --- command line ------------------------------------------------------------------------
def quiet_libraries() -> None:
  """Only this package's INFO lines in the absl log (libraries' warnings still show)."""
  here = os.path.dirname(os.path.abspath(__file__))
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or record.pathname.startswith(here))


def request_cpu_devices(num_devices: int) -> None:
  """Ask for ``num_devices`` host devices; must run before JAX initialises its backends."""
  if num_devices > 1:
    try:
      jax.config.update("jax_num_cpu_devices", num_devices)
    except RuntimeError:  # backends already initialised; validate explains what to do
      pass


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = cli.FLAGS.config
  quiet_libraries()
  request_cpu_devices(config.num_devices)
  with cli.stop_on_signals() as stop:
    try:
      validate(config)
      workdir = cli.FLAGS.workdir or workdir_lib.default_train_workdir(
          cli.FLAGS["config"].config_filename, config)
      summary = train_and_evaluate(config, workdir, overwrite=cli.FLAGS.overwrite,
                                   stop=stop)
    except (ConfigError, workdir_lib.RunMismatchError) as e:
      cli.exit_with_error(e)
    except Interrupted as e:
      cli.exit_interrupted(str(e))
  print(workdir_lib.dumps(summary, indent=1))
  print(f"outputs in {workdir}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  cli.define_flags("Path to a config file, configs/<name>.py[:optimizer].",
                   "Output folder (default: <tmp>/optaxplus/train/<config name>-<hash>, "
                   "one per distinct config).")
  flags.adopt_module_key_flags(cli)  # --help lists them
  cli.run(main)
