"""A few steps of every config: the loss goes down and every output exists and parses."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from experiments import cli, report, sweep, train
from experiments import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The arms each suite's smoke test trains: between them every optimizer and wrapper the
# suites use, at a few seconds of compilation each (every arm of every suite is also
# expanded and validated in test_experiments_config).
SUITES = {
    "default": ("momsps (defaults)", "sgd-momentum", "adam"),
    "no_tuning": ("momsps_smooth", "psps", "sania", "sgd-momentum constant", "momo"),
    "no_tuning_lm": ("momsps", "sps+heavy-ball (naive)"),
    "no_tuning_teacher": ("sps", "adam cosine"),
    "unified_sam": ("sgd-momentum (base)", "λ=1-1/t", "SAM every_k=2"),
    "large_batch": ("alto", "alto α=0 (no E)", "lamb", "adam batch 256"),
    "explore_small_batch": ("esgd", "eadam"),
    "large_batch_gpu": ("alto",),  # at batch 32 here (see test_suite)
    "no_tuning_gpu": ("momsps",),  # at batch 32 here (see test_suite)
}
SINGLE_RUNS = ("default", "digits_mlp", "stdlib_lm")


def _load(name, steps=12):
  config = cli.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  config.num_steps = steps
  config.log_every = 3
  config.eval_every = 6
  config.checkpoint_every = 0
  config.hessian.num_iterations = 0
  config.sweep.seeds = (0,)
  config.sweep.max_grid_points = 1
  return config


def _train_losses(records):
  return [r["loss"] for r in records if r["split"] == "train"]


def _assert_run_outputs(run_dir, config, probe=False):
  recorded = workdir_lib.read_json(os.path.join(run_dir, workdir_lib.CONFIG_FILE))
  assert recorded["config"]["optimizer"] == config.optimizer.to_dict()
  assert recorded["hash"] == workdir_lib.config_hash(config)
  with open(os.path.join(run_dir, workdir_lib.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  steps = [r["step"] for r in records if r["split"] == "train"]
  assert steps == list(range(3, config.num_steps + 1, 3))
  evals = sorted({*range(6, config.num_steps, 6), config.num_steps})
  for split in ("validation", "test"):
    assert [r["step"] for r in records if r["split"] == split] == evals
  losses = _train_losses(records)
  assert np.all(np.isfinite(losses))
  assert min(losses[1:]) < losses[0], f"loss did not go down: {losses}"
  summary = workdir_lib.read_json(os.path.join(run_dir, workdir_lib.SUMMARY_FILE))
  assert summary["steps"] == config.num_steps and not summary["diverged"]
  for split in ("validation", "test"):
    assert 0.0 <= summary[f"{split}_accuracy"] <= 1.0
    assert np.isfinite(summary[f"{split}_loss"])
  assert np.isfinite(summary["train_loss"])
  if probe:
    assert np.isfinite(summary["hessian_top_eigenvalue"]) and summary["hessian_iterations"]
    assert summary["hessian_probe"] == "on"
  else:
    assert summary["hessian_top_eigenvalue"] is None and summary["hessian_probe"] == "off"
  return records


@pytest.mark.parametrize("name", SINGLE_RUNS)
def test_single_run(name, tmp_path):
  config = _load(name)
  if name == "default":  # the default suite's first SGD point: its compiled step is reused
    config.optimizer.learning_rate, config.schedule = 0.03, "cosine"
  probe = config.dataset != "stdlib_chars"  # the LM's HVP compiles slowly; suites probe it
  config.hessian.num_iterations = 3 if probe else 0
  summary = train.train_and_evaluate(config, str(tmp_path))
  _assert_run_outputs(str(tmp_path), config, probe=probe)
  if config.dataset == "stdlib_chars":  # perplexity is exp of the per-character test loss
    np.testing.assert_allclose(summary["test_perplexity"], np.exp(summary["test_loss"]))


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite(name, tmp_path):
  config = _load(name)
  if name == "large_batch":  # the batch-256 arm's overrides: its length too
    for arm in config.sweep.arms:
      arm.get("overrides", {}).update(num_steps=12, log_every=3, eval_every=6,
                                      checkpoint_every=0)
  if name.endswith("_gpu"):  # sized for an accelerator; the code path is the same
    config.batch_size, config.num_devices = 32, 1
  config.sweep.arms = [arm for arm in config.sweep.arms if arm["label"] in SUITES[name]]
  assert len(config.sweep.arms) == len(SUITES[name])
  if config.sweep.reference not in SUITES[name]:
    config.sweep.reference = ""
  for arm in config.sweep.arms:
    if arm.get("reference") and arm["reference"] not in SUITES[name]:
      arm["reference"] = ""
  config.sweep.untuned = tuple(a for a in config.sweep.untuned if a in SUITES[name])
  if name == "default":
    config.hessian.num_iterations = 3
  workdir = str(tmp_path)
  results = sweep.run_sweep(config, workdir, command=f"python -m experiments.sweep {name}")
  runs = sweep.expand(config)
  assert [c["label"] for c in results["configs"]] == list(dict.fromkeys(
      r.label for r in runs))
  for run in runs:
    _assert_run_outputs(sweep.run_dir(workdir, run), run.config, probe=name == "default")
    # Checkpoints of finished runs are removed.
    assert not os.path.exists(os.path.join(sweep.run_dir(workdir, run), "checkpoints"))

  with open(os.path.join(workdir, report.RESULTS_FILE)) as f:
    text = f.read()
  assert text.splitlines()[3] == f"python -m experiments.sweep {name}"
  for arm in SUITES[name]:
    assert f"| {arm} | " in text
  assert "top Hessian eig." in text and "wall time / run (s)" in text
  assert "selected on validation, reported on test" in text
  summary = workdir_lib.read_json(os.path.join(workdir, report.SUMMARY_FILE))
  assert summary == results
  for png in report.PLOTS:
    image = matplotlib.image.imread(os.path.join(workdir, png))
    assert image.ndim == 3 and image.shape[0] > 100
