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

The train step is :func:`optaxplus.training.make_train_step` under
:func:`optaxplus.parallel.data_parallel` (``jax.jit``, global view) on a ``(data, fsdp)``
mesh of ``num_devices`` devices: the batch is split over both axes; the state is
replicated, or with ``mesh.fsdp > 1`` (the devices on the ``fsdp`` axis; 1 when the
config has no ``mesh`` block) split over ``fsdp`` by
:func:`optaxplus.parallel.fsdp_sharding` (FSDP), the other devices on ``data``.
"""

from __future__ import annotations

import functools
import json
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

from experiments import cli
from experiments import data as data_lib
from experiments import evaluation
from experiments import hessian as hessian_lib
from experiments import models as models_lib
from experiments import optimizers as optimizers_lib
from experiments import workdir as workdir_lib
from experiments.checks import ConfigError, validate
from optaxplus import checkpoint as checkpoint_lib
from optaxplus import parallel
from optaxplus import training

TRAIN_KEYS = ("loss", "accuracy", "grad_norm", "step_size")
BATCH_AXES = ("data", "fsdp")
EVAL_SPLITS = ("validation", "test")


class Interrupted(Exception):
  """SIGINT/SIGTERM stopped training at ``step`` (after a checkpoint, if one was due)."""

  def __init__(self, step: int):
    super().__init__(f"interrupted at step {step}; run the same command again to resume")
    self.step = step


# --- builders ----------------------------------------------------------------------------
def fsdp_size(config) -> int:
  """The devices on the ``fsdp`` axis: ``config.mesh.fsdp``, 1 without a ``mesh`` block."""
  mesh = config.get("mesh")
  return 1 if mesh is None else mesh.fsdp


def create_mesh(num_devices: int, fsdp: int = 1) -> jax.sharding.Mesh:
  """A ``(data, fsdp)`` mesh over the first ``num_devices`` devices (0: all of them).

  ``fsdp`` devices on the ``fsdp`` axis, the others on ``data``; ``Auto`` axes, so that
  XLA gathers FSDP-sharded weights where the model uses them.
  """
  devices = jax.devices()[:num_devices or jax.device_count()]
  return jax.make_mesh((len(devices) // fsdp, fsdp), BATCH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


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
      eval_fn=evaluation.make_eval_fn(model), eval_loss=evaluation.make_eval_loss(model),
      loss_fn=evaluation.make_loss_fn(model))


@functools.lru_cache(maxsize=8)
def _train_functions(model_key: tuple, optimizer_json: str, sam_json: str, schedule: str,
                     batches_per_epoch: int, total_steps: int,
                     mesh: jax.sharding.Mesh) -> types.SimpleNamespace:
  """The optimizer and the jitted train step, shared by runs that differ only in seed."""
  tx = optimizers_lib.create_optimizer(
      ml_collections.ConfigDict(json.loads(optimizer_json)),
      ml_collections.ConfigDict(json.loads(sam_json)),
      batches_per_epoch=batches_per_epoch, total_steps=total_steps, schedule=schedule)
  step = training.make_train_step(_model_functions(*model_key).loss_fn, has_aux=True,
                                  has_state=True)
  # The state keeps the shardings it is created with (replicated or FSDP), donated.
  return types.SimpleNamespace(tx=tx, step=step, train_step=parallel.data_parallel(
      step, mesh, axis_name=BATCH_AXES, donate_state=True))


def create_train_state(config, dataset: data_lib.Dataset, mesh, batches):
  """The initial ``TrainState`` (replicated, or FSDP-sharded with ``mesh.fsdp > 1``) and
  the run's compiled functions."""
  model_key = (config.model.to_json(), config.context_length, dataset.num_classes)
  model_fns = _model_functions(*model_key)
  train_fns = _train_functions(
      model_key, config.optimizer.to_json(), config.sam.to_json(), config.schedule,
      # Only in the key where they change the optimizer (else: needless recompiles).
      batches.batches_per_pass if config.optimizer.name == "momsps_smooth" else 1,
      config.num_steps if config.schedule != "constant" else 1, mesh)
  variables = model_fns.init(jax.random.key(config.seed), batches.batch(0)["x"][:1])
  params = variables.pop("params")
  state = training.TrainState.create(apply_fn=model_fns.model.apply, params=params,
                                     tx=train_fns.tx, model_state=dict(variables))
  # The step donates the state, and donation needs one buffer per leaf: an optimizer
  # state may hold one array in several fields (e.g. equal initial scalars).
  state = jax.tree.map(jnp.copy, state)
  sharding = (parallel.fsdp_sharding(state, mesh) if mesh.shape["fsdp"] > 1 else
              jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  fns = types.SimpleNamespace(train_step=train_fns.train_step, step=train_fns.step,
                              eval_fn=model_fns.eval_fn, eval_loss=model_fns.eval_loss)
  return jax.device_put(state, sharding), fns


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
  return float(optimizers_lib.learning_rate_schedule(lr, config.schedule,
                                                     config.num_steps)(step))


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

  def step(self, train_step, batch, sam_step: bool | None) -> None:
    self.state, metrics = train_step(self.state, batch, sam_step=sam_step)
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


def sam_step_at(config, step: int) -> bool | None:
  """Whether ``step`` is a SAM step, decided in Python so that ``every_k > 1`` compiles
  a SAM step and a plain one instead of a ``lax.cond`` (None: no choice to make)."""
  if not config.sam.enabled or config.sam.every_k == 1:
    return None
  return step % config.sam.every_k == 0


def _diverged(record: dict, threshold: float) -> bool:
  return not math.isfinite(record["loss"]) or record["loss"] > threshold


def _log_progress(config, step: int, record: dict | None, results: dict) -> None:
  key = "perplexity" if config.dataset == "stdlib_chars" else "accuracy"
  train = f"train loss {record['loss']:.4f}, " if record else ""
  logging.info("step %d/%d: %svalidation %s %.4f", step, config.num_steps, train, key,
               results["validation"][key])


def create_run(config, dataset: data_lib.Dataset) -> types.SimpleNamespace:
  """Everything a run needs, built once: mesh, batches, state, compiled functions."""
  mesh = create_mesh(config.num_devices, fsdp_size(config))
  batches = data_lib.BatchIterator(dataset, config.batch_size, config.seed,
                                   config.context_length)
  state, fns = create_train_state(config, dataset, mesh, batches)
  metrics = jax.eval_shape(fns.step, state, batches.batch(0))[1]
  return types.SimpleNamespace(
      mesh=mesh, batches=batches, state=state, fns=fns,
      sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXES)),
      keys=tuple(k for k in TRAIN_KEYS if k in {**metrics, **metrics["aux"]}),
      eval_batches={split: data_lib.split_batches(dataset, split, config.eval_batch_size)
                    for split in EVAL_SPLITS})


