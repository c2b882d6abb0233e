"""Run a suite: ``python -m experiments.sweep --config configs/<suite>.py [--workdir DIR]``.

A suite config is a train config plus a ``sweep`` block (see ``configs/default.py``): arms
(methods) x grid points (hyperparameters) x seeds. Every run trains in
``<workdir>/runs/<config>/seed<k>`` under the rules of :mod:`experiments.workdir`: a
finished run of the same config is reused, a killed one resumes from its checkpoint, and a
run of another config found there stops the sweep before anything is trained (listing
what differs) unless ``--overwrite``; so the report only ever holds runs of the configs the
suite lists. The workdir then gets ``summary.json`` (per config and seed: final metrics
and downsampled curves, see :func:`suite_summary`), and from it alone ``results.md`` and
the PNG plots (:mod:`experiments.report`). Raw per-step records stay in the runs' folders.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np

from experiments import checks
from experiments import cli
from experiments import data as data_lib
from experiments import optimizers as optimizers_lib
from experiments import report
from experiments import train as train_lib
from experiments import workdir as workdir_lib

ARM_KEYS = ("label", "optimizer", "sam", "overrides", "grid", "reference")
SUMMARY_FORMAT = "optaxplus-suite-summary/1"


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
  node[keys[-1]] = value


def _short(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def _arm_config(base: ml_collections.ConfigDict, arm: dict) -> ml_collections.ConfigDict:
  config = copy.deepcopy(base)
  if "optimizer" in arm:
    options = dict(arm["optimizer"])
    config.optimizer = optimizers_lib.default_config(options.pop("name"), **options)
  for key, value in dict(arm.get("sam", {})).items():
    set_path(config, f"sam.{key}", value)
  for key, value in dict(arm.get("overrides", {})).items():
    set_path(config, key, value)
  return config


def _check_references(sweep: ml_collections.ConfigDict) -> None:
  labels = [arm["label"] for arm in sweep.arms]
  named = {"sweep.reference": [sweep.reference] if sweep.reference else [],
           "sweep.untuned": list(sweep.untuned),
           "an arm's reference": [a["reference"] for a in sweep.arms if a.get("reference")]}
  for key, names in named.items():
    missing = [n for n in names if n not in labels]
    if missing:
      raise ValueError(f"{key} names {missing}, not arm labels; valid: "
                       f"{', '.join(sorted(labels))}")
  if sweep.metric not in report.METRICS:
    raise ValueError(f"sweep.metric must be one of {', '.join(report.METRICS)}, got "
                     f"{sweep.metric!r}.")


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
    arm_config = _arm_config(base, arm)
    grid = [(k, tuple(v)) for k, v in arm.get("grid", ())]
    if sweep.max_grid_points:
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
  _check_references(sweep)
  ids = [r.run_id for r in runs]
  if len(set(ids)) != len(ids):
    raise ValueError("two runs of the sweep have the same label; give arms distinct labels")
  return runs


def run_dir(workdir: str, run: Run) -> str:
  return os.path.join(workdir, "runs", run.run_id)


def check_workdir(workdir: str, runs: list[Run]) -> None:
  """Raises ``RunMismatchError`` if any run's folder holds a run of another config."""
  mismatched = {}
  for run in runs:
    try:
      workdir_lib.status(run_dir(workdir, run), run.config)
    except workdir_lib.RunMismatchError as e:
      mismatched[run.run_id] = str(e).splitlines()[1:-1]
  if mismatched:
    changes = sorted({line.strip() for lines in mismatched.values() for line in lines})
    raise workdir_lib.RunMismatchError("\n".join(
        [f"{workdir} holds {len(mismatched)} of this suite's {len(runs)} runs with "
         f"another config (e.g. runs/{next(iter(mismatched))}); what differs (old → new):"]
        + [f"  {line}" for line in changes[:workdir_lib.MAX_LISTED]]
        + ["Use another --workdir for this suite, or --overwrite to replace those runs."]))


def _downsample(records: list[dict], points: int) -> dict[str, list]:
  """At most ``points`` records (evenly spaced, the last kept) as columns."""
  if len(records) > points:
    keep = np.unique(np.linspace(0, len(records) - 1, points).round().astype(int))
    records = [records[i] for i in keep]
  keys = [k for k in records[0] if k != "split"] if records else []
  return {k: [r.get(k) for r in records] for k in keys}


def run_record(workdir: str, run: Run, points: int) -> dict:
  """A finished run's final metrics and downsampled curves, checked against its config."""
  folder = run_dir(workdir, run)
  summary = workdir_lib.read_json(os.path.join(folder, workdir_lib.SUMMARY_FILE))
  if summary.get("config_hash") != workdir_lib.config_hash(run.config):
    raise workdir_lib.RunMismatchError(f"{folder}/summary.json is not from this config.")
  records = train_lib.read_metrics(os.path.join(folder, workdir_lib.METRICS_FILE),
                                   summary["steps"])
  curves = {split: _downsample([r for r in records if r["split"] == split], points)
            for split in ("train",) + train_lib.EVAL_SPLITS}
  return {"seed": run.seed, "final": summary, "curves": curves}


