"""Train one run from a config: ``python -m experiments.train --config configs/<name>.py``.

Overrides follow Flax: ``--config.optimizer.learning_rate=0.3 --config.num_steps=50``;
``--config configs/default.py:adam`` picks another optimizer at its defaults. Outputs in
``--workdir``: ``config.json``, ``metrics.jsonl`` (train records averaged over
``log_every`` steps, test records every ``eval_every`` steps), ``summary.json`` (final
metrics and the top Hessian eigenvalue) and orbax checkpoints; a killed run started again
with the same ``--workdir`` resumes from its last checkpoint.

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
import tempfile
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
from optaxplus import checkpoint as checkpoint_lib
from optaxplus import training

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


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
          "perplexity": math.exp(min(loss, 700.0))}


def fixed_train_batch(dataset: data_lib.Dataset, size: int, context_length: int):
  """A fixed set of training examples (the first ``size``; LM: evenly spaced windows)."""
  size = min(size, dataset.num_train)
  if dataset.kind == "language_model":
    starts = np.linspace(0, dataset.num_train - 1, size).astype(np.int64)
    window = dataset.train_y[starts[:, None] + np.arange(context_length + 1)]
    return {"x": window[:, :-1], "y": window[:, 1:]}
  return {"x": dataset.train_x[:size], "y": dataset.train_y[:size]}


# --- devices ---------------------------------------------------------------------------
def make_mesh(num_devices: int) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (0: all of them)."""
  available = jax.devices()
  n = num_devices or len(available)
  if n > len(available):
    raise ValueError(
        f"num_devices={n} but only {len(available)} {available[0].platform} device(s) are "
        f"visible; on CPU run with XLA_FLAGS=--xla_force_host_platform_device_count={n} "
        f"(experiments.train sets this itself when started from the command line).")
  return jax.make_mesh((n,), ("data",), devices=available[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


# --- checkpoints -------------------------------------------------------------------------
def _checkpoint(state, elapsed: float) -> dict[str, Any]:
  """What a checkpoint holds: the train state and the training wall time so far."""
  return {"state": state, "elapsed": jnp.asarray(elapsed, jnp.float32)}


def _read_metrics(path: str, up_to_step: int) -> list[dict]:
  """Records of ``metrics.jsonl`` with ``step <= up_to_step`` (the file is then rewritten)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if r["step"] <= up_to_step]


def _rounded(record: dict) -> dict:
  """Floats to 6 significant digits: the JSONL stays small enough to commit."""
  return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in record.items()}


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(type(x))


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` (listing what is valid) for a bad config, before any work."""
  if config.dataset not in data_lib.DATASETS:
    raise ValueError(f"unknown dataset {config.dataset!r}; valid: "
                     f"{', '.join(data_lib.DATASETS)}")
  if config.model.name not in models_lib.MODELS:
    raise ValueError(f"unknown model {config.model.name!r}; valid: "
                     f"{', '.join(models_lib.MODELS)}")
  if (config.dataset == "stdlib_chars") != (config.model.name == "transformer"):
    raise ValueError("the transformer goes with the stdlib_chars dataset, the mlp and cnn "
                     f"with digits; got {config.model.name!r} on {config.dataset!r}")
  optimizers_lib.parse_lam(config.sam.lam)
  optimizers_lib.create_optimizer(config.optimizer, config.sam, schedule=config.schedule)
  for key in ("batch_size", "num_steps", "log_every", "eval_every"):
    if config[key] < 1:
      raise ValueError(f"{key} must be >= 1, got {config[key]}")


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
      eval_loss=make_eval_loss(model),
      loss_fn=make_loss_fn(model))


@functools.lru_cache(maxsize=8)
def _train_functions(model_json: str, context_length: int, num_classes: int,
                     optimizer_json: str, sam_json: str, schedule: str,
                     batches_per_epoch: int, total_steps: int) -> types.SimpleNamespace:
  """The optimizer and the jitted train step, shared by runs that differ only in seed."""
  model_fns = _model_functions(model_json, context_length, num_classes)
  tx = optimizers_lib.create_optimizer(
      ml_collections.ConfigDict(json.loads(optimizer_json)),
      ml_collections.ConfigDict(json.loads(sam_json)),
      batches_per_epoch=batches_per_epoch, total_steps=total_steps, schedule=schedule)
  step = training.make_train_step(model_fns.loss_fn, has_aux=True, has_state=True)
  return types.SimpleNamespace(tx=tx, train_step=jax.jit(step, donate_argnums=0))


# --- the run -----------------------------------------------------------------------------
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: data_lib.Dataset | None = None) -> dict[str, Any] | None:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoint) and evaluates it.

  Args:
    config: a train config (see ``configs/default.py``).
    workdir: output folder; an existing checkpoint there is resumed.
    dataset: the loaded dataset, to share it between the runs of a sweep.

  Returns:
    The summary written to ``summary.json``, or ``None`` when the run stopped at
    ``config.stop_after_steps`` (as if killed) before finishing.
  """
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  logging.info("process %d/%d, devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  dataset = dataset or data_lib.load(config)
  mesh = make_mesh(config.num_devices)
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by the "
                     f"{n_dev} devices")
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  batches = data_lib.BatchIterator(dataset, config.batch_size, config.seed,
                                   config.context_length)
  model_key = (config.model.to_json(), config.context_length, dataset.num_classes)
  model_fns = _model_functions(*model_key)
  train_fns = _train_functions(
      *model_key, config.optimizer.to_json(), config.sam.to_json(), config.schedule,
      # Only in the key where they change the optimizer (else: needless recompiles).
      batches.batches_per_pass if config.optimizer.name == "momsps_smooth" else 1,
      config.num_steps if config.schedule == "cosine" else 1)
  model, train_step, eval_fn = model_fns.model, train_fns.train_step, model_fns.eval_fn

  sample = batches.batch(0)["x"][:1]
  variables = model_fns.init(jax.random.key(config.seed), sample)
  params = variables.pop("params")
  state = training.TrainState.create(apply_fn=model.apply, params=params, tx=train_fns.tx,
                                     model_state=dict(variables))
  state = jax.device_put(state, replicated)

  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))

  checkpoints = os.path.join(os.path.abspath(workdir), "checkpoints")
  start, elapsed = 0, 0.0
  metrics_path = os.path.join(workdir, METRICS_FILE)
  try:
    restored = checkpoint_lib.restore_checkpoint(checkpoints, _checkpoint(state, 0.0))
  except FileNotFoundError:
    pass
  else:
    state = restored["state"]
    start, elapsed = int(state.step), float(restored["elapsed"])
    logging.info("resumed %s at step %d", workdir, start)
  records = _read_metrics(metrics_path, start)
  with open(metrics_path, "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")

  test_batches = data_lib.test_batches(dataset, config.eval_batch_size)
  log_file = open(metrics_path, "a")  # pylint: disable=consider-using-with
  window: list[dict] = []
  diverged = False
  bar = _progress_bar(config, start)
  t0 = time.perf_counter()
  try:
    for step in range(start, config.num_steps):
      if config.stop_after_steps and step >= config.stop_after_steps:
        log_file.close()
        bar.close()
        return None  # as if killed: no final checkpoint, no summary
      batch = jax.device_put(batches.batch(step), sharded)
      state, metrics = train_step(state, batch)
      window.append(metrics)
      done = step + 1
      if done % config.log_every == 0 or done == config.num_steps:
        host = jax.device_get(window)
        window = []
        record = {"step": done, "split": "train",
                  "loss": float(np.mean([m["loss"] for m in host])),
                  "accuracy": float(np.mean([m["aux"]["accuracy"] for m in host])),
                  "grad_norm": float(np.mean([m["grad_norm"] for m in host]))}
        if "step_size" in host[0]:
          record["step_size"] = float(np.mean([m["step_size"] for m in host]))
        elif (lr := _learning_rate(config, step)) is not None:
          record["step_size"] = lr
        record["time"] = elapsed + time.perf_counter() - t0
        log_file.write(json.dumps(_rounded(record)) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
        if not math.isfinite(record["loss"]):
          diverged = True
          logging.warning("loss is %s at step %d: stopping", record["loss"], done)
          break
      if done % config.eval_every == 0 and done != config.num_steps:
        ev = evaluate(eval_fn, state.params, state.model_state, test_batches)
        log_file.write(json.dumps(_rounded({"step": done, "split": "test", **ev})) + "\n")
      if config.checkpoint_every and done % config.checkpoint_every == 0:
        log_file.flush()
        checkpoint_lib.save_checkpoint(
            checkpoints, _checkpoint(state, elapsed + time.perf_counter() - t0), step=done,
            max_to_keep=1)
      bar.update(1)
  finally:
    bar.close()
  train_time = elapsed + time.perf_counter() - t0

  final_step = int(state.step)
  test = evaluate(eval_fn, state.params, state.model_state, test_batches)
  log_file.write(json.dumps(_rounded({"step": final_step, "split": "test", **test})) + "\n")
  log_file.close()
  train_batch = fixed_train_batch(dataset, config.train_eval_examples,
                                  config.context_length)
  train = evaluate(eval_fn, state.params, state.model_state, data_lib.batched(
      train_batch["x"], train_batch["y"], config.eval_batch_size))
  eigenvalue, iterations = float("nan"), 0
  if config.hessian.num_iterations and not diverged:
    probe = fixed_train_batch(dataset, config.hessian.batch_size, config.context_length)
    eigenvalue, iterations = hessian_lib.top_hessian_eigenvalue(
        model_fns.eval_loss, state.params, state.model_state, probe,
        num_iterations=config.hessian.num_iterations, tol=config.hessian.tol,
        seed=config.seed)
  summary = {
      "steps": final_step, "diverged": diverged,
      "test_loss": test["loss"], "test_accuracy": test["accuracy"],
      "test_perplexity": test["perplexity"],
      "train_loss": train["loss"], "train_accuracy": train["accuracy"],
      "hessian_top_eigenvalue": eigenvalue, "hessian_iterations": iterations,
      "train_time_s": train_time, "devices": n_dev,
      "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
      "data_fingerprint": dataset.fingerprint,
  }
  with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=1, default=_json_default)
  return summary


# --- command line ------------------------------------------------------------------------
def quiet_orbax() -> None:
  """Drop orbax's per-save INFO lines from the absl log (warnings still show)."""
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or "orbax" not in record.pathname)


def request_cpu_devices(num_devices: int) -> None:
  """Ask for ``num_devices`` host devices; must run before JAX initialises its backends."""
  if num_devices > 1:
    try:
      jax.config.update("jax_num_cpu_devices", num_devices)
    except RuntimeError:  # backends already initialised; make_mesh explains what to do
      pass


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join(tempfile.gettempdir(), "optaxplus", name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = cli.FLAGS.config
  quiet_orbax()
  request_cpu_devices(config.num_devices)
  workdir = cli.FLAGS.workdir or default_workdir(cli.FLAGS["config"].config_filename)
  try:
    validate(config)
  except ValueError as e:
    sys.exit(f"error: bad config: {e}")
  summary = train_and_evaluate(config, workdir)
  print(json.dumps(summary, indent=1, default=_json_default))
  print(f"outputs in {workdir}")


if __name__ == "__main__":
  cli.define_flags("Path to a config file (configs/<name>.py[:optimizer]).",
                   "Output folder (default: <tmp>/optaxplus/<config name>).")
  cli.run(main)