def _evaluate_splits(setup, run: _Run, step: int) -> dict[str, dict]:
  """Validation and test metrics, written to the run's records."""
  results = {}
  for split in EVAL_SPLITS:
    results[split] = evaluation.evaluate(setup.fns.eval_fn, run.state.params,
                                         run.state.model_state, setup.eval_batches[split])
    run.write({"step": step, "split": split, **results[split]})
  return results


def _train(config, setup, run: _Run, start: int, stop) -> int | None:
  """The loop: steps, logs, evaluates, checkpoints. Returns the step it diverged at."""
  with _progress_bar(config, start) as bar:
    for step in range(start, config.num_steps):
      if stop is not None and stop.is_set():
        run.stop()
      if config.stop_after_steps and step >= config.stop_after_steps:
        raise _StoppedForTesting()
      run.step(setup.fns.train_step,
               jax.device_put(setup.batches.batch(step), setup.sharding),
               sam_step_at(config, step))
      done = step + 1
      if done % config.log_every == 0 or done == config.num_steps:
        record = run.log_train(done)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if _diverged(record, config.divergence_threshold):
          logging.warning("train loss %s at step %d: diverged, stopping", record["loss"],
                          done)
          return done
      if done % config.eval_every == 0 and done != config.num_steps:
        _log_progress(config, done, run.last_record, _evaluate_splits(setup, run, done))
      if config.checkpoint_every and done % config.checkpoint_every == 0:
        run.save()
      bar.update(1)
  if stop is not None and stop.is_set():
    run.stop()
  return None