def suite_summary(config: ml_collections.ConfigDict, workdir: str, runs: list[Run],
                  command: str, wall_time: float, trained: int) -> dict:
  """The suite's one machine-readable record, from which the report and plots are built.

  Per config (in sweep order): its arm, label, grid size and, per seed, the run's final
  metrics (``summary.json``, full precision) and curves of at most
  ``sweep.curve_points`` points per split.
  """
  configs: dict[str, dict] = {}
  for run in runs:
    entry = configs.setdefault(run.label, {
        "label": run.label, "arm": run.arm, "grid_size": run.grid_size,
        "config": workdir_lib.identity(run.config), "runs": []})
    entry["runs"].append(run_record(workdir, run, config.sweep.curve_points))
  for entry in configs.values():
    entry["config"].pop("seed")
  first = next(iter(configs.values()))["runs"][0]["final"]
  return {
      "format": SUMMARY_FORMAT, "command": command,
      "config": workdir_lib.identity(config), "sweep": config.sweep.to_dict(),
      "environment": {"device_kind": first["device_kind"], "devices": first["devices"],
                      "jax_version": first["jax_version"],
                      "python": platform.python_version(),
                      # Runs a suite reuses keep the code version they were trained with.
                      "code_versions": sorted({
                          str(run["final"].get("code_version") or "unrecorded")
                          for entry in configs.values() for run in entry["runs"]}),
                      "date": datetime.date.today().isoformat()},
      "sweep_wall_time_s": wall_time, "runs_trained": trained,
      "configs": list(configs.values()),
  }


class SweepInterrupted(Exception):
  """A stop request during run ``index`` (1-based) of ``total``."""

  def __init__(self, index: int, total: int, run: Run, step: int):
    super().__init__(f"interrupted at step {step} of run {index}/{total} ({run.label}, "
                     f"seed {run.seed}); run the same command again to resume")


def run_sweep(config: ml_collections.ConfigDict, workdir: str, command: str = "", *,
              overwrite: bool = False, stop=None) -> dict:
  """Runs (or continues) the sweep of ``config`` in ``workdir`` and writes the report.

  Args:
    config: a suite config.
    workdir: the suite's folder.
    command: the command line, quoted at the top of ``results.md``.
    overwrite: replace runs of other configs found in ``workdir`` (else refused).
    stop: a ``threading.Event``; once set, the sweep stops (see
      :func:`experiments.train.train_and_evaluate`).

  Returns:
    The suite summary (as written to ``summary.json``), or ``{}`` when a run stopped at
    ``stop_after_steps``.

  Raises:
    checks.ConfigError: a run's config is bad (before anything is trained).
    workdir_lib.RunMismatchError: ``workdir`` holds runs of other configs.
    SweepInterrupted: ``stop`` was set.
  """
  runs = expand(config)
  for run in runs:  # fail on a bad arm now, not after hours of the others
    checks.validate(run.config)
  if not overwrite:
    check_workdir(workdir, runs)
  os.makedirs(workdir, exist_ok=True)
  dataset = data_lib.load(runs[0].config)
  logging.info("sweep %s: %d runs in %s", config.sweep.name, len(runs), workdir)
  t0, trained = time.perf_counter(), 0
  for i, run in enumerate(runs):
    folder = run_dir(workdir, run)
    try:
      if workdir_lib.status(folder, run.config) == "finished":
        continue
    except workdir_lib.RunMismatchError:  # with overwrite (else refused above): replaced
      pass
    print(f"[{i + 1}/{len(runs)}] {run.label} seed={run.seed}", flush=True)
    try:
      summary = train_lib.train_and_evaluate(run.config, folder, dataset,
                                             overwrite=overwrite, stop=stop)
    except train_lib.Interrupted as e:
      raise SweepInterrupted(i + 1, len(runs), run, e.step) from None
    trained += 1
    if summary is None:  # stopped at stop_after_steps: leave the rest for the next call
      return {}
    if not config.sweep.keep_checkpoints:
      shutil.rmtree(os.path.join(folder, workdir_lib.CHECKPOINT_DIR), ignore_errors=True)
  summary = suite_summary(config, workdir, runs, command, time.perf_counter() - t0,
                          trained)
  workdir_lib.write_json(os.path.join(workdir, report.SUMMARY_FILE), summary, compact=True)
  report.write_all(summary, workdir)
  return workdir_lib.jsonable(summary)


def enable_compilation_cache() -> None:
  """Persistent XLA cache: the seeds of one grid point compile once."""
  path = os.path.join(tempfile.gettempdir(), "optaxplus", "jax_cache")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = cli.FLAGS.config
  cli.quiet_libraries()
  cli.request_cpu_devices(config.num_devices)
  enable_compilation_cache()
  workdir = cli.FLAGS.workdir or workdir_lib.default_sweep_workdir(config)
  command = shlex.join(["python", "-m", "experiments.sweep"] + sys.argv[1:])
  try:
    for run in expand(config):
      checks.validate(run.config)
  except (ValueError, KeyError) as e:  # ConfigError is a ValueError
    cli.exit_with_error(e)
  with cli.stop_on_signals() as stop:
    try:
      results = run_sweep(config, workdir, command, overwrite=cli.FLAGS.overwrite,
                          stop=stop)
    except (checks.ConfigError, workdir_lib.RunMismatchError) as e:
      cli.exit_with_error(e)
    except SweepInterrupted as e:
      cli.exit_interrupted(str(e))
  if results:
    print(report.chosen_table_text(results))
    print(f"\nfull results: {os.path.join(workdir, report.RESULTS_FILE)}")


if __name__ == "__main__":
  cli.define_flags("Path to a suite config file (a config with a `sweep` block).",
                   "Output folder (default: <tmp>/optaxplus/sweep/<suite name>).")
  flags.adopt_module_key_flags(cli)  # --help lists them
  cli.run(main)
