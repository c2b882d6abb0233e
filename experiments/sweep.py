"""Run a suite: ``python -m experiments.sweep --config configs/<suite>.py [--workdir DIR]``.

A suite config is a train config plus a ``sweep`` block (see ``configs/default.py``): arms
(methods) x grid points (hyperparameters) x seeds. Every run trains in
``<workdir>/runs/<config>/seed<k>``; a finished run (one with ``summary.json``) is not run
again, so a killed sweep started again continues where it stopped, and a killed run
resumes from its checkpoint. The folder then gets ``results.md`` (with the exact command),
``summary.json`` and PNG plots; each run's raw records stay in its ``metrics.jsonl``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import re
import shlex
import shutil
import sys
import tempfile
import time

from absl import app, logging
import jax
import ml_collections

from experiments import cli
from experiments import data as data_lib
from experiments import optimizers as optimizers_lib
from experiments import plots
from experiments import report
from experiments import train as train_lib

ARM_KEYS = ("label", "optimizer", "sam", "overrides", "grid")


@dataclasses.dataclass
class Run:
  """One training run of a sweep."""
  arm: str  # the arm's label, e.g. 'sgd-momentum'
  label: str  # arm plus grid point, e.g. 'sgd-momentum learning_rate=0.1'
  seed: int
  config: ml_collections.ConfigDict
  grid_size: int  # number of grid points of its arm

  @property
  def run_id(self) -> str:
    return f"{slug(self.label)}/seed{self.seed}"


def slug(text: str) -> str:
  text = text.replace("λ", "lam").replace("ρ", "rho")
  return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")


def set_path(config: ml_collections.ConfigDict, path: str, value) -> None:
  """``config[a][b] = value`` for ``path='a.b'``; an unknown key lists the valid ones."""
  keys = path.split(".")
  node = config
  for i, key in enumerate(keys):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = ".".join(keys[:i]) or "the config"
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise KeyError(f"sweep key {path!r}: {where} has no key {key!r}; valid: "
                     f"{', '.join(valid)}")
    if i < len(keys) - 1:
      node = node[key]
  leaf = keys[-1]
  node[leaf] = value


def _short(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def expand(config: ml_collections.ConfigDict) -> list[Run]:
  """The runs of ``config.sweep``: each arm applied to the base config, grid x seeds."""
  if "sweep" not in config:
    raise ValueError("this config has no `sweep` block; train it with experiments.train, "
                     "or use a suite config (e.g. configs/default.py)")
  sweep = config.sweep
  base = copy.deepcopy(config)
  with base.unlocked():
    del base["sweep"]
  runs = []
  for arm in sweep.arms:
    unknown = set(arm) - set(ARM_KEYS)
    if unknown or "label" not in arm:
      raise ValueError(f"bad sweep arm {arm}: keys are {ARM_KEYS} (label required)")
    arm_config = copy.deepcopy(base)
    if "optimizer" in arm:
      options = dict(arm["optimizer"])
      arm_config.optimizer = optimizers_lib.default_config(options.pop("name"), **options)
    for key, value in dict(arm.get("sam", {})).items():
      set_path(arm_config, f"sam.{key}", value)
    for key, value in dict(arm.get("overrides", {})).items():
      set_path(arm_config, key, value)
    grid = [(k, tuple(v)) for k, v in arm.get("grid", ())]
    if sweep.get("max_grid_points", 0):
      grid = [(k, v[:sweep.max_grid_points]) for k, v in grid]
    points = list(itertools.product(*[values for _, values in grid]))
    for point in points:
      point_config = copy.deepcopy(arm_config)
      for (key, _), value in zip(grid, point):
        set_path(point_config, key, value)
      label = " ".join([arm["label"]] + [f"{k.split('.')[-1]}={_short(v)}"
                                         for (k, _), v in zip(grid, point)])
      for seed in sweep.seeds:
        run_config = copy.deepcopy(point_config)
        run_config.seed = seed
        runs.append(Run(arm["label"], label, seed, run_config, len(points)))
  arm_labels = {arm["label"] for arm in sweep.arms}
  for key in ("reference", "untuned"):
    names = sweep.get(key, "")
    names = (names,) if isinstance(names, str) else names
    missing = [n for n in names if n and n not in arm_labels]
    if missing:
      raise ValueError(f"sweep.{key} names {missing}, not arm labels; valid: "
                       f"{', '.join(sorted(arm_labels))}")
  labels = [r.run_id for r in runs]
  if len(set(labels)) != len(labels):
    raise ValueError("two runs of the sweep have the same label; give arms distinct labels")
  return runs


def run_sweep(config: ml_collections.ConfigDict, workdir: str,
              command: str = "") -> dict:
  """Runs (or continues) the sweep of ``config`` in ``workdir`` and writes the report.

  Returns:
    The aggregated results (as written to ``summary.json``).
  """
  runs = expand(config)
  for run in runs:  # fail on a bad arm now, not after hours of the others
    train_lib.validate(run.config)
  os.makedirs(workdir, exist_ok=True)
  dataset = data_lib.load(runs[0].config)
  logging.info("sweep %s: %d runs in %s", config.sweep.name, len(runs), workdir)
  t0 = time.perf_counter()
  trained = 0
  for i, run in enumerate(runs):
    run_dir = os.path.join(workdir, "runs", run.run_id)
    if os.path.exists(os.path.join(run_dir, train_lib.SUMMARY_FILE)):
      continue
    print(f"[{i + 1}/{len(runs)}] {run.label} seed={run.seed}", flush=True)
    summary = train_lib.train_and_evaluate(run.config, run_dir, dataset)
    trained += 1
    if summary is None:  # stopped at stop_after_steps: leave the rest for the next call
      return {}
    if not config.sweep.get("keep_checkpoints", False):
      shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
  results = report.collect(workdir, runs)
  results["sweep_wall_time_s"] = time.perf_counter() - t0
  results["runs_trained"] = trained
  report.write(workdir, config, runs, results, command)
  plots.write_all(workdir, config, results)
  return results


def enable_compilation_cache() -> None:
  """Persistent XLA cache: the seeds of one grid point compile once."""
  path = os.path.join(tempfile.gettempdir(), "optaxplus", "jax_cache")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = cli.FLAGS.config
  train_lib.quiet_orbax()
  train_lib.request_cpu_devices(config.num_devices)
  enable_compilation_cache()
  workdir = cli.FLAGS.workdir or os.path.join(tempfile.gettempdir(), "optaxplus",
                                           config.sweep.name)
  command = shlex.join(["python", "-m", "experiments.sweep"] + sys.argv[1:])
  try:
    for run in expand(config):
      train_lib.validate(run.config)
  except (ValueError, KeyError) as e:
    sys.exit(f"error: bad suite config: {e}")
  results = run_sweep(config, workdir, command)
  if results:
    with open(os.path.join(workdir, "results.md")) as f:
      text = f.read()
    best = text[text.index("## Best config of each arm"):].split("\n\n")[:2]
    print("\n\n".join(best))
    print(f"\nfull results: {os.path.join(workdir, 'results.md')}")


if __name__ == "__main__":
  cli.define_flags("Path to a suite config file (configs/<suite>.py).",
                   "Output folder (default: <tmp>/optaxplus/<suite name>).")
  cli.run(main)