class _StoppedForTesting(Exception):
  """``config.stop_after_steps`` reached: stop as if killed."""


def _probe(config, setup, state, dataset, diverged: bool) -> tuple[str, Any, int]:
  """``(status, top Hessian eigenvalue, iterations)``; status 'on', 'off' or skipped."""
  if diverged:
    return "skipped: diverged", None, 0
  if not config.hessian.num_iterations:
    return "off", None, 0
  batch = data_lib.fixed_train_examples(dataset, config.hessian.batch_size,
                                        config.context_length)
  eigenvalue, iterations = hessian_lib.top_hessian_eigenvalue(
      setup.fns.eval_loss, state.params, state.model_state, batch,
      num_iterations=config.hessian.num_iterations, tol=config.hessian.tol,
      seed=config.seed)
  return "on", eigenvalue, iterations


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
    The summary written to ``summary.json`` (strict JSON values: ``None`` for NaN), or
    ``None`` when the run stopped at ``config.stop_after_steps`` (as if killed).

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
  setup = create_run(config, dataset)
  run = _Run(config, workdir, setup.state, setup.keys)
  start = run.restore()
  if start:
    logging.info("resumed %s at step %d", workdir, start)
  metrics_path = os.path.join(workdir, workdir_lib.METRICS_FILE)
  kept = read_metrics(metrics_path, start)  # records past the checkpoint are redone
  with open(metrics_path, "w", encoding="utf-8") as run.log_file:
    for record in kept:
      run.write(record)
    try:
      diverged_at = _train(config, setup, run, start, stop)
    except _StoppedForTesting:
      return None  # no final checkpoint, no summary
    train_time, state = run.time(), run.state
    final = _evaluate_splits(setup, run, int(state.step))
  _log_progress(config, int(state.step), None, final)
  train_subset = data_lib.fixed_train_examples(dataset, config.train_eval_examples,
                                               config.context_length)
  train = evaluation.evaluate(setup.fns.eval_fn, state.params, state.model_state,
                              data_lib.batched(train_subset["x"], train_subset["y"],
                                               config.eval_batch_size))
  probe, eigenvalue, iterations = _probe(config, setup, state, dataset,
                                         diverged_at is not None)
  summary = {
      "steps": int(state.step), "diverged": diverged_at is not None,
      "diverged_at_step": diverged_at,
      **{f"{split}_{k}": v for split in EVAL_SPLITS for k, v in final[split].items()},
      "train_loss": train["loss"], "train_accuracy": train["accuracy"],
      "hessian_probe": probe, "hessian_top_eigenvalue": eigenvalue,
      "hessian_iterations": iterations,
      "train_time_s": train_time, "devices": setup.mesh.devices.size,
      "mesh": dict(setup.mesh.shape),
      "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
      "data_fingerprint": dataset.fingerprint, "num_train": dataset.num_train,
      "num_validation": len(dataset.validation_x), "num_test": len(dataset.test_x),
      "config_hash": workdir_lib.config_hash(config),
      "code_version": workdir_lib.code_version(),
  }
  workdir_lib.write_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE), summary)
  return workdir_lib.jsonable(summary)


# --- command line ------------------------------------------------------------------------
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = cli.FLAGS.config
  cli.quiet_libraries()
  cli.request_cpu_devices(config.num_devices)
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
